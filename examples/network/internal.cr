# A suite on an internal network: its containers reach each other and crc's receiver, and nothing else (no
# default route; a connection anywhere outside the network fails at once, without a packet leaving). The
# service's OpenTelemetry SDK still exports its spans to crc, which checks them as usual.
suite "sealed" {
  network internal

  service api {
    image "crc/demo:dev"
    port 8080
    ready span "startup" within 30s
  }

  service web {
    image "crc/busybox:dev"
    command sh "mkdir -p /www && echo 'inside' > /www/index.html && exec httpd -f -p 8080 -h /www"
    port 8080
    ready tcp 8080 within 10s
  }

  test "no route leaves the network" {
    step routes = exec api ["cat", "/proc/net/route"]
    # /proc/net/route has no line whose destination is 0.0.0.0: no default route.
    expect routes.stdout !~ /\n\S+\s+00000000\s/
    step neighbour = exec api ["python3", "-c", "import urllib.request as u; print(u.urlopen('http://web:8080/').read().decode())"]
    expect neighbour.stdout == "inside\n\n"
  }

  test "spans still arrive" {
    step order = exec api ["python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/orders?sku=7').status)"]
    expect order.stdout == "200\n"

    span handled = "GET /orders" { service "api" kind server }
    expect count(handled) == 1
    expect handled.status != error
    expect hermetic
  }
}
