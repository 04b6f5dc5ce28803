"""Every keyword of the .cr language, by role: the one list editor grammars are generated from.

A test checks that this list and the string literals of `cr.lark` are the same set.
"""

from __future__ import annotations

KEYWORDS: dict[str, tuple[str, ...]] = {
    # file and suite structure
    "structure": ("import", "template", "suite", "test", "uses", "for", "let", "seed", "clock", "timeout", "settle",
                  "mask", "json"),
    # service declarations
    "service": ("service", "image", "command", "env", "port", "volume", "ro", "rw", "needs", "workdir",
                "build", "dockerfile", "target", "args", "network", "cpus", "memory", "gpus", "all", "cuda", "driver",
                "privileged", "host", "internal"),
    # readiness probes
    "readiness": ("ready", "within", "tcp", "http", "log"),
    # steps and what they capture
    "step": ("step", "exec", "run", "sh", "after", "capture", "headers", "body", "tls", "ca", "insecure"),
    # expectations and their operators in words
    "expectation": ("expect", "contains", "not", "before", "parent", "of", "no", "hermetic", "allow", "count",
                    "gap", "eventually", "every"),
    # span selectors
    "span": ("span", "kind", "status", "attr", "ancestor", "exists", "missing", "in"),
}

ALL_KEYWORDS: frozenset[str] = frozenset(k for words in KEYWORDS.values() for k in words)

# Words that read as values where a value is expected: status and kind names, booleans.
CONSTANTS: dict[str, tuple[str, ...]] = {
    "status": ("ok", "error", "unset"),
    "kind": ("server", "client", "internal", "producer", "consumer"),
    "boolean": ("true", "false"),
}

OPERATORS: tuple[str, ...] = ("==", "!=", "<=", ">=", "<", ">", "~", "!~", "->", "..")


def role_of(word: str) -> str | None:
    """The role of a keyword, or None when `word` is not one."""
    for role, words in KEYWORDS.items():
        if word in words:
            return role
    return None
