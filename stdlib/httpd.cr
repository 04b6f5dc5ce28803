# A static HTTP server (busybox httpd) serving `root`, ready once its port accepts connections.
#   import "std/httpd"
#   service web = httpd(root = "/srv")
template httpd(port = 8080, root = "/www", image = "crc/busybox:dev") {
  image image
  command ["httpd", "-f", "-v", "-p", "{{ port }}", "-h", "{{ root }}"]
  port port
  ready tcp port within 10s
}
