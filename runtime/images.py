"""Images built from a directory: the build context as a deterministic tar, and its digest as the cache key.

The tar holds the context's files in path order with fixed owners and times, minus what `.dockerignore`
excludes, so the same files give the same bytes. The image is tagged `crc-build/SERVICE:DIGEST` (the
digest also covers the Dockerfile path, target and build args): a tag already on the engine is a cache hit,
and no build request is made at all.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend import Labels

BUILD_REPO = "crc-build"
LABEL = Labels.BUILD
MAX_CONTEXT = 2 * 2**30  # a context larger than this is refused rather than read into memory


class ContextProblem(Exception):
    """The build context cannot be read or is too large (the message says which file and why)."""


@dataclass(frozen=True)
class Context:
    tar: bytes
    digest: str  # sha256 hex of the tar and the build's options
    files: int


def _ignore_rules(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """`.dockerignore` as (negated, regex) rules, applied in order: the last matching rule decides."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    rules = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        if pattern in (".", ""):
            continue
        # `**` crosses directories, `*` does not; a directory pattern also matches what is inside it.
        body = "".join(".*" if part == "**" else fnmatch.translate(part)[4:-3]
                       for part in re.split(r"(\*\*)", pattern))
        rules.append((negated, re.compile(rf"(?s:{body})(?:/.*)?\Z")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    out = False
    for negated, rx in rules:
        if rx.match(rel):
            out = not negated
    return out


def make_context(root: Path, dockerfile: str, target: str | None, args: dict[str, str]) -> Context:
    """The context tar of `root` and its digest. The Dockerfile is always sent, even if ignored."""
    rules = _ignore_rules(root)
    buf = io.BytesIO()
    total = 0
    files = 0
    try:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                    full = Path(dirpath) / name
                    rel = full.relative_to(root).as_posix()
                    if rel != dockerfile and _ignored(rel, rules):
                        continue
                    info = tar.gettarinfo(str(full), arcname=rel)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0
                    if info.isreg():
                        total += info.size
                        if total > MAX_CONTEXT:
                            raise ContextProblem(f"the build context {root} is larger than "
                                                 f"{MAX_CONTEXT // 2**30} GiB: exclude files with .dockerignore")
                        with open(full, "rb") as f:
                            tar.addfile(info, f)
                        files += 1
                    elif info.issym() or info.isdir():
                        tar.addfile(info)
    except OSError as e:
        raise ContextProblem(f"cannot read the build context {root}: {e.strerror or e}") from None
    blob = buf.getvalue()
    h = hashlib.sha256(blob)
    h.update(json.dumps([dockerfile, target, sorted(args.items())]).encode())
    return Context(blob, h.hexdigest(), files)


def build_tag(service: str, digest: str) -> str:
    """The tag of a built image: one per service and context digest."""
    name = re.sub(r"[^a-z0-9._-]+", "-", service.lower()).strip("-._") or "service"
    return f"{BUILD_REPO}/{name}:{digest[:24]}"


def build_request(build: dict[str, Any], base: Path) -> tuple[Path, str, str | None, dict[str, str]]:
    """(context dir, dockerfile, target, args) of a Plan's `build` attribute, relative to `base`. The digest
    covers args and target; the network RUN steps had does not change what a build means."""
    return ((base / build["context"]).resolve(), build.get("dockerfile") or "Dockerfile", build.get("target"),
            dict(build.get("args") or {}))
