"""Reading a `.cr` file that may come from anyone (a pull request): only regular files are read (never
`/dev/zero` or a FIFO, even through a symlink), at most `MAX_SOURCE_BYTES`; bytes that are not UTF-8 are
reported at their line and column; and the project that imports must stay inside. Light on purpose (the
compile cache reads sources without loading the parser)."""

from __future__ import annotations

import os
import stat

from . import ir

# A source larger than this is refused (the biggest real .cr files are a few KB; the parser's memory is
# ~100 times the text).
MAX_SOURCE_BYTES = 4 * 1024 * 1024
# Longer import paths are refused before the OS is asked (it would say "File name too long").
MAX_IMPORT_PATH = 1024


class SourceError(Exception):
    """A source that cannot be read: a message, where it is (for undecodable bytes) and a help line."""

    def __init__(self, message: str, help: str | None = None, loc: ir.Loc | None = None, shown: str | None = None):
        super().__init__(message)
        self.message, self.help, self.loc = message, help, loc
        self.shown = shown  # the text decoded with replacements, for the diagnostic's excerpt


def read_source(path: str | os.PathLike[str], shown: str | None = None) -> str:
    """The text of a `.cr` file, or SourceError: not a regular file, too big, not UTF-8 (located at the first
    bad byte; `shown` names the file in that location), or any OS error."""
    name = shown if shown is not None else os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read {name}: {why(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # checked on what was opened: a symlink swap cannot slip past
            raise SourceError(f"cannot read {name}: not a regular file", "give a .cr file")
        if st.st_size > MAX_SOURCE_BYTES:
            raise SourceError(f"cannot read {name}: {st.st_size} bytes, more than the {MAX_SOURCE_BYTES} allowed",
                              "split it into modules and import them")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as e:
        raise SourceError(f"cannot read {name}: {why(e)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:  # it grew while we read
        raise SourceError(f"cannot read {name}: more than the {MAX_SOURCE_BYTES} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _undecodable(data, e, name) from None


def why(e: BaseException) -> str:
    if isinstance(e, OSError):
        return (e.strerror or str(e)).lower()
    return "the path holds a NUL character" if "null" in str(e) else str(e)


def _undecodable(data: bytes, e: UnicodeDecodeError, name: str) -> SourceError:
    """Locate the first byte that is not UTF-8 at its line and column (in characters, as the editor shows)."""
    before = data[: e.start]
    line = before.count(b"\n") + 1
    line_start = before.rfind(b"\n") + 1
    col = len(before[line_start:].decode("utf-8", "replace")) + 1
    loc = ir.Loc(name, line, col, line, col + 1)
    return SourceError(f"invalid UTF-8: byte 0x{data[e.start]:02x} cannot start or continue a character",
                       "save the file as UTF-8", loc, data.decode("utf-8", "replace"))


def project_root(path: str | os.PathLike[str]) -> str:
    """The nearest directory above `path` holding `.git`, else `path`'s own directory (symlinks resolved)."""
    start = os.path.dirname(os.path.realpath(path))
    d = start
    while True:
        if os.path.lexists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return start
        d = parent


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
