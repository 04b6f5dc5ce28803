# An HTTP API that queues jobs in Redis and a worker that does them later. crc calls the API itself, polls
# the job's status with `eventually`, and finds the worker's span in the trace crc started for the request
# that queued the job (the API stores the trace context with the job; the worker continues it).
import "std/redis"

template jobs(role) {
  image "crc/demo:dev"
  command ["python3", "/app/jobs.py", role]
  volume "jobs.py" -> "/app/jobs.py" ro
  env { REDIS_URL: "redis://cache:6379" }
  needs cache
}

suite "jobs" {
  settle 200ms

  service cache = redis()
  service api = jobs("api") {
    ready http 8080 "/healthz" within 30s
  }
  service worker = jobs("worker") {
    ready log "worker started" within 30s
  }

  test "a job is done eventually" uses worker {
    step submit = http POST "http://api:8080/jobs" json { task: "resize" }
    expect submit.status == 202
    capture id = submit.json("$.id")

    step state = http GET "http://api:8080/jobs?id={{ id }}"
    expect state.json("$.status") == "done" eventually within 20s every 100ms

    span accepted = "POST /jobs" { in submit kind server attr "job.id" == id }
    span processed = "process job" { in submit kind consumer attr "job.id" == id }
    # Not `accepted before processed`: the API queues the job inside its request span, so the worker may
    # begin before that span ends. What holds is the causal link: the worker's span continues the request's.
    expect accepted parent of processed
    expect processed.duration >= 400ms
  }
}
