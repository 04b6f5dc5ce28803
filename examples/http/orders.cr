# crc itself calls the service over HTTP (no client container), and finds the spans the service emitted
# in the trace crc started for each request: such a test need not run alone.
import "std/redis"

suite "orders over http" {
  settle 200ms

  service cache = redis()
  service api {
    image "crc/demo:dev"
    env { REDIS_URL: "redis://cache:6379" }
    port 8080
    needs cache
    ready http 8080 "/healthz" within 30s
  }

  test "an order is placed and read back" {
    step place = http POST "http://api:8080/orders?sku=42" json { note: "gift" } timeout 5s
    expect place.status == 200
    expect place.headers["Content-Type"] == "application/json"
    expect place.json("$.status") == "created"
    expect place.json("$.sku") == 42
    capture id = place.json("$.id")

    span request = "POST /orders" { in place kind server }
    span stored = "redis SET" { parent request }
    expect request.attr["http.response.status_code"] == 200
    expect request contains stored
  }

  test "an unknown path is a 404" {
    step nope = http GET "http://api:8080/nope" headers { Accept: "application/json" }
    expect nope.status == 404
    expect nope.json("$.error") contains "no such path"
    span request = "GET /nope" { in nope }
    expect count(request) == 1
  }
}
