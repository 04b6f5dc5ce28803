# The smallest useful suite: one service, a few steps, expectations on their results.
suite "hello" {
  seed 7

  service web {
    image "crc/busybox:dev"
    # busybox httpd serving a page we write at start-up
    command sh "mkdir -p /www && echo 'hello from crc' > /www/index.html && exec httpd -f -p 8080 -h /www"
    port 8080
    ready tcp 8080 within 10s
  }

  test "the page is served" {
    step get = exec web ["wget", "-qO-", "http://127.0.0.1:8080/"]
    expect get.exit == 0
    expect get.stdout contains "hello from crc"
    expect get.stdout ~ /^hello/

    step missing = exec web "wget -qO- http://127.0.0.1:8080/nope"
    expect missing.exit != 0
    expect missing.stderr contains "404"
  }

  test "argv is passed as argv" {
    step echo = exec web ["echo", "two words", "$HOME"]
    expect echo.stdout == "two words $HOME\n"

    step shell = exec web sh "echo $((6 * 7))"
    expect shell.stdout == "42\n"
  }
}
