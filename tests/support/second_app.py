"""The second app (tests/second_app), an adopter of alembic-lockstep: where it
lives, the Python its processes run on, and running it.

The processes run in the app's folder with only that folder on their path, so
nothing of the service is importable to them. SECOND_APP_PYTHON names the
interpreter: CI (.ci/run) points it at a clean virtual environment holding the
library's wheel and nothing of the service; by default it is this
environment's (the library installed from its folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.processes import PROCESS_OUTPUTS, PROJECT_ROOT, service_environment

SECOND_APP = PROJECT_ROOT / "tests" / "second_app"
REVISIONS = ["notes_0001", "notes_0002"]
PYTHON = os.environ.get("SECOND_APP_PYTHON") or sys.executable


def run_second_app_python(
    *arguments: str, variables: Mapping[str, str] | None = None, cwd: Path = SECOND_APP
) -> subprocess.CompletedProcess[str]:
    environment = second_app_environment("postgresql+asyncpg://notes@127.0.0.1/notes", cwd)
    result = subprocess.run(
        [PYTHON, *arguments],
        cwd=cwd,
        env={**environment, **(variables or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    PROCESS_OUTPUTS.append(result.stdout + result.stderr)
    return result


def second_app_environment(url: str, folder: Path = SECOND_APP) -> dict[str, str]:
    # The notes app alone on the path: `notes` is its package; the project is not.
    environment = service_environment(NOTES_DATABASE_URL=url, PYTHONPATH=str(folder))
    for name in ("VIRTUAL_ENV", "PYTHONHOME"):
        environment.pop(name, None)
    return environment
