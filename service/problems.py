"""What the domain cores refuse, each with the part of the request at fault.

The cores (service/flags, and the accounts and configs cores beside it) raise
these; they know nothing of HTTP. The doors, both API dialects and the
operator's command line, turn them into their own answers: the API's error
envelope maps Invalid to 422, Missing to 404 and Conflicting to 409
(service/api/errors.py)."""

from __future__ import annotations

from collections.abc import Iterable


class Problem(Exception):
    """A request a core refuses: `detail` for people; `pointer` (RFC 6901,
    into the JSON:API document) or `parameter` (a query parameter's name) for
    the part at fault."""

    def __init__(self, detail: str, pointer: str | None = None, *, parameter: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter


class Invalid(Problem):
    """Not valid in itself (422)."""


class Missing(Problem):
    """Something named that does not exist in the account (404)."""


class Conflicting(Problem):
    """Against the stored state: a key taken, a type changed, still in use (409)."""


def json_pointer(path: Iterable[str | int]) -> str:
    """RFC 6901: "/data/attributes/a~1b" for the member "a/b"; "" for the whole document."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)
