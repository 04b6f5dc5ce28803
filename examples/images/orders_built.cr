# A service built from its Dockerfile (cached by the context's digest), with CPU and memory limits, and a
# volatile order id masked so `crc run --repeat 3 examples/images` reports the run as not flaky.
suite "built service" {
  mask json "$.id"

  service orders {
    build "./app" { args { GREETING: "bonjour" } network "none" }
    cpus 0.5
    memory 128MiB
    ready http 8080 "/healthz" within 30s
  }

  test "an order is created" {
    step order = exec orders ["python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/orders').read().decode())"]
    expect order.json("$.status") == "created"
    expect order.json("$.greeting") == "bonjour"
  }
}
