"""Step output past the in-memory bound, spilled to a file crc owns, and the checks that read it whole.

A stream keeps its first OUTPUT_KEEP bytes in memory (runtime/backend.OutputCapture). Past that, while a run
has a spill directory (`active`), the whole stream goes to a file in it: secrets already masked as it is
written (`SecretFilter`: a value is replaced before a byte of it reaches the disk), its size and sha256
counted on the way. Expectations and captures read the file in bounded memory: `contains` in chunks that
overlap by the needle's length, a regex over an mmap of the file (the deadline matcher of
runtime/matching.py), `==` by size then chunks.

The directory is private (0700) under the system's temporary directory, named with crc's pid; the run
removes it when it ends (normally, on an error, Ctrl-C or SIGTERM). One left by a killed crc is removed by
the next run that spills (its pid no longer lives).

A recording keeps a spilled stream's first OUTPUT_KEEP bytes, its size and sha256, not the file; replay
reuses the recorded verdict of an unchanged check on it and says it cannot re-check an edited one
(`NotKept`).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["CHUNK", "NotKept", "SecretFilter", "SpillDir", "SpillWriter", "Spilled", "active", "contains",
           "equals", "head", "search"]

CHUNK = 1 << 20  # bytes read at a time from a spill file
PREFIX = "crc-spill-"
MASK = b"***"  # as compiler/secrets.MASK


@dataclass(frozen=True, slots=True)
class Spilled:
    """A whole stream on disk: `size` bytes (secrets masked) with this `sha256`; `path` is None once the run
    that wrote it is over (a recording keeps size and sha256 only)."""

    size: int
    sha256: str
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spilled:
        return cls(int(d["size"]), str(d["sha256"]))


class NotKept(Exception):
    """A check on a spilled stream whose file is gone (replay): the message says why it cannot be re-checked."""


class SecretFilter:
    """Replaces secret values in a byte stream fed in pieces: the last `longest - 1` bytes wait for the next
    piece, so a value split across two pieces is still replaced whole."""

    def __init__(self, values: tuple[str, ...]) -> None:
        alts = sorted({v.encode() for v in values if v}, key=lambda b: (-len(b), b))
        self._rx = re.compile(b"|".join(re.escape(v) for v in alts)) if alts else None
        self._hold = max((len(v) for v in alts), default=1) - 1
        self._pending = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """The masked bytes that are safe to write now (all that is left when `final`)."""
        if self._rx is None:
            return data
        s = self._pending + data
        limit = len(s) if final else len(s) - self._hold
        out: list[bytes] = []
        pos = 0
        for m in self._rx.finditer(s):
            if m.start() >= limit:  # not complete yet, or not known to be: wait for the next piece
                break
            out += (s[pos:m.start()], MASK)
            pos = m.end()
        cut = max(pos, limit)
        out.append(s[pos:cut])
        self._pending = s[cut:]
        return b"".join(out)


class SpillWriter:
    """One stream's spill file, written as the stream arrives."""

    def __init__(self, path: Path, secrets: tuple[str, ...]) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._f: IO[bytes] = os.fdopen(fd, "wb")
        self._filter = SecretFilter(secrets)
        self._hash = hashlib.sha256()
        self._size = 0

    def _put(self, data: bytes) -> None:
        if data:
            self._f.write(data)
            self._hash.update(data)
            self._size += len(data)

    def write(self, data: bytes) -> None:
        """Append `data` (masked)."""
        self._put(self._filter.feed(data))

    def close(self) -> Spilled:
        """Flush what the filter held and close: the stream as the checks will read it."""
        if not self._f.closed:
            self._put(self._filter.feed(b"", final=True))
            self._f.close()
        return Spilled(self._size, self._hash.hexdigest(), str(self.path))

    def abandon(self) -> None:
        """Give the file up (the disk refused a write): closed and removed."""
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class SpillDir:
    """A run's spill directory, made on the first spill, removed by `close`."""

    def __init__(self, secrets: Any = None) -> None:
        self.secrets = secrets  # anything with `.values` (the run's compiler.secrets.Masker), read per file
        self.path: Path | None = None
        self._n = 0

    def writer(self) -> SpillWriter:
        """A new spill file."""
        if self.path is None:
            sweep()
            self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))  # 0700
        self._n += 1
        values = tuple(getattr(self.secrets, "values", ()) or ())
        return SpillWriter(self.path / f"stream-{self._n}", values)

    def close(self) -> None:
        """Remove the directory and every file in it."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def sweep(root: str | None = None, *, dry_run: bool = False) -> list[Path]:
    """Remove the spill directories of crc processes that no longer run (a SIGKILLed run's); those removed
    (with `dry_run`, those that would be)."""
    gone = []
    base = Path(root or tempfile.gettempdir())
    for p in base.glob(f"{PREFIX}*-*"):
        pid = p.name[len(PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True)
        gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


_ACTIVE: ContextVar[SpillDir | None] = ContextVar("crc_spill", default=None)


def current() -> SpillDir | None:
    """The spill directory of the run this task belongs to, if it spills."""
    return _ACTIVE.get()


@contextlib.contextmanager
def active(d: SpillDir) -> Iterator[SpillDir]:
    """Spill the streams captured in this context (and the tasks it starts) to `d`; remove `d` after."""
    token = _ACTIVE.set(d)
    try:
        yield d
    finally:
        _ACTIVE.reset(token)
        d.close()


# ---------------------------------------------------------------------------- reading a spilled stream


def _path(s: Spilled, stream: str) -> str:
    if s.path is None or not os.path.exists(s.path):
        raise NotKept(f"{stream} was {s.size:,} bytes; the recording keeps its first part, its size and sha256, "
                      "not the rest")
    return s.path


def _chunks(path: str, overlap: int) -> Iterator[bytes]:
    """The file in CHUNK pieces, each beginning with the last `overlap` bytes of the one before."""
    tail = b""
    with open(path, "rb") as f:
        while piece := f.read(CHUNK):
            yield tail + piece
            tail = (tail + piece)[-overlap:] if overlap else b""


def head(s: Spilled, n: int) -> bytes:
    """The first `n` bytes of a spilled stream (as masked on disk)."""
    with open(_path(s, "the stream"), "rb") as f:
        return f.read(n)


def contains(s: Spilled, stream: str, needle: str) -> bool:
    """Whether the whole stream holds `needle`, read in overlapping chunks."""
    b = needle.encode()
    if not b:
        return True
    return any(b in c for c in _chunks(_path(s, stream), len(b) - 1))


def equals(s: Spilled, stream: str, value: str) -> bool:
    """Whether the whole stream is exactly `value`."""
    path = _path(s, stream)
    b = value.encode()
    if len(b) != s.size:
        return False
    with open(path, "rb") as f:
        return all(f.read(CHUNK) == b[i:i + CHUNK] for i in range(0, len(b), CHUNK))


def search(s: Spilled, stream: str, rx: Mapping[str, str]) -> tuple[str | None] | None:
    """A regex (the Plan's form) searched over the whole stream as bytes (an mmap of the file), with the
    deadline of runtime/matching.py scaled to the stream's size: None when it does not match, else a 1-tuple
    of its first group (or the whole match) as text. Raises RegexTimeout past the deadline."""
    from .matching import search_bytes

    path = _path(s, stream)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        found = search_bytes(rx, m, s.size)
        if found is None:
            return None
        value = found.group(1) if found.groups() else found.group(0)
        return (None if value is None else bytes(value).decode("utf-8", "replace"),)
