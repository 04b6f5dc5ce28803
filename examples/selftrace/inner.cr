# The suite the inner crc runs in crc_traces_itself.cr (it also passes on its own). Readiness is by exec
# and log: crc inside a container has no route to the suite network for tcp/http probes.
suite "shop" {
  service cache {
    image "crc/python:dev"
    command ["redis-server", "--save", "", "--appendonly", "no"]
    ready exec ["redis-cli", "ping"] within 20s
  }
  service worker {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo worker started; exec sleep 3600"]
    needs cache
    ready log "worker started" within 10s
  }

  test "orders are stored" {
    step put = exec cache ["redis-cli", "SET", "order:1", "42"]
    expect put.stdout == "OK\n"
    step read after put = exec cache ["redis-cli", "GET", "order:1"]
    expect read.stdout == "42\n"
  }
}
