"""https in http steps, against a suite service serving TLS with a certificate this test makes (its own CA):
verified against the step's `tls ca` file, refused when nothing trusts it, skipped with `tls insecure`."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dockerutil import crc_resources, docker_engine, run_json  # noqa: F401

pytestmark = [pytest.mark.docker]

SERVER = '''import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"secure": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tls/api.pem", "/tls/api.key")
s = http.server.HTTPServer(("", 8443), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
'''

SOURCE = """
suite "tls {tag}" {{
  service api {{
    image "crc/python:dev"
    volume "./tls" -> "/tls" ro
    command ["python3", "/tls/serve.py"]
    port 8443
    ready tcp 8443 within 30s
  }}
  test "trusted" {{
    step r = http GET "https://api:8443/" tls ca "tls/ca.pem"
    expect r.json("$.secure") == true
  }}
  test "insecure" {{
    step r = http GET "https://api:8443/" tls insecure
    expect r.status == 200
  }}
  test "untrusted" {{
    step r = http GET "https://api:8443/"
  }}
  test "another ca" {{
    step r = http GET "https://api:8443/" tls ca "tls/other.pem"
  }}
}}
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> None:
    """A CA, a certificate it signs for the host `api`, and a second CA that signed nothing."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other"):
        _openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN=crc test {ca}", cwd=d)
    _openssl("req", *key, "-keyout", "api.key", "-out", "api.csr", "-subj", "/CN=api", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:api\n", encoding="utf-8")
    _openssl("x509", "-req", "-in", "api.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "api.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


@pytest.fixture
def tag(docker_engine: None) -> Any:  # noqa: F811
    t = "s" + secrets.token_hex(4)
    yield t
    assert not crc_resources(t), "crc left resources behind"


def test_https_is_verified_against_the_steps_ca(tmp_path: Path, tag: str) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    make_certificates(tls)
    (tls / "serve.py").write_text(SERVER, encoding="utf-8")
    src = tmp_path / "tls.cr"
    src.write_text(SOURCE.format(tag=tag), encoding="utf-8")
    proc, rep = run_json(src)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {t["name"]: t["status"] for t in rep["tests"]} == {
        "trusted": "passed", "insecure": "passed", "untrusted": "failed", "another ca": "failed"}, proc.stdout
    failures = {t["name"]: t["failures"][0].split(": ", 1)[1] for t in rep["tests"] if t["failures"]}
    assert failures["untrusted"].startswith("step `r`: the certificate of api:8443 is not trusted ("), failures
    assert failures["untrusted"].endswith('trust the CA that signed it with `tls ca "FILE"`, or skip verification '
                                          "with `tls insecure`"), failures
    assert failures["another ca"].startswith("step `r`: the certificate of api:8443 is not trusted ("), failures
    assert f"checked against the CA file {tls / 'other.pem'}" in failures["another ca"], failures
