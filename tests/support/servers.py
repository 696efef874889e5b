"""A real server for the tests of a module (on its `module_database`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL

from tests.support.configs import shared_folder
from tests.support.postgres import service_url
from tests.support.processes import ServiceProcess, service_environment, wait_for


@contextmanager
def ready_server(
    database: URL, *, shipped: bool = False, workers: int = 2, **variables: str
) -> Iterator[ServiceProcess]:
    """A ready server with two workers on `database`: uvicorn with the service's
    protocol, or (`shipped`) `python -m service` as the image runs it."""
    environment = service_environment(DATABASE_URL=service_url(database), **variables)
    with shared_folder() as folder:
        log = folder / "server.log"
        if shipped:
            process = ServiceProcess.service(environment, log, "--workers", str(workers))
        else:
            process = ServiceProcess.uvicorn(environment, log, workers=workers)
        try:
            wait_until_every_worker_is_ready(process, workers)
            yield process
        finally:
            process.stop()


def wait_until_every_worker_is_ready(process: ServiceProcess, workers: int) -> None:
    """Ready, in every worker: a readiness answer comes from one worker, and a
    request may reach any (on a busy machine the other may still be checking)."""
    try:
        process.wait_for_phase("ready")
        wait_for(
            lambda: len(process.pids_that_logged("schema at head")) >= workers,
            60,
            f"all {workers} workers at head",
        )
    except AssertionError as error:
        # What each worker did instead: a loaded run once timed out here with
        # nothing to say why.
        raise AssertionError(f"{error}\n{process.logs()[-20000:]}") from None
