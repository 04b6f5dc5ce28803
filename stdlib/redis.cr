# Redis, ready once `redis-cli ping` answers. Image: crc/python:dev (Debian's redis-server).
#   import "std/redis"
#   service cache = redis()
template redis(port = 6379, image = "crc/python:dev") {
  image image
  command ["redis-server", "--port", "{{ port }}", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
  port port
  ready exec ["redis-cli", "-p", "{{ port }}", "ping"] within 20s
}
