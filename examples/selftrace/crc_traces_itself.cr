# crc tests crc: an inner crc (the crc/crc:dev image, talking to the same Docker engine through its
# socket) runs inner.cr (next to this file) and exports its own trace (--otel-exporter otlp) to this suite's
# receiver, found through the OTEL_EXPORTER_OTLP_ENDPOINT that crc injects into every service. The span
# expectations below assert the shape of that trace.
suite "crc traces itself" {
  service crc {
    image "crc/crc:dev"
    command ["sleep", "3600"]
    volume "/var/run/docker.sock" -> "/var/run/docker.sock"
    volume "inner.cr" -> "/examples/inner.cr" ro
    allow host "docker-socket"  # the inner crc drives the host's engine
  }

  test "an inner run exports run, suite, test, service, step and check spans" {
    step inner = exec crc [
      "python3",
      "-m",
      "crc",
      "run",
      "/examples/inner.cr",
      "--no-progress",
      "--pull",
      "never",
      "--otel-exporter",
      "otlp",
    ]
    expect inner.stdout contains "1 passed, 0 failed"

    span run = "crc run" { service "crc" }
    span suite = "suite shop" { parent run }
    span test = "test orders are stored" { parent suite }
    span cache = "service cache" { parent suite attr "crc.status" == "passed" }
    span worker = "service worker" { parent suite }
    # A step's span roots the trace crc started for the step (its spans' parent), linked to its test.
    span put = "step put" { service "crc" }
    span read = "step read" { service "crc" }
    span checks = /^check / { ancestor suite }

    expect run.status == ok
    expect count(suite) == 1
    expect count("service *") == 2
    expect cache before worker
    expect cache before put
    expect put before read
    expect suite contains read
    expect run contains suite
    expect test contains read
    expect checks.attr["crc.status"] == "passed"
    expect no span { status error }
  }
}
