"""How a worker process whose migration failed ends, so that no supervisor
starts it again to fail the same way.

The supervisors restart workers that exit, with one exception each:
- uvicorn's (uvicorn/supervisors/multiprocess.py, `keep_subprocess_alive`)
  starts a new worker for any exit status but 3, its STARTUP_FAILURE; on 3 it
  stops every worker and itself;
- gunicorn's arbiter halts the whole server, with that status, when a worker
  exits with 3 (WORKER_BOOT_ERROR) or 4 (APP_LOAD_ERROR).
A failed migration fails the same way in a new worker, so a worker that would
be restarted ends with 3 under uvicorn's supervisor (its workers are
multiprocessing children) and with 4 everywhere else (a single process, a
gunicorn worker): one attempt per worker, then the whole server stops. A
supervisor of the application's own can learn why from the failure report
(FAILURE_REPORT_VARIABLE names the file each failed worker appends to).
"""

from __future__ import annotations

import logging
import multiprocessing
import os

logger = logging.getLogger(__name__)

# Exit status of a process whose migration failed (uvicorn itself uses 1 and 3).
EXIT_MIGRATION_FAILED = 4
# uvicorn's STARTUP_FAILURE (uvicorn.config), the one status its supervisor
# does not answer with a new worker; written here so that the bootstrap does
# not need uvicorn (only the runner does).
STARTUP_FAILURE = 3
# Where a worker writes why its migration failed, for the supervisor.
FAILURE_REPORT_VARIABLE = "ALEMBIC_LOCKSTEP_FAILURE_REPORT"


def supervised_by_uvicorn() -> bool:
    """True in a worker of uvicorn's multiprocess supervisor."""
    return multiprocessing.parent_process() is not None


def exit_after_failed_migration(reason: str) -> None:
    """End this process so that no supervisor restarts it (module docstring)."""
    status = STARTUP_FAILURE if supervised_by_uvicorn() else EXIT_MIGRATION_FAILED
    report = os.environ.get(FAILURE_REPORT_VARIABLE)
    if report:
        with open(report, "a") as written:
            written.write(f"worker {os.getpid()}: {reason}\n")
    logger.error("exiting with status %d: the migration failed", status)
    logging.shutdown()
    # uvicorn exits 0 after a clean shutdown whatever the lifespan did.
    os._exit(status)
