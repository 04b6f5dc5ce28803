"""Template expressions in strings (`"{{ fake.name() }}"`): Jinja2's sandbox, strict undefined, seeded data.

Every random choice derives from the suite seed and the suite name, so adding a suite never changes the
values another suite sees, and the same seed always gives the same Plan.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import random
import re
import shlex
import uuid as uuid_mod
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import jinja2.filters
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from .template_problem import TemplateProblem  # re-exported: the compiler raises it from here

DEFAULT_SEED = 0
DEFAULT_CLOCK = "2025-01-01T00:00:00Z"
# What one template may compute (a `.cr` file may come from anyone): the length of any string or list it
# builds and of its output, and the iterations of all its range() loops together.
MAX_OUTPUT = 1_000_000
MAX_ITERATIONS = 100_000
# Python str methods whose result size comes from an argument (`'a'.zfill(10**9)`).
_SIZED_METHODS = frozenset({"zfill", "ljust", "rjust", "center", "expandtabs", "replace", "join"})


def derive_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed derived from a base seed and names; stable across Python versions and runs."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big")


def _sha256(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


_FAKER_INTERNALS = frozenset({"factories", "providers", "random", "add_provider", "get_providers",
                              "set_arguments", "del_arguments", "set_formatter", "get_formatter", "unique",
                              "optional", "weights", "locales", "items"})


class _LazyFaker:
    """Imports and seeds Faker on first use: Faker is slow to import and most files never call it."""

    def __init__(self, seed: int):
        self._seed = seed
        self._faker: Any = None

    def __getattr__(self, name: str) -> Any:
        # Only data methods: Faker's internals (factories, providers, seeding) are shared or global state.
        if name.startswith("_") or name in _FAKER_INTERNALS or name.startswith("seed"):
            raise AttributeError(name)
        if self._faker is None:
            from faker import Faker

            self._faker = Faker()
            self._faker.seed_instance(self._seed)
        return getattr(self._faker, name)


def _secret(name: Any) -> str:
    """`secret("NAME")`: a placeholder the runtime fills from its environment (see compiler/secrets.py)."""
    from .secrets import NAME, placeholder

    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TemplateProblem(f"secret() takes an environment variable's name, not {name!r}",
                              'e.g. secret("API_TOKEN")')
    return placeholder(name)


class Templates:
    """The template environment of one suite."""

    def __init__(self, *, seed: int, suite: str, clock: str, environ: Mapping[str, str] | None = None):
        self.seed = seed
        self.faker_seed = derive_seed(seed, suite, "faker")
        self._rng = random.Random(derive_seed(seed, suite, "uuid"))
        self.clock = parse_clock(clock)
        self._environ = os.environ if environ is None else environ
        self.env_reads: dict[str, str | None] = {}
        self.env = _shared_environment()
        self.globals: dict[str, Any] = {
            "fake": _LazyFaker(self.faker_seed),
            "env": self._env,
            "now": lambda: self.clock,
            "uuid": self._uuid,
            "sha256": _sha256,
            "secret": _secret,
        }

    def _env(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name, default)
        self.env_reads[name] = value
        if value is None:
            raise TemplateProblem(f"environment variable {name} is not set",
                                  f'give a default: env("{name}", "value")')
        return value

    def _uuid(self) -> str:
        return str(uuid_mod.UUID(int=self._rng.getrandbits(128), version=4))

    def names(self, text: str) -> set[str]:
        """The free variable names a template refers to (empty for plain text)."""
        if "{{" not in text and "{%" not in text:
            return set()
        try:
            return set(_free_names(text))
        except jinja2.TemplateSyntaxError as e:
            raise TemplateProblem(f"template syntax error: {e.message}") from e
        except RecursionError as e:
            raise TemplateProblem("template nested too deeply") from e

    def render(self, text: str, values: Mapping[str, Any]) -> str:
        """Render `text` with the suite globals and `values` (lets, template parameters)."""
        if "{{" not in text and "{%" not in text:
            return text
        return render_with(self.env, text, {**self.globals, **values}, cached=True)


@functools.cache
def _shared_environment() -> SandboxedEnvironment:
    """One compile-time environment for every suite: suites differ only in the globals passed at render time,
    so a template string is parsed and compiled once however many suites and tests repeat it."""
    return _environment()


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> jinja2.Template:
    return _shared_environment().from_string(text)


@functools.lru_cache(maxsize=4096)
def _free_names(text: str) -> frozenset[str]:
    return frozenset(jinja2.meta.find_undeclared_variables(_shared_environment().parse(text)))


def render_with(env: jinja2.Environment, text: str, context: Mapping[str, Any], *, cached: bool = False) -> str:
    """Render and turn every Jinja failure into a TemplateProblem (`cached`: `env` is the shared one)."""
    try:
        template = _compiled(text) if cached else env.from_string(text)
        out: list[str] = []
        size = 0
        for chunk in template.generate({**context, "range": _Budget().range}):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateProblem(f"template output longer than {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    except TemplateProblem:
        raise
    except jinja2.UndefinedError as e:
        raise TemplateProblem(f"template error: {e.message}",
                              "only `let` values, template parameters, captures and the functions fake, env, "
                              "secret, now, uuid and sha256 can be used in templates") from e
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(f"template syntax error: {e.message}") from e
    except jinja2.exceptions.SecurityError as e:
        raise TemplateProblem(f"template not allowed: {e}") from e
    except RecursionError as e:
        raise TemplateProblem("template nested too deeply") from e
    except AttributeError as e:
        raise TemplateProblem(f"template error: {e}", "see the Faker providers for available fake.* data") from e
    except Exception as e:  # a function called with bad arguments, a filter failing, ...
        raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from e


def runtime_environment() -> jinja2.Environment:
    """The environment the runtime renders capture-dependent strings with (no random sources)."""
    env = _environment()
    env.globals["sha256"] = _sha256
    env.globals["secret"] = _secret  # still a placeholder: the runtime reveals it where the engine gets it
    return env


class _Budget:
    """range() for one render: all its loops together get MAX_ITERATIONS (nested loops multiply)."""

    def __init__(self) -> None:
        self.left = MAX_ITERATIONS

    def range(self, *args: int) -> Any:
        r = range(*args)
        self.left -= len(r)
        if self.left < 0:
            raise TemplateProblem(f"template loops run more than {MAX_ITERATIONS} times in all")
        return r


def _too_big(n: Any) -> bool:
    return isinstance(n, int) and n > MAX_OUTPUT


# A field width or precision of 7 digits or more in a format string (`'%1000000000s'`, `'{:>999999999}'`).
_WIDE_FORMAT = re.compile(r"\{[^{}]*\d{7,}[^{}]*\}|%[-+ #0]*\d{7,}|%[-+ #0\d]*\.\d{7,}")


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise TemplateProblem(f"template value longer than {MAX_OUTPUT} characters (a format width too large)")


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's `format` filter (`"%s" | format(x)`) with the width check."""
    _check_format(value)
    return str(jinja2.filters.do_format(value, *args, **kwargs))


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (no template can change a list or dict it reaches, such as Faker's word lists,
    which every Faker in the process shares), also refusing to build strings or lists longer than MAX_OUTPUT
    or huge powers."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            _check_format(left)
            return left % right
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                    right * max(abs(left), 2).bit_length() > 4 * 64 * 1024:
                raise TemplateProblem("template number too large (a power of more than 64 KiB)")
            return left**right
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                raise TemplateProblem(f"template value longer than {MAX_OUTPUT} characters")
        return left * right

    def wrap_str_format(self, value: Any) -> Any:
        """`'...'.format` and `.format_map`, which the sandbox wraps here, with the width check."""
        _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str) and name in _SIZED_METHODS:
            if any(_too_big(a) for a in args) or (name == "expandtabs" and len(__obj.__self__) * max(
                    [a for a in args if isinstance(a, int)] or [8]) > MAX_OUTPUT):
                raise TemplateProblem(f"template value longer than {MAX_OUTPUT} characters")
            result = super().call(__context, __obj, *args, **kwargs)
            if len(result) > MAX_OUTPUT:
                raise TemplateProblem(f"template value longer than {MAX_OUTPUT} characters")
            return result
        return super().call(__context, __obj, *args, **kwargs)


def _environment() -> SandboxedEnvironment:
    env = _BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["sha256"] = _sha256
    env.filters["format"] = _format_filter
    env.filters["shquote"] = shlex.quote  # one shell word, whatever it holds: for `sh "..."` scripts
    return env


def parse_clock(text: str) -> dt.datetime:
    """An ISO-8601 instant; `Z` accepted. Naive times are taken as UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


Renderer = Callable[[str], str]
