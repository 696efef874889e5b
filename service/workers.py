"""`python -m service --workers N`: uvicorn's supervisor, and the exit status it
ends with.

A worker whose migration failed ends so that no supervisor restarts it
(service/migrations/exits.py) and writes why to the failure report;
`python -m service` reads it and exits 4 itself; `uvicorn --workers N` exits 0
(uvicorn's choice for a supervisor that stopped), gunicorn 4.

uvicorn's workers also die with their supervisor (PR_SET_PDEATHSIG, Linux): a
supervisor killed with SIGKILL leaves no worker holding its port.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from service.migrations.exits import EXIT_MIGRATION_FAILED, FAILURE_REPORT_VARIABLE

logger = logging.getLogger("service.workers")

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
    with tempfile.TemporaryDirectory(prefix="platform-service-") as folder:
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
