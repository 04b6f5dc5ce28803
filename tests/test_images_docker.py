"""Images from source and from a registry, and resource limits, on the real engine.

The registry is Debian's `docker-registry` on 127.0.0.1 with htpasswd auth (the engine treats loopback
registries as insecure-allowed, so plain HTTP works and nothing leaves the machine)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerutil import crc, crc_resources, docker_engine, remove_resources, run_json  # noqa: F401

pytestmark = [pytest.mark.docker]


@pytest.fixture
def clean(docker_engine: None, tmp_path: Path) -> Iterator[Path]:  # noqa: F811
    yield tmp_path
    left = crc_resources("img-")
    remove_resources(left)
    assert not left, f"crc left resources behind: {left}"


def _image_ids(repo: str) -> list[str]:
    out = subprocess.run(["docker", "images", "-q", repo], capture_output=True, text=True).stdout
    return out.split()


def _rmi(*refs: str) -> None:
    subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True)


APP = """suite "img-build" {
  service imgtest-api {
    build "./app" { target "prod" args { VERSION: "1.2" } network "none" }
    cpus 0.5
    memory 64MiB
  }
  test "built with its args and target" {
    step v = exec imgtest-api ["cat", "/version", "/stage"]
    expect v.stdout contains "version 1.2"
    expect v.stdout contains "prod"
    step ignored = exec imgtest-api ["sh", "-c", "ls /ctx"]
    expect ignored.stdout == "Dockerfile\\nkeep.txt\\n"
  }
}
"""

DOCKERFILE = """FROM crc/busybox:dev AS base
ARG VERSION=0
RUN echo "version $VERSION" > /version
COPY . /ctx
FROM base AS other
RUN echo other > /stage
FROM base AS prod
RUN echo prod > /stage
CMD ["sleep", "1000"]
"""


def test_build_from_a_dockerfile_and_reuse_it(clean: Path) -> None:
    app = clean / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "keep.txt").write_text("k")
    (app / "secret.env").write_text("TOKEN=1")
    (app / ".dockerignore").write_text("*.env\n.dockerignore\n")
    (clean / "b.cr").write_text(APP)
    try:
        first = crc("run", "b.cr", "--no-progress", "--pull", "never", cwd=clean)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "building crc-build/imgtest-api:" in first.stdout
        built = _image_ids("crc-build/imgtest-api")
        assert len(built) == 1
        out = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "io.crc.build"}}',
                              built[0]], capture_output=True, text=True).stdout.strip()
        assert out == "1"
        # Unchanged context: no build request at all; a changed file: a new image.
        second = crc("run", "b.cr", "--no-progress", "--pull", "never", cwd=clean)
        assert second.returncode == 0 and "building" not in second.stdout, second.stdout
        (app / "keep.txt").write_text("changed")
        third = crc("run", "b.cr", "--no-progress", "--pull", "never", cwd=clean)
        assert third.returncode == 0 and "building crc-build/imgtest-api:" in third.stdout
        assert len(_image_ids("crc-build/imgtest-api")) == 2
    finally:
        _rmi(*[f"crc-build/imgtest-api:{t}" for t in subprocess.run(
            ["docker", "images", "--format", "{{.Tag}}", "crc-build/imgtest-api"], capture_output=True,
            text=True).stdout.split()])


def test_a_failing_build_shows_its_output_and_exits_3(clean: Path) -> None:
    app = clean / "app"
    app.mkdir()
    (app / "Dockerfile").write_text('FROM crc/busybox:dev\nRUN echo "about to fail" && exit 7\n')
    (clean / "b.cr").write_text('suite "img-fail" {\n  service imgtest-fail {\n    build "./app" { network "none" }\n  }\n'
                                '  test "t" {\n    step s = exec imgtest-fail ["true"]\n  }\n}\n')
    proc, data = run_json(clean / "b.cr", cwd=clean)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "about to fail" in proc.stdout and "returned a non-zero code: 7" in proc.stdout
    assert data["summary"]["error"] == 1
    assert not _image_ids("crc-build/imgtest-fail")  # nothing tagged for a failed build


OOM = """suite "img-oom" {
  service api {
    image "crc/python:dev"
    command ["sleep", "1000"]
    memory 32MiB
    cpus 0.25
  }
  service hog {
    image "crc/python:dev"
    command ["python3", "-c", "import time; x = bytearray(128 * 1024 * 1024); time.sleep(100)"]
    memory 32MiB
    ready log "never printed" within 60s
  }
  test "a step that runs out of memory" uses api {
    # cgroup v2 or v1, whichever the engine's host has
    step limits = exec api sh "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
    expect limits.stdout == "33554432\\n25000\\n"
    step big = exec api ["python3", "-c", "x = bytearray(128 * 1024 * 1024)"]
  }
  test "a service that runs out of memory" uses hog {
    step s = exec hog ["true"]
  }
}
"""


def test_limits_apply_and_oom_kills_are_named(clean: Path) -> None:
    (clean / "o.cr").write_text(OOM)
    proc, data = run_json(clean / "o.cr", cwd=clean)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tests = {t["name"]: t for t in data["tests"]}
    step = tests["a step that runs out of memory"]
    assert step["status"] == "failed"
    assert "step `big` was killed by the kernel: out of memory (service `api` has a memory limit of 32 MiB)" \
        in step["failures"][0]
    assert not any("step `limits`" in f for f in step["failures"])  # the cgroup limits were what the file says
    svc = tests["a service that runs out of memory"]
    assert svc["status"] in ("failed", "error")
    assert "service `hog` was killed by the kernel: out of memory (its limit is 32 MiB)" \
        in "\n".join(svc["failures"])


# ---------------------------------------------------------------- a real registry with htpasswd auth

USER, PASSWORD, WRONG = "crc-user", "pw-Zq81-never-printed", "pw-Kx93-not-this-one"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-registry/htpasswd missing in CI: .ci/setup installs them")
        pytest.skip("Debian's docker-registry and apache2-utils are not installed (bash .ci/setup)")
    base = tmp_path_factory.mktemp("registry")
    port = _free_port()
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    (base / "htpasswd").write_text(htpasswd.stdout)
    (base / "config.yml").write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {base / "data"}
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: crc-test
    path: {base / "htpasswd"}
""")
    with open(base / "registry.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # bounds a hang only: a loaded machine starts the registry slowly
        while time.monotonic() < deadline:  # until /v2/ answers (401: auth is on)
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=30)
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(base / 'registry.log').read_text()}")
            time.sleep(0.1)
        else:
            pytest.fail(f"docker-registry never answered on {host}")
        good = base / "good"
        good.mkdir()
        env = {**os.environ, "DOCKER_CONFIG": str(good)}
        subprocess.run(["docker", "login", host, "-u", USER, "--password-stdin"], input=PASSWORD, text=True,
                       env=env, check=True, capture_output=True)
        ref = f"{host}/crc/pulltest:v1"
        subprocess.run(["docker", "tag", "crc/busybox:dev", ref], check=True)
        subprocess.run(["docker", "push", ref], env=env, check=True, capture_output=True)
        digest = subprocess.run(["docker", "image", "inspect", "-f", "{{index .RepoDigests 0}}", ref],
                                capture_output=True, text=True, check=True).stdout.strip()
        _rmi(ref)
        bad = base / "bad"
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({"auths": {host: {"username": USER, "password": WRONG}}}))
        yield {"host": host, "ref": ref, "digest": digest, "good": good, "bad": bad}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _pull_file(where: Path, ref: str, suite: str) -> Path:
    f = where / "p.cr"
    f.write_text(f'suite "{suite}" {{\n  service app {{\n    image "{ref}"\n    command ["sleep", "100"]\n  }}\n'
                 f'  test "pulled" {{\n    step s = exec app ["true"]\n  }}\n}}\n')
    return f


def _pull(where: Path, ref: str, config: Path, *args: str, suite: str = "img-pull"
          ) -> subprocess.CompletedProcess[str]:
    f = _pull_file(where, ref, suite)
    env = {"DOCKER_CONFIG": str(config), "CRC_REGISTRY_USERNAME": "", "CRC_REGISTRY_PASSWORD": ""}
    return crc("run", str(f), "--no-progress", *args, cwd=where, env=env)


def _everything_written(where: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in where.rglob("*") if p.is_file())


def test_pull_by_digest_with_credentials(clean: Path, registry: dict[str, Any]) -> None:
    digest = registry["digest"]
    try:
        proc = _pull(clean, digest, registry["good"], "--json", "r.json", "--pull", "missing")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"pulled {digest}" in proc.stdout
        # Present now: `missing` asks no registry, `always` does (and still passes).
        again = _pull(clean, digest, registry["good"], "--pull", "missing")
        assert again.returncode == 0 and "pulling" not in again.stdout
        always = _pull(clean, digest, registry["good"], "--pull", "always")
        assert always.returncode == 0 and f"pulled {digest}" in always.stdout, always.stdout
        assert PASSWORD not in proc.stdout + proc.stderr + _everything_written(clean)
    finally:
        _rmi(digest)


def test_wrong_password_is_exit_3_and_says_so(clean: Path, registry: dict[str, Any]) -> None:
    proc = _pull(clean, registry["ref"], registry["bad"], "--json", "r.json", "--pull", "missing")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "refused the credentials" in proc.stdout, proc.stdout
    assert WRONG not in proc.stdout + proc.stderr + _everything_written(clean)


def test_missing_tag_is_exit_3(clean: Path, registry: dict[str, Any]) -> None:
    proc = _pull(clean, f"{registry['host']}/crc/pulltest:nope", registry["good"], "--pull", "missing")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no such image or tag" in proc.stdout, proc.stdout


def test_pull_never_refuses_a_missing_image(clean: Path, registry: dict[str, Any]) -> None:
    proc = _pull(clean, registry["ref"], registry["good"], "--pull", "never")
    assert proc.returncode == 3
    assert "pulling 127" not in proc.stdout and "is not present on the engine" in proc.stdout


def test_benchmark_smoke(docker_engine: None) -> None:  # noqa: F811
    """benchmarks/images.py at its smallest size prints its ratios and leaves no image behind."""
    import re
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "images.py"), "--smoke"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ratio in ("engine/crc", "docker/crc", "sampled/plain", "captured/plain"):
        assert re.search(rf"^ratio {ratio}: \d+\.\d+x", proc.stdout, re.M), proc.stdout
    assert not _image_ids("crc-build/bench")
