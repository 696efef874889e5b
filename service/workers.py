"""Worker processes: how a worker whose migration failed ends, and how
`python -m service --workers N` supervises its workers.

The supervisors restart workers that exit, with one exception each:
- uvicorn's (uvicorn/supervisors/multiprocess.py, `keep_subprocess_alive`)
  starts a new worker for any exit status but 3, its STARTUP_FAILURE; on 3 it
  stops every worker and itself;
- gunicorn's arbiter halts the whole server, with that status, when a worker
  exits with 3 (WORKER_BOOT_ERROR) or 4 (APP_LOAD_ERROR).
A failed migration fails the same way in a new worker, so a worker that would
be restarted ends with 3 under uvicorn's supervisor (its workers are
multiprocessing children) and with 4 everywhere else (a single process, a
gunicorn worker): one attempt per worker, then the whole server stops.
`python -m service` learns from the worker's report that it was the migration
and exits 4 itself; `uvicorn --workers N` exits 0 (uvicorn's choice for a
supervisor that stopped), gunicorn 4.

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

logger = logging.getLogger("service.workers")

# Exit status of a process whose migration failed (uvicorn itself uses 1 and 3).
EXIT_MIGRATION_FAILED = 4
# Where a worker writes why its migration failed, for `python -m service`.
FAILURE_REPORT_VARIABLE = "PLATFORM_SERVICE_FAILURE_REPORT"
_PR_SET_PDEATHSIG = 1


def _supervisor_pid() -> int | None:
    """The pid of uvicorn's supervisor when this process is one of its workers."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def die_with_supervisor() -> None:
    """In a worker of uvicorn's supervisor: get SIGTERM (a graceful shutdown)
    when the supervisor dies, even by SIGKILL."""
    supervisor = _supervisor_pid()
    if supervisor is None or sys.platform != "linux":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The supervisor may have died before the request took effect.
    if os.getppid() != supervisor:
        signal.raise_signal(signal.SIGTERM)


def exit_after_failed_migration(reason: str) -> None:
    """End this process so that no supervisor restarts it (module docstring)."""
    status = STARTUP_FAILURE if _supervisor_pid() is not None else EXIT_MIGRATION_FAILED
    report = os.environ.get(FAILURE_REPORT_VARIABLE)
    if report:
        with open(report, "a") as written:
            written.write(f"worker {os.getpid()}: {reason}\n")
    logger.error("exiting with status %d: the migration failed", status)
    logging.shutdown()
    # uvicorn exits 0 after a clean shutdown whatever the lifespan did.
    os._exit(status)


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
