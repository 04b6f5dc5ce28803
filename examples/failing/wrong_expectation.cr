# Fails on purpose: the expectation is wrong, and crc says how (expected vs actual, with a diff).
# fails: "a wrong expectation"
suite "fails on purpose" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }

  test "a wrong expectation" {
    step greet = exec box ["echo", "hello, world"]
    expect greet.stdout == "hello, there\n"
    expect greet.exit == 0
  }
}
