# fails: "the wrong port is refused"
# A request to a port nothing listens on: the step fails saying so ("connection refused by api:9090").
suite "http refused" {
  service api {
    image "crc/demo:dev"
    ready http 8080 "/healthz" within 30s
  }

  test "the wrong port is refused" {
    step get = http GET "http://api:9090/orders" timeout 5s
    expect get.status == 200
  }
}
