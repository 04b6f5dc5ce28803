# One request crossing two instrumented services (W3C trace context over HTTP), checked through its spans:
# ancestry across services, windows that span containers (clock skew tolerated), gap ranges, duration
# windows, counts, attributes and status, and what an error looks like in a trace.
import "std/redis"

suite "a request across services" {
  seed 7
  settle 300ms

  service cache = redis()
  service backend {
    image "crc/demo:dev"
    env { REDIS_URL: "redis://cache:6379" }
    port 8080
    needs cache
    ready span "startup" within 30s
  }
  service front {
    image "crc/demo:dev"
    env { DOWNSTREAM: "http://backend:8080" }
    port 8080
    needs backend
    ready span "startup" within 30s
  }

  test "a call reaches the backend and its store" {
    step call = exec front ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/call?sku=7'); r = c.getresponse(); print(r.status, r.read().decode())"]
    expect call.stdout ~ /^200 .*"status": "called"/

    span entry = "GET /call" { service "front" kind server }
    span out = "GET downstream" { service "front" kind client parent entry }
    span handled = "GET /orders" { service "backend" kind server parent out }
    span store = "redis *" { service "backend" ancestor entry }
    span set = "redis SET" { ancestor entry }
    span get = "redis GET" { ancestor entry }
    span validate = "validate" { parent handled }

    expect entry parent of out
    expect out parent of handled
    expect entry contains handled
    expect out contains get
    expect handled contains set
    expect set before get gap 0ms..1s
    expect set after validate within 1s
    expect count(store) == 2
    expect count("GET /orders") == 1
    expect out.attr["server.address"] == "backend"
    expect out.attr["http.response.status_code"] == 200
    expect handled.attr["url.query"] == "sku=7"
    expect store.attr["db.system"] == "redis"
    expect entry.status != error
    expect no span { status error }
    expect hermetic
  }

  test "slow work lasts as long as asked" {
    step slow = exec backend ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/slow?ms=120'); r = c.getresponse(); print(r.status, r.read().decode())"]
    expect slow.stdout ~ /^200 /

    span request = "GET /slow" { kind server }
    span work = "work" { parent request attr "work.ms" == 120 }

    expect work.duration >= 120ms
    expect work.duration < 5s
    expect request.duration >= 120ms
    expect request contains work
    expect count(work) == 1
    expect work.attr["work.ms"] > 100
  }

  test "a failing request is an error span" {
    step fail = exec backend ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080); c.request('GET', '/fail'); r = c.getresponse(); print(r.status, r.read().decode())"]
    expect fail.stdout ~ /^500 .*demo failure/

    span failed = "GET /fail" { service "backend" }

    expect failed.status == error
    expect failed.attr["http.response.status_code"] == 500
    expect failed.attr["error.type"] == "DemoFailure"
    expect count({ status error }) == 1
    expect count("redis *") == 0
  }
}
