"""The service as it runs with no DATABASE_URL: on its embedded PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import ServiceProcess, service_environment


def serve(folder: Path, log: Path, *arguments: str, port: int | None = None) -> ServiceProcess:
    environment = service_environment(
        EMBEDDED_POSTGRES_DIR=str(folder / "postgres"), LOG_FORMAT="json"
    )
    return ServiceProcess.service(environment, log, *arguments, port=port)
