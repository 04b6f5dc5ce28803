"""`crc init`: a working starting point (config, an example suite, an ignore entry, CI jobs); never
overwrites a file."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_INPUT, add_command, fail

DEFAULT_IMAGE = "busybox:stable"
EXAMPLE = Path("tests") / "smoke.cr"
# Images whose own command is a shell or an interpreter, which exits at once without a terminal: the example
# keeps their container up with `sleep`.
SHELL_IMAGES = frozenset({"busybox", "alpine", "debian", "ubuntu", "fedora", "python", "node", "golang"})
_IMAGE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
CI_CHOICES = ("both", "github", "gitlab", "none")


GITHUB = '''# crc's tests on every push and pull request (written by `crc init`).
name: crc
on: [push, pull_request]
jobs:
  crc:
    runs-on: ubuntu-latest  # comes with a Docker engine
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: pip install cleanroom-crc
      - run: crc run --no-progress --junit crc-junit.xml --html crc-report.html
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: crc-report
          path: |
            crc-junit.xml
            crc-report.html
'''

GITLAB = '''# crc's tests (written by `crc init`). The job talks to a Docker-in-Docker engine: crc then reaches the
# services only through published ports, and receives no spans (docs/http.md). A runner with the host's
# Docker socket (a shell executor) has neither limit.
crc:
  image: python:3.12
  services:
    - docker:dind
  variables:
    DOCKER_HOST: tcp://docker:2375
    DOCKER_TLS_CERTDIR: ""
  script:
    - pip install cleanroom-crc
    - crc run --no-progress --junit crc-junit.xml
  artifacts:
    when: always
    reports:
      junit: crc-junit.xml
'''


def register(sub: Any) -> None:
    """Adds `crc init`."""
    p = add_command(sub, "init", init_cmd, "write a starting point: config, an example suite, CI jobs")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR",
                   help="the project's directory (default: the current one; made if missing)")
    p.add_argument("--service", metavar="IMAGE",
                   help=f"the image of the service the example suite starts (default: {DEFAULT_IMAGE})")
    p.add_argument("--pyproject", action="store_true",
                   help="put the settings in pyproject.toml's [tool.crc] (appended) rather than saying how")
    p.add_argument("--ci", choices=CI_CHOICES, default="both",
                   help="CI jobs to write when their file is absent (else they are printed): GitHub Actions "
                        "(.github/workflows/crc.yml), GitLab CI (.gitlab-ci.yml), both (default) or none")


@dataclass
class _Report:
    lines: list[str]
    snippets: list[tuple[str, str]]  # (what to do with it, text)


def init_cmd(a: argparse.Namespace) -> int:
    """Write a working starting point in DIR: a config file (`crc.toml`, or `[tool.crc]` in pyproject.toml
    with --pyproject), an example suite (tests/smoke.cr) for the service image given with --service, `.crc/` in
    .gitignore, and CI jobs for GitHub Actions and GitLab CI.

    Never overwrites a file: a file that exists is kept as it is (`.gitignore` and, with --pyproject,
    pyproject.toml are only appended to), and what would have gone into it is printed instead."""
    image = a.service or DEFAULT_IMAGE
    if not _IMAGE.fullmatch(image):
        fail(f"--service {image!r} is not an image reference", EXIT_INPUT,
             "give one as `docker pull` takes it: NAME[:TAG], REGISTRY/NAME[:TAG] or NAME@sha256:DIGEST")
    root: Path = a.dir
    if root.exists() and not root.is_dir():
        fail(f"{root} is not a directory", EXIT_INPUT)
    try:
        root.mkdir(parents=True, exist_ok=True)
        report = _Report([], [])
        _config(root, a.pyproject, report)
        _create(root / EXAMPLE, example(image), report)
        _ignore(root / ".gitignore", report)
        if a.ci in ("both", "github"):
            _create(root / ".github" / "workflows" / "crc.yml", GITHUB, report)
        if a.ci in ("both", "gitlab"):
            _create(root / ".gitlab-ci.yml", GITLAB, report, job=True)
    except OSError as e:
        fail(f"cannot write in {root}: {e.strerror or e}", EXIT_INPUT)
    except UnicodeDecodeError as e:
        fail(f"cannot read a file in {root} as UTF-8: {e}", EXIT_INPUT)
    print("\n".join(report.lines))
    for what, text in report.snippets:
        print(f"\n{what}\n\n" + "\n".join(f"    {ln}" if ln else "" for ln in text.rstrip("\n").splitlines()))
    where = "" if root.resolve() == Path.cwd().resolve() else f"cd {root} && "
    print(f"\nnext: {where}crc run {EXAMPLE.parent}/    (`crc list` shows the tests, `crc config` the settings)")
    return 0


def example(image: str) -> str:
    """The example suite: one service from `image`, one test that runs a command in it."""
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    lines = ["# A first crc suite: `crc run` starts its service and runs its test; `crc check` only compiles it.",
             "# The language is described in crc's docs/language.md.", 'suite "smoke" {', "  timeout 2m", "",
             "  service app {", f'    image "{image}"']
    if name in SHELL_IMAGES:
        lines += ['    command ["sleep", "3600"]  # its own command (a shell) would exit at once', "  }", "",
                  '  test "the service answers" {', '    step hello = exec app ["echo", "hello from crc"]',
                  "    expect hello.exit == 0", '    expect hello.stdout contains "hello"', "  }"]
    else:
        lines += ["    # When it serves on a port, say when it is ready, e.g.:", "    # port 8080",
                  '    # ready http 8080 "/health" within 30s', "  }", "",
                  '  test "the service is up" {',
                  "    # A command run in its container; replace it with a real check, e.g.",
                  '    # step get = http GET "http://app:8080/health"', "    # expect get.status == 200",
                  '    step up = exec app ["true"]', "    expect up.exit == 0", "  }"]
    return "\n".join([*lines, "}", ""])


def config_keys() -> str:
    """Every setting, `paths` set to the example's directory and the others commented out at their defaults,
    each with what it does (from `crc.config.SETTINGS`, so a new setting appears here too)."""
    from crc.commands_config import as_toml
    from crc.config import SETTINGS

    lines = [(f"{s.key} = {as_toml((str(EXAMPLE.parent),))}" if s.key == "paths" else
              f"# {s.key} = {as_toml(s.default)}", s.help) for s in SETTINGS]
    width = max(len(text) for text, _ in lines)
    return "".join(f"{text:<{width}}  # {why}\n" for text, why in lines)


def _config(root: Path, pyproject: bool, report: _Report) -> None:
    toml, py = root / "crc.toml", root / "pyproject.toml"
    if toml.exists():
        report.lines.append(f"kept   {toml} (it exists)")
        return
    if py.exists():
        text = py.read_text(encoding="utf-8")
        if re.search(r"^\s*\[\s*tool\s*\.\s*crc\s*\]", text, re.M):
            report.lines.append(f"kept   {py} (it has [tool.crc])")
        elif pyproject:
            _append(py, text, "\n[tool.crc]\n" + config_keys())
            report.lines.append(f"added  [tool.crc] to {py}")
        else:
            report.snippets.append((f"{py} exists: add this table to it (or run `crc init --pyproject`):",
                                    "[tool.crc]\n" + config_keys()))
        return
    _create(toml, "# crc's settings; `crc config` shows the effective ones and where each came from.\n"
            + config_keys(), report)


def _create(path: Path, text: str, report: _Report, *, job: bool = False) -> None:
    """Write a new file; one that exists is kept, and what it would have held printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:  # "x": never replace a file, even one made meanwhile
            f.write(text)
    except FileExistsError:
        report.lines.append(f"kept   {path} (it exists)")
        report.snippets.append((f"{path} exists: " + ("add this job to it:" if job else "this is what it would hold:"),
                                text))
        return
    report.lines.append(f"wrote  {path}")


def _ignore(path: Path, report: _Report) -> None:
    """`.crc/` in .gitignore: the file made, or the line appended when no line ignores `.crc` yet."""
    if not path.exists():
        _create(path, ".crc/\n", report)
        return
    text = path.read_text(encoding="utf-8")
    if any(line.strip().strip("/") in (".crc", ".crc/*", ".crc/**") for line in text.splitlines()):
        report.lines.append(f"kept   {path} (it ignores .crc/)")
        return
    _append(path, text, ".crc/\n")
    report.lines.append(f"added  .crc/ to {path}")


def _append(path: Path, text: str, addition: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(("" if not text or text.endswith("\n") else "\n") + addition)
