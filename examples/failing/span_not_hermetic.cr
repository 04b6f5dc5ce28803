# Fails on purpose: the service makes an outgoing call to a host outside the suite (a CLIENT span whose
# server.address / url.full name example.com), so `expect hermetic` fails and names the span and the host.
# The demo's /external endpoint only records the span; nothing leaves the machine.
# fails: "calling an outside host is not hermetic"
suite "hermeticity" {
  service api {
    image "crc/demo:dev"
    port 8080
    ready span "startup" within 30s
  }

  test "calling an outside host is not hermetic" {
    step call = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/external?host=example.com'); r = c.getresponse(); print(r.status, r.read().decode())"]
    expect call.stdout ~ /^200 .*"pretended"/

    span out = "GET external" { kind client }
    expect out.attr["server.address"] == "example.com"
    expect hermetic
  }

  test "calling loopback or an allowed host is hermetic" {
    step local = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/external?host=127.0.0.1&port=9'); print(c.getresponse().status)"]
    step mock = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/external?host=payments.test'); print(c.getresponse().status)"]
    expect local.stdout == "200\n"
    expect mock.stdout == "200\n"

    span out = "GET external" { kind client }
    expect count(out) == 2
    expect hermetic allow "payments.test"
  }
}
