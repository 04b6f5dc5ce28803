# Several services whose start-up order comes from `needs`, a one-off container on the suite network,
# captures feeding later steps, and seeded fake data.
import "std/redis"
import "std/httpd"

suite "shop" {
  seed 42
  clock "2025-01-01T00:00:00Z"
  timeout 2m

  let customer = "{{ fake.name() }}"
  let order_id = "{{ uuid() }}"

  service cache = redis()
  service web = httpd(root = "/srv") {
    command sh "mkdir -p /srv && echo '{\"status\":\"up\",\"items\":[{\"id\":1}]}' > /srv/status.json && exec httpd -f -p 8080 -h /srv"
  }
  service worker {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo worker started; exec sleep 3600"]
    needs cache, web
    ready log "worker started" within 10s
  }

  test "orders are stored" {
    step put = exec cache ["redis-cli", "SET", "order:{{ order_id }}", customer]
    expect put.stdout == "OK\n"

    step read = exec cache ["redis-cli", "GET", "order:{{ order_id }}"]
    expect read.stdout contains customer
    capture stored = read.stdout ~ /^(.*)$/m

    step echo = exec worker ["echo", "{{ stored }}"]
    expect echo.stdout == "{{ customer }}\n"
  }

  test "services reach each other by name" {
    step status = run "crc/busybox:dev" ["wget", "-qO-", "http://web:8080/status.json"] timeout 10s
    expect status.json("$.status") == "up"
    expect status.json("$.items[0].id") == 1
    capture state = status.json("$.status")

    step ping = exec worker ["sh", "-c", "echo {{ state }}"]
    expect ping.stdout == "up\n"
  }
}
