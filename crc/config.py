"""Project settings: `crc.toml`, or `[tool.crc]` in `pyproject.toml`, found from the working directory upward.

Each setting is resolved with the precedence command line > environment (`CRC_<KEY>`) > config file >
default, and remembers where its value came from (`crc config` shows it). The defaults of run settings are
`RunOptions`' own. An unknown key or a bad value is a located error (file:line:col, exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crc.runtime.options import DEFAULTS

CONFIG_FILES = ("crc.toml", "pyproject.toml")
PULL = ("missing", "never", "always")


class ConfigError(Exception):
    """A bad config file or environment value; `diagnostic` is located when the fault is in a file."""

    def __init__(self, message: str, *, file: str | None = None, line: int = 0, col: int = 0, end_col: int = 0,
                 help: str | None = None):
        super().__init__(message)
        self.message, self.file, self.line, self.col, self.end_col, self.help = (
            message, file, line, col, end_col, help)


def _int_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if value < low:
            raise ValueError(f"{value} is smaller than {low}")
        return value
    return parse


def _seconds(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number of seconds")
    if value < 0:
        raise ValueError(f"{value} is negative")
    return float(value)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return str(value)
    return parse


def _paths(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(os.pathsep) if os.pathsep in value else [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of paths, such as [\"tests\"]")
    return tuple(value)


def _masks(value: Any) -> tuple[str, ...]:
    """Mask rules as `--mask` takes them; from the environment, one rule a line."""
    from crc.runtime.masks import MaskError, Masks

    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of mask rules, such as [\"/order-[0-9a-f]{8}/\", \"attr order.id\"]")
    for rule in value:
        try:
            Masks.parse(rule)
        except MaskError as e:
            raise ValueError(str(e)) from None
    return tuple(value)


class SubKeyError(ValueError):
    """A fault inside a setting that is a table (`[lints]`): located at `subkey` in it."""

    def __init__(self, message: str, subkey: str, help: str | None = None):
        super().__init__(message)
        self.subkey, self.help = subkey, help


def lint_codes(value: Any) -> tuple[str, ...]:
    """Lint codes, each checked: a list, or (from the environment or the command line) text separated by
    commas or spaces. Raises ValueError."""
    from crc.compiler.lints import IGNORABLE, not_ignorable

    if isinstance(value, str):
        value = [c for c in re.split(r"[\s,]+", value) if c]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of lint codes, such as [\"probe-port\"]")
    for code in value:
        if code not in IGNORABLE:
            message, help = not_ignorable(code)
            raise SubKeyError(message, "ignore", help)
    return tuple(dict.fromkeys(value))


def _lints(value: Any) -> dict[str, tuple[str, ...]]:
    """`[lints]` (or `lints = {ignore = [...]}`); from the environment (CRC_LINTS_IGNORE), the codes."""
    if isinstance(value, str):
        return {"ignore": lint_codes(value)}
    if not isinstance(value, dict):
        raise ValueError("expected a table, such as [lints] ignore = [\"probe-port\"]")
    for key in value:
        if key != "ignore":
            raise SubKeyError(f"unknown key `{key}` in [lints]", key, "known keys: ignore")
    ignore = value.get("ignore", [])
    if not isinstance(ignore, list):  # a file writes a list; text is for the environment and command line
        raise SubKeyError("expected a list of lint codes, such as [\"probe-port\"]", "ignore")
    try:
        return {"ignore": lint_codes(ignore)}
    except SubKeyError:
        raise
    except ValueError as e:
        raise SubKeyError(str(e), "ignore") from None


@dataclass(frozen=True)
class Setting:
    """One setting: its key in the config file, how a value is checked, its default and what it does."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    env_name: str = ""  # when not CRC_<KEY>

    @property
    def env(self) -> str:
        return self.env_name or "CRC_" + self.key.upper()


SETTINGS = (
    Setting("paths", _paths, (), "where `crc run`, `crc list` and `crc dev` look when given no target"),
    Setting("jobs", _int_at_least(1), DEFAULTS.jobs, "how many services/steps (and suites) run at once"),
    Setting("span_timeout", _seconds, DEFAULTS.span_timeout, "seconds a test waits for the spans it expects"),
    Setting("pull", _choice(PULL), "missing", "pull images that are missing, never, or always"),
    Setting("masks", _masks, (), "volatile values `--repeat`, `crc digest` and `crc diff` ignore (as --mask)"),
    Setting("lints", _lints, {"ignore": ()}, "lint codes never reported in this project (`ignore`)",
            "CRC_LINTS_IGNORE"),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "default", "environment (CRC_JOBS)", "command line (--jobs)", "crc.toml:3"


@dataclass(frozen=True)
class Config:
    """The effective settings and where each came from; `file` is the config file read, if any."""

    values: Mapping[str, Value]
    file: Path | None

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value


def find_config(start: Path | None = None) -> tuple[Path, str] | None:
    """The config file that applies in `start` (default: the working directory) and its table's name: the
    first `crc.toml`, or `pyproject.toml` with a `[tool.crc]` table, from `start` upward."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "crc.toml").is_file():
            return d / "crc.toml", ""
        py = d / "pyproject.toml"
        if py.is_file() and re.search(r"^\s*\[\s*tool\s*\.\s*crc\s*[\].]", _read(py), re.M):  # or [tool.crc.lints]
            return py, "tool.crc"
    return None


def load(cli: Mapping[str, tuple[Any, str]] | None = None, *, environ: Mapping[str, str] | None = None,
         start: Path | None = None) -> Config:
    """The effective settings. `cli` maps keys to (value, option) for options given on the command line
    (None values are ignored). Raises ConfigError."""
    env = os.environ if environ is None else environ
    found = find_config(start)
    table: dict[str, Any] = {}
    text = ""
    if found is not None:
        path, name = found
        text = _read(path)
        table = _table(path, text, name)
    values: dict[str, Value] = {}
    for s in SETTINGS:
        given = (cli or {}).get(s.key)
        if given is not None and given[0] is not None:
            values[s.key] = Value(given[0], f"command line ({given[1]})")
        elif env.get(s.env):
            try:
                values[s.key] = Value(s.parse(env[s.env]), f"environment ({s.env})")
            except ValueError as e:
                raise ConfigError(f"{s.env}: {e}", help=getattr(e, "help", None) or f"{s.env}: {s.help}") from None
        elif s.key in table:
            assert found is not None
            line, col, end = _locate(text, found[1], s.key)
            try:
                value = s.parse(table[s.key])
            except SubKeyError as e:  # at the key inside the table, when it is written as `key = ...`
                sub = _locate(text, f"{found[1]}.{s.key}".lstrip("."), e.subkey, (line, col, end))
                raise ConfigError(f"`{s.key}`: {e}", file=_shown(found[0]), line=sub[0], col=sub[1],
                                  end_col=sub[2], help=e.help or f"`{s.key}`: {s.help}") from None
            except ValueError as e:
                raise ConfigError(f"`{s.key}`: {e}", file=_shown(found[0]), line=line, col=col, end_col=end,
                                  help=f"`{s.key}`: {s.help}") from None
            if s.key == "paths":  # relative to the config file, shown relative to here when possible
                value = tuple(_shown(found[0].parent / p) for p in value)
            values[s.key] = Value(value, f"{_shown(found[0])}:{line}")
        else:
            values[s.key] = Value(s.default, "default")
    return Config(values, found[0] if found else None)


def project_lint_ignore(start: Path | None = None) -> tuple[str, ...]:
    """The lint codes the project ignores (`lints.ignore`, environment then the config file found from
    `start`), for callers with no command line to report a bad config on (the language server, the pytest
    plugin's collection): nothing when the config is bad, which `crc config` reports."""
    try:
        ignore: tuple[str, ...] = load(start=start).values["lints"].value["ignore"]
    except ConfigError:
        return ()
    return ignore


def _table(path: Path, text: str, name: str) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line, col = (int(m[1]), int(m[2])) if m else (1, 1)
        what = str(e)[:m.start()].rstrip() if m else str(e)
        raise ConfigError(f"not valid TOML: {what}", file=_shown(path), line=line, col=col, end_col=col) from None
    for part in name.split(".") if name else ():
        data = data.get(part, {})
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table", file=_shown(path), line=1, col=1, end_col=1)
    from crc.compiler.diagnostics import did_you_mean

    for key in data:
        if key not in BY_KEY:
            line, col, end = _locate(text, name, key)
            raise ConfigError(f"unknown key `{key}` in {f'[{name}]' if name else path.name}", file=_shown(path),
                              line=line, col=col, end_col=end,
                              help=did_you_mean(key, BY_KEY) or f"known keys: {', '.join(BY_KEY)}")
    return data


def _locate(text: str, table: str, key: str, fallback: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """Line, first and last column of `key = ...` in `table` ("" for the top level); else the header of the
    table `[TABLE.KEY]` when the key is a table of its own; else `fallback`, or the table's header (or line 1)
    when the key is written some other way (dotted, inline)."""
    current, header = "", fallback or (1, 1, 1)
    own = f"{table}.{key}".lstrip(".")
    pattern = re.compile(rf"^(\s*)(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
    for n, line in enumerate(text.splitlines(), 1):
        h = re.match(r"^\s*\[\s*([^\]]*?)\s*\]", line)
        if h and not line.lstrip().startswith("[["):
            current = re.sub(r"\s*\.\s*", ".", h[1])
            if current == own:
                return n, 1, len(line.rstrip()) + 1
            if current == table and fallback is None:
                header = (n, 1, len(line.rstrip()))
            continue
        m = pattern.match(line)
        if m and current == table:
            col = len(m[1]) + 1
            return n, col, col + len(m[2])
    return header


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
