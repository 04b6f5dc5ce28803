"""The error a template raises, in a module of its own: the runtime catches it on every step without
importing Jinja2 (about 20 ms), which it loads only when a step really renders a template."""

from __future__ import annotations


class TemplateProblem(Exception):
    """A template that does not render; `message` is for the user, `hint` may suggest a fix."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
