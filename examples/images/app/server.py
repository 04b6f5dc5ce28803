"""A tiny order service: every order it creates gets a fresh random id (the example masks it)."""

import json
import os
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        else:
            body = json.dumps({"id": str(uuid.uuid4()), "status": "created",
                               "greeting": os.environ.get("GREETING", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print("request", self.path, flush=True)


print("listening on 8080", flush=True)
HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
