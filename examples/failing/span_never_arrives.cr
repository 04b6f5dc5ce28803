# Fails on purpose: the test expects a span the service never emits ("redis DEL": the demo only SETs and
# GETs). crc waits for it until the span timeout (crc run --span-timeout, 20 s by default), then says which
# selector is still missing, how long it waited and which span names did arrive.
# fails: "a span that never arrives"
import "std/redis"

suite "missing spans" {
  settle 300ms

  service cache = redis()
  service api {
    image "crc/demo:dev"
    env { REDIS_URL: "redis://cache:6379" }
    port 8080
    needs cache
    ready span "startup" within 30s
  }

  test "a span that never arrives" {
    step order = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/orders?sku=4'); print(c.getresponse().status)"]
    expect order.stdout == "200\n"

    span request = "GET /orders" { kind server }
    span cleanup = "redis DEL" { parent request }
    expect request contains cleanup
  }
}
