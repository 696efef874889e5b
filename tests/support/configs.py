"""Settings and waits for in-process apps, and the test-only migration scenarios."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL

from settings import Settings
from tests.support.postgres import service_url
from tests.support.processes import OPERATOR_TOKEN, PROJECT_ROOT

TEST_SCENARIOS = PROJECT_ROOT / "tests" / "scenarios"


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A temporary folder that the embedded server's own user may enter when we are
    root (pytest's tmp_path lives in a folder only its owner may enter)."""
    folder = Path(tempfile.mkdtemp(prefix="platform-service-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def settings_for(url: URL, **overrides: object) -> Settings:
    """Settings for an in-process app on `url`; failures keep the test process alive."""
    values: dict[str, object] = {
        "database_url": service_url(url),
        "migration_exit_on_failure": False,
        "database_retry_max_interval": 0.5,
        "readiness_poll_interval": 0.2,
        "operator_token": OPERATOR_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def scenario_config(scenario: str) -> Path:
    """alembic.ini of a test-only migration scenario under tests/scenarios."""
    return TEST_SCENARIOS / scenario / "alembic.ini"


async def eventually(condition, within: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Await `condition()` until truthy; fail after `within` seconds."""
    async with asyncio.timeout(within):
        while not (result := await condition()):  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(interval)
        return result
