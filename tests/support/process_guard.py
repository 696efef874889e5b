"""Every test that starts an OS process carries the `processes` marker.

`scripts/test --fast` runs the tests without it, in process. A test that
starts a process (a server, a CLI, git, squawk) without the marker would make
that tier slow and its promise false, so this guard fails such a test where it
starts the process, and fails the run even if the test swallowed the error.

Every process the tests start goes through `subprocess.Popen`: `subprocess.run`
and asyncio's subprocesses included. The session's database server is the one
exception (`processes_allowed`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

MARKER = "processes"
# The tests that started a process without the marker, since the last drain.
UNMARKED: list[str] = []

_current: list[pytest.Item] = []
_allowed = [0]
_popen_init = subprocess.Popen.__init__


class UnmarkedProcessError(AssertionError):
    """A test without the `processes` marker started a process."""


@contextmanager
def processes_allowed() -> Iterator[None]:
    """Start processes that belong to the whole run, not to the test that
    happens to be setting up (the session's database server)."""
    _allowed[0] += 1
    try:
        yield
    finally:
        _allowed[0] -= 1


def unmarked_test_running() -> bool:
    """A test without the marker is being set up, run or torn down, and no
    process that belongs to the whole run is being started."""
    return bool(_current) and not _allowed[0] and _current[-1].get_closest_marker(MARKER) is None


def _guarded_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    if unmarked_test_running():
        command = args[0] if args else kwargs.get("args")
        message = (
            f"{_current[-1].nodeid} starts a process ({command!r}) without the"
            f" `{MARKER}` marker: mark it (pytest.mark.{MARKER}) so the fast tier leaves it out"
        )
        UNMARKED.append(message)
        raise UnmarkedProcessError(message)
    _popen_init(self, *args, **kwargs)


def install() -> None:
    subprocess.Popen.__init__ = _guarded_init  # type: ignore[method-assign]


@contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    _current.append(item)
    try:
        yield
    finally:
        _current.pop()


def drain_unmarked() -> list[str]:
    found = list(UNMARKED)
    UNMARKED.clear()
    return found
