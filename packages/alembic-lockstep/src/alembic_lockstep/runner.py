"""The runner: uvicorn's multi-worker supervisor, with an exit status that says
when a worker's migration failed.

    python -m alembic_lockstep serve APP [--factory] [--host H] [--port P] [--workers N]

A worker whose migration failed ends so that no supervisor restarts it
(exits.py) and appends why to the failure report; the runner reads it and exits
4 itself. Plain `uvicorn --workers N` exits 0 then (uvicorn's choice for a
supervisor that stopped), gunicorn with uvicorn workers 4, a single uvicorn
process 4.

uvicorn's workers also die with their supervisor (PR_SET_PDEATHSIG, Linux): a
supervisor killed with SIGKILL leaves no worker holding its port; an app calls
`die_with_supervisor()` when it starts (the runner cannot reach into a worker
before the app is imported).

Needs uvicorn: the `runner` extra.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from alembic_lockstep.exits import (
    EXIT_MIGRATION_FAILED,
    FAILURE_REPORT_VARIABLE,
    STARTUP_FAILURE,
)

__all__ = ["die_with_supervisor", "serve", "supervise"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_supervisor() -> None:
    """In a worker of uvicorn's supervisor: get SIGTERM (a graceful shutdown)
    when the supervisor dies, even by SIGKILL."""
    parent = multiprocessing.parent_process()
    if parent is None or sys.platform != "linux":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The supervisor may have died before the request took effect.
    if os.getppid() != parent.pid:
        signal.raise_signal(signal.SIGTERM)


def supervise(config: uvicorn.Config) -> int:
    """Run `config.workers` workers under uvicorn's supervisor; the exit status:
    4 when a worker's migration failed, 3 when a worker failed to start for
    another reason, 0 after SIGTERM or SIGINT."""
    with tempfile.TemporaryDirectory(prefix="alembic-lockstep-") as folder:
        report = Path(folder) / "failure-report"
        os.environ[FAILURE_REPORT_VARIABLE] = str(report)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        if report.exists():
            logger.error(
                "exiting with status %d: the migration failed (%s)",
                EXIT_MIGRATION_FAILED,
                report.read_text().strip().replace("\n", "; "),
            )
            return EXIT_MIGRATION_FAILED
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        return STARTUP_FAILURE
    return 0


def serve(config: uvicorn.Config) -> int:
    """Serve `config.app`: under the supervisor with more than one worker,
    else in this process; the exit status as `supervise` gives it (a single
    process whose migration failed exits 4 from inside, exits.py)."""
    if config.workers > 1:
        return supervise(config)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else STARTUP_FAILURE
