# The orders example with the service exporting over OTLP/gRPC instead of OTLP/HTTP: crc injects its gRPC
# endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) when a service sets OTEL_EXPORTER_OTLP_PROTOCOL to "grpc", and the
# same expectations hold whichever transport carried the spans.
import "std/redis"

suite "orders emit the right spans over gRPC" {
  seed 1
  settle 300ms

  service cache = redis()
  service api {
    image "crc/demo:dev"
    env { REDIS_URL: "redis://cache:6379", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }
    port 8080
    needs cache
    ready span "startup" within 30s
  }

  test "an order is placed" {
    step order = exec api ["python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/orders?sku=42').read().decode())"]
    expect order.stdout contains "\"status\": \"created\""

    span request = "GET /orders" { service "api" kind server }
    span validate = "validate" { parent request }
    span set = "redis SET" { parent request kind client }
    span get = "redis GET" { parent request }

    expect request.duration < 5s
    expect request.status != error
    expect request.attr["http.response.status_code"] == 200
    expect validate.duration >= 4ms
    expect validate before set
    expect set before get within 1s
    expect request contains get
    expect request parent of validate
    expect count("redis *") == 2
    expect no span { status error }
    expect hermetic
  }
}
