"""What the flags core refuses, each with the part of the request at fault.

The doors turn them into their error envelope (422, 404, 409)."""

from __future__ import annotations


class FlagProblem(Exception):
    """A request the core refuses: `detail` for people, `pointer` to the part at fault."""

    def __init__(self, detail: str, pointer: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


class Invalid(FlagProblem):
    """Not a valid flag (422)."""


class Missing(FlagProblem):
    """A flag or an environment that does not exist (404)."""


class Conflicting(FlagProblem):
    """Against the stored state: a key taken, a type changed (409)."""
