# Fails on purpose: the expectations get the order and the nesting of real spans wrong. The demo stores an
# order in Redis (SET) and then reads it back (GET), both directly under the request span, after validating
# it for ~5 ms; the report shows each offending span with its time and the nearest span on the other side.
# (The orderings here are milliseconds apart on purpose: spans less than the 1 ms clock-skew tolerance apart
# count as ordered either way.)
# fails: "reading before validating", "a wrong parent", "a gap that is too long"
import "std/redis"

suite "span order and nesting" {
  settle 300ms

  service cache = redis()
  service api {
    image "crc/demo:dev"
    env { REDIS_URL: "redis://cache:6379" }
    port 8080
    needs cache
    ready span "startup" within 30s
  }

  test "reading before validating" {
    step order = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/orders?sku=1'); print(c.getresponse().status)"]
    expect order.stdout == "200\n"

    span validate = "validate"
    span get = "redis GET"
    expect get before validate
  }

  test "a wrong parent" {
    step order = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/orders?sku=2'); print(c.getresponse().status)"]
    expect order.stdout == "200\n"

    span validate = "validate"
    span set = "redis SET"
    expect validate parent of set
  }

  test "a gap that is too long" {
    step order = exec api ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/orders?sku=3'); print(c.getresponse().status)"]
    expect order.stdout == "200\n"

    span validate = "validate"
    span get = "redis GET"
    expect validate before get gap 1s..5s
  }
}
