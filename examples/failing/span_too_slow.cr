# Fails on purpose: duration windows and statuses that real spans do not meet. /slow?ms=300 holds a "work"
# span for 300 ms, more than the 100 ms allowed; /fail answers 500 and its server span has status error.
# fails: "work is slower than allowed", "no request fails"
suite "timing and status" {
  service api {
    image "crc/demo:dev"
    port 8080
    ready span "startup" within 30s
  }

  test "work is slower than allowed" {
    step slow = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/slow?ms=300'); print(c.getresponse().status)"]
    expect slow.stdout == "200\n"

    span work = "work"
    expect work.duration >= 10ms
    expect work.duration < 100ms
  }

  test "no request fails" {
    step fail = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/fail'); print(c.getresponse().status)"]
    expect fail.stdout == "500\n"

    span request = "GET /fail" { kind server }
    expect request.status != error
    expect no span { status error }
  }
}
