"""Service builds, resource limits and GPUs: compiling them, the build context, registry credentials, the
engine configuration they become, and the GPU checks against a fake NVML (this machine has no GPU)."""

from __future__ import annotations

import base64
import json
import os
import stat
import tarfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.format import format_source
from crc.compiler.resources import format_size, size_bytes
from crc.runtime import gpu, registry_auth
from crc.runtime.backend import ContainerSpec, GpuRequest
from crc.runtime.docker_backend import DockerBackend, _pull_failure
from crc.runtime.images import build_tag, make_context

SERVICE = """suite "s" {{
  service api {{
{body}
  }}
  test "t" {{
    step a = exec api ["true"]
  }}
}}
"""


def _compile(tmp_path: Path, body: str) -> dict[str, Any]:
    src = tmp_path / "f.cr"
    src.write_text(SERVICE.format(body=body))
    return dict(compile_file(str(src)).node("s::service:api"))


def _errors(tmp_path: Path, body: str) -> list[str]:
    src = tmp_path / "f.cr"
    src.write_text(SERVICE.format(body=body))
    with pytest.raises(CompileError) as e:
        compile_file(str(src))
    return [f"{d.loc.line}:{d.loc.col}: {d.message}" for d in e.value.diagnostics]


# ---------------------------------------------------------------- compiling


def test_limits_and_gpus_become_plan_attributes(tmp_path: Path) -> None:
    d = _compile(tmp_path, '    image "crc/busybox:dev"\n    cpus 1.5\n    memory 512MiB\n'
                           '    gpus 2 { memory 8GiB cuda "12.2" driver "535.54" }')
    assert d["cpus"] == 1.5
    assert d["memory"] == 512 * 2**20
    assert d["gpus"] == {"count": 2, "devices": None, "memory": 8 * 2**30, "cuda": "12.2", "driver": "535.54"}
    assert d["build"] is None


def test_gpus_all_and_device_ids(tmp_path: Path) -> None:
    assert _compile(tmp_path, '    image "x"\n    gpus all')["gpus"]["count"] is None
    d = _compile(tmp_path, '    image "x"\n    gpus ["0", 3]')
    assert d["gpus"]["devices"] == ["0", "3"]


def test_values_come_from_lets_and_strings(tmp_path: Path) -> None:
    src = tmp_path / "f.cr"
    src.write_text('let mem = "1GiB"\nsuite "s" {\n  let n = 2\n  service api {\n    image "x"\n'
                   '    memory mem\n    cpus n\n  }\n  test "t" {\n    step a = exec api ["true"]\n  }\n}\n')
    d = compile_file(str(src)).node("s::service:api")
    assert (d["memory"], d["cpus"]) == (2**30, 2.0)


def test_bad_values_are_located_errors(tmp_path: Path) -> None:
    errs = _errors(tmp_path, '    image "x"\n    cpus 0\n    memory "lots"\n    gpus 0\n'
                             '    gpus [1, 1] { cuda "twelve" }\n    memory 1MiB')
    assert errs == [
        "4:10: `0` is not a CPU count",
        "5:12: `lots` is not a size",
        "6:10: `0` is not a GPU request",
        "7:10: GPU device ids must be a non-empty list of distinct ids or indexes",
        "7:24: `twelve` is not a version",
        "8:12: a memory limit of 1 MiB is below the engine's minimum of 6 MiB",
    ]


def test_build_is_checked_against_the_file_system(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    errs = _errors(tmp_path, '    build "./nope"')
    assert errs == ["3:11: build context `./nope` is not a directory"]
    errs = _errors(tmp_path, '    build "./app"')
    assert len(errs) == 1 and errs[0].startswith("3:5: no Dockerfile at") and errs[0].endswith("app/Dockerfile`")
    (tmp_path / "app" / "Dockerfile.dev").write_text("FROM scratch\n")
    errs = _errors(tmp_path, '    build "./app" { dockerfile "../f.cr" }')
    assert errs == ["3:32: the Dockerfile must be inside the build context"]
    d = _compile(tmp_path, '    build "./app" { dockerfile "Dockerfile.dev" target "t" args { B: "2", A: "1" } }')
    assert d["build"] == {"context": "./app", "dockerfile": "Dockerfile.dev", "target": "t",
                          "args": {"A": "1", "B": "2"}, "network": None}
    assert d["image"] is None  # built: no image needed


def test_a_service_with_neither_image_nor_build_says_both(tmp_path: Path) -> None:
    src = tmp_path / "f.cr"
    src.write_text(SERVICE.format(body="    cpus 1"))
    with pytest.raises(CompileError) as e:
        compile_file(str(src))
    assert "build it: build" in (e.value.diagnostics[0].help or "")


def test_fmt_keeps_the_new_statements() -> None:
    src = ('suite "s" {\n  service api {\n    build   "./app" {dockerfile "D"   target "t" args {A: "1"}}\n'
           '    cpus 0.5\n    memory   64MiB\n    gpus all {memory 8GiB cuda "12.2"}\n  }\n}\n')
    out = format_source(src)
    assert out == ('suite "s" {\n  service api {\n    build "./app" { dockerfile "D" target "t" args { A: "1" } }\n'
                   '    cpus 0.5\n    memory 64MiB\n    gpus all { memory 8GiB cuda "12.2" }\n  }\n}\n')
    assert format_source(out) == out


@pytest.mark.parametrize(("text", "n"), [("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("100MB", 10**8),
                                         ("7B", 7), ("2 GiB", 2 * 2**30), ("12", None), ("1m", None)])
def test_size_bytes(text: str, n: int | None) -> None:
    assert size_bytes(text) == n


def test_format_size() -> None:
    assert [format_size(n) for n in (512 * 2**20, 3 * 2**29, 1000, 2**40)] == \
        ["512 MiB", "1.5 GiB", "1000 B", "1 TiB"]


# ---------------------------------------------------------------- what the engine is asked for


def test_container_config_carries_the_limits() -> None:
    spec = ContainerSpec(name="n", image="i", cpus=0.5, memory=64 * 2**20, gpus=GpuRequest(count=2))
    host = DockerBackend._config(spec)["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 64 * 2**20
    assert host["DeviceRequests"] == [{"Driver": "", "Capabilities": [["gpu"]], "Count": 2, "DeviceIDs": None}]
    every = DockerBackend._config(ContainerSpec(name="n", image="i", gpus=GpuRequest()))["HostConfig"]
    assert every["DeviceRequests"][0]["Count"] == -1
    ids = DockerBackend._config(ContainerSpec(name="n", image="i", gpus=GpuRequest(devices=("0", "2"))))
    assert ids["HostConfig"]["DeviceRequests"][0] | {} == {"Driver": "", "Capabilities": [["gpu"]], "Count": 0,
                                                          "DeviceIDs": ["0", "2"]}
    plain = DockerBackend._config(ContainerSpec(name="n", image="i"))["HostConfig"]
    assert not {"NanoCpus", "Memory", "DeviceRequests"} & set(plain)


# ---------------------------------------------------------------- the build context


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=BytesIO(blob)) as t:
        return sorted(m.name for m in t.getmembers() if m.isfile())


def test_context_is_deterministic_and_honours_dockerignore(tmp_path: Path) -> None:
    _tree(tmp_path, {"Dockerfile": "FROM x\n", "app.py": "print(1)\n", "logs/a.log": "x", "logs/keep.log": "k",
                     "build/out.o": "o", "deep/x/cache.tmp": "t",
                     ".dockerignore": "# comment\nlogs\n!logs/keep.log\n**/*.tmp\nbuild/\nDockerfile\n"})
    a = make_context(tmp_path, "Dockerfile", None, {})
    assert _names(a.tar) == [".dockerignore", "Dockerfile", "app.py", "logs/keep.log"]
    os.utime(tmp_path / "app.py", (1, 1))  # times are not part of the context
    b = make_context(tmp_path, "Dockerfile", None, {})
    assert (a.tar, a.digest) == (b.tar, b.digest)
    (tmp_path / "app.py").write_text("print(2)\n")
    assert make_context(tmp_path, "Dockerfile", None, {}).digest != a.digest
    (tmp_path / "build" / "out.o").write_text("ignored changes do not matter")
    c = make_context(tmp_path, "Dockerfile", None, {})
    assert make_context(tmp_path, "Dockerfile", None, {}).digest == c.digest
    assert make_context(tmp_path, "Dockerfile", "t", {}).digest != c.digest
    assert make_context(tmp_path, "Dockerfile", None, {"A": "1"}).digest != c.digest


def test_build_tag_is_a_valid_reference() -> None:
    assert build_tag("My_API", "ab" * 32) == "crc-build/my_api:" + "ab" * 12


# ---------------------------------------------------------------- registry credentials


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("CRC_REGISTRY_USERNAME", "CRC_REGISTRY_PASSWORD", "CRC_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    return tmp_path / "config.json"


def test_credentials_from_the_docker_config(docker_config: Path) -> None:
    assert registry_auth.credentials_for("127.0.0.1:5000") is None  # no config at all
    auth = base64.b64encode(b"alice:s3cr:et").decode()
    docker_config.write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": auth},
                                                   "https://reg.example:443": {"username": "bob", "password": "p"}}}))
    assert registry_auth.credentials_for("127.0.0.1:5000") == {
        "username": "alice", "password": "s3cr:et", "serveraddress": "127.0.0.1:5000"}
    assert registry_auth.credentials_for("reg.example:443")["username"] == "bob"  # type: ignore[index]
    assert registry_auth.credentials_for("other:5000") is None


def test_credentials_from_the_environment_win(docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_config.write_text(json.dumps({"auths": {"r:1": {"username": "cfg", "password": "x"}}}))
    monkeypatch.setenv("CRC_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("CRC_REGISTRY_PASSWORD", "pw")
    assert registry_auth.credentials_for("r:1")["username"] == "ci"  # type: ignore[index]
    monkeypatch.setenv("CRC_REGISTRY", "elsewhere:1")  # limited to another registry: the config answers
    assert registry_auth.credentials_for("r:1")["username"] == "cfg"  # type: ignore[index]


def test_credentials_from_a_helper(docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\n[ "$host" = "r:1" ] || exit 1\n'
                      'echo \'{"ServerURL": "r:1", "Username": "h", "Secret": "from-helper"}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    docker_config.write_text(json.dumps({"credHelpers": {"r:1": "fake"}, "auths": {}}))
    assert registry_auth.credentials_for("r:1") == {"username": "h", "password": "from-helper",
                                                    "serveraddress": "r:1"}
    docker_config.write_text(json.dumps({"credsStore": "fake"}))
    assert registry_auth.credentials_for("r:2") is None  # the helper has none for it
    docker_config.write_text(json.dumps({"credsStore": "missing-helper"}))
    with pytest.raises(registry_auth.CredentialsError, match="docker-credential-missing-helper"):
        registry_auth.credentials_for("r:1")


def test_a_bad_config_never_shows_a_secret(docker_config: Path) -> None:
    docker_config.write_text(json.dumps({"auths": {"r:1": {"auth": base64.b64encode(b"no-colon-secret").decode()}}}))
    with pytest.raises(registry_auth.CredentialsError) as e:
        registry_auth.credentials_for("r:1")
    assert "no-colon-secret" not in str(e.value) and "r:1" in str(e.value)
    docker_config.write_text("{not json")
    with pytest.raises(registry_auth.CredentialsError, match="cannot read the Docker config"):
        registry_auth.credentials_for("r:1")


def test_pull_failures_say_what_to_do() -> None:
    creds = {"username": "u", "password": "hunter2", "serveraddress": "r:1"}
    msg = _pull_failure("r:1/a:1", "r:1", "unauthorized: authentication required", creds)
    assert "refused the credentials" in msg and "hunter2" not in msg
    assert "found none" in _pull_failure("r:1/a:1", "r:1", "no basic auth credentials", None)
    assert "no such image or tag" in _pull_failure("r:1/a:9", "r:1", "manifest unknown: manifest unknown", None)


# ---------------------------------------------------------------- GPUs, against a fake NVML


class FakeNVML:
    """pynvml's functions over a list of GPUs: (name, total bytes, free bytes, utilisation %)."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: list[tuple[str, int, int, int]], driver: str = "535.54.03", cuda: int = 12020):
        self.gpus, self.driver, self.cuda = gpus, driver, cuda
        self.fail_index: int | None = None

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return self.driver.encode()

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i == self.fail_index:
            raise self.NVMLError("GPU is lost")
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:04d}"

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.gpus[h][0]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        _, total, free, _ = self.gpus[h]
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=self.gpus[h][3], memory=0)


GiB = 2**30
TWO = FakeNVML([("A100", 40 * GiB, 30 * GiB, 10), ("T4", 16 * GiB, 4 * GiB, 90)])


def test_inventory_reads_versions_and_gpus() -> None:
    inv = gpu.inventory(TWO)
    assert (inv.driver, inv.cuda) == ("535.54.03", "12.2")
    assert [(g.index, g.uuid, g.name, g.memory_free) for g in inv.gpus] == [
        (0, "GPU-0000", "A100", 30 * GiB), (1, "GPU-0001", "T4", 4 * GiB)]
    assert "GPU 1: T4 (GPU-0001), 4 GiB free of 16 GiB" in inv.describe()


def _req(**kw: Any) -> dict[str, Any]:
    return {"count": None, "devices": None, "memory": None, "cuda": None, "driver": None} | kw


@pytest.mark.parametrize(("req", "problem"), [
    (_req(count=2), None),
    (_req(count=3), "asks for 3 GPU(s); this machine has 2"),
    (_req(), None),
    (_req(count=1, memory=20 * GiB), None),  # the engine may pick the roomier one
    (_req(count=2, memory=20 * GiB), "needs 20 GiB free on each GPU; GPU 1 has 4 GiB"),
    (_req(devices=["1"], memory=8 * GiB), "GPU 1 has 4 GiB"),
    (_req(devices=["GPU-0000"], memory=8 * GiB), None),
    (_req(devices=["7"]), "asks for GPU(s) 7, which NVML does not list (it sees 0, 1)"),
    (_req(count=1, cuda="12.4"), "needs CUDA 12.4 or newer; the driver supports CUDA 12.2"),
    (_req(count=1, cuda="12"), None),
    (_req(count=1, driver="550"), "needs NVIDIA driver 550 or newer; this machine has 535.54.03"),
    (_req(count=1, driver="535.54"), None),
])
def test_check_requests(req: dict[str, Any], problem: str | None) -> None:
    problems = gpu.check([("service `x`", req)], gpu.inventory(TWO))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0] and problems[0].startswith("service `x`")


def test_no_gpu_at_all() -> None:
    none = FakeNVML([])
    assert gpu.check([("s", _req())], gpu.inventory(none)) == ["s asks for all GPUs; this machine has 0"]


def test_without_nvml_the_message_is_one_sentence() -> None:
    # This machine has no NVIDIA driver: the real pynvml fails to load its library.
    try:
        gpu.load_nvml()
    except gpu.GpuUnavailable as e:
        assert "NVML is not usable on this machine" in str(e) and "\n" not in str(e)
    else:  # pragma: no cover - only on a machine with a GPU driver
        pytest.skip("this machine has NVML")


def test_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = SimpleNamespace(nodes={"s::service:a": {"kind": "service", "name": "a", "suite": "s",
                                                   "gpus": _req(devices=["1"])},
                                  "s::service:b": {"kind": "service", "name": "b", "suite": "s", "gpus": None}})
    monkeypatch.setattr(gpu, "load_nvml", lambda: TWO)
    watch = gpu.preflight([plan], "unix:///var/run/docker.sock")
    assert watch is not None and watch.indexes == [1]
    assert gpu.preflight([plan], "tcp://10.0.0.5:2375") is None  # NVML here knows nothing of that host
    plan.nodes["s::service:a"]["gpus"] = _req(count=4)
    with pytest.raises(gpu.GpuUnavailable, match=r"service `a` \(suite s\) asks for 4 GPU"):
        gpu.preflight([plan], None)


def test_samples_skip_a_lost_gpu() -> None:
    nvml = FakeNVML([("A", 10 * GiB, 6 * GiB, 50), ("B", 10 * GiB, 9 * GiB, 5)])
    s = gpu.Samples(0.5)
    s.add(nvml, [0, 1], 0.0)
    nvml.gpus[0] = ("A", 10 * GiB, 2 * GiB, 99)
    nvml.fail_index = 1
    s.add(nvml, [0, 1], 0.5)
    out = s.to_dict()
    assert [g["index"] for g in out["gpus"]] == [0, 1]
    assert out["gpus"][0]["peak_memory_bytes"] == 8 * GiB and out["gpus"][0]["peak_utilization"] == 99
    assert out["gpus"][1]["samples"] == [[0.0, GiB, 5]]


def test_gpu_samples_travel_with_the_recording(tmp_path: Path) -> None:
    from crc.runtime import recording
    from crc.runtime.options import RunOptions
    from crc.runtime.results import RunResult

    from crc.commands_replay import save_recording

    src = tmp_path / "f.cr"
    src.write_text(SERVICE.format(body='    image "x"\n    gpus 1'))
    plan = compile_file(str(src))
    result = RunResult("r1", 1, 2, (), {}, (str(src),))
    s = gpu.Samples(0.5)
    s.add(TWO, [0], 0.0)
    path = tmp_path / "r.crcrec"
    save_recording(path, result, [plan], [], RunOptions(), s.to_dict())
    back = recording.read(path)
    assert back.gpus == s.to_dict() and back.gpus["gpus"][0]["peak_utilization"] == 10
    save_recording(path, result, [plan], [], RunOptions())
    assert recording.read(path).gpus == {}
