"""A revision whose autocommit block commits part of its work before the
revision is stamped runs again, in full, over that work.

Alembic commits the revision's transaction when an autocommit block begins
(a batched backfill, CREATE INDEX CONCURRENTLY) and the block's own steps as
they run; the version is stamped only at the end. A migrator killed between a
commit and the stamp leaves that work in place, and the next migrator starts
the revision over. Here each revision is stopped (the process exits at once,
as under SIGKILL) just after each such commit: as its autocommit block begins
and as it ends, upgrading and downgrading; then the step is run again in full,
and the schema, data and audit trail must be what a clean run leaves.

Deterministic, where the random kills (test_random_kills.py) sample moments.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from tests.support.postgres import create_database, drop_database
from tests.support.processes import PROJECT_ROOT, run_python
from tests.support.schema import snapshot

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

KILLED = 9

# Runs `alembic ARGUMENTS` and exits the process with status 9, without
# closing anything, at the given moment of the given autocommit block.
STOPPING_ALEMBIC = """
import os, sys
from contextlib import contextmanager
from alembic.config import main
from alembic.runtime.migration import MigrationContext

block, moment = int(sys.argv[1]), sys.argv[2]
original = MigrationContext.autocommit_block
blocks = 0

@contextmanager
def stopping_block(self):
    global blocks
    blocks += 1
    number = blocks
    with original(self):
        if (number, moment) == (block, "begun"):
            os._exit(9)
        yield
    if (number, moment) == (block, "ended"):
        os._exit(9)

MigrationContext.autocommit_block = stopping_block
main(argv=sys.argv[3:], prog="alembic")
"""


@dataclass(frozen=True)
class Step:
    revision: str
    direction: str  # "upgrade" or "downgrade"
    start: str  # the revision the step starts from
    target: str  # the revision it ends at
    blocks: int  # autocommit blocks in the step's function


def steps() -> Iterator[Step]:
    """Every step of the service's history that has an autocommit block."""
    scripts = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini")))
    for script in scripts.walk_revisions():
        down = script.down_revision
        assert down is None or isinstance(down, str), "the history is linear"
        for direction, start, target in (
            ("upgrade", down or "base", script.revision),
            ("downgrade", script.revision, down or "base"),
        ):
            source = inspect.getsource(getattr(script.module, direction))
            if count := source.count(".autocommit_block()"):
                yield Step(script.revision, direction, start, target, count)


STEPS = sorted(steps(), key=lambda step: (step.revision, step.direction))
CASES = [
    (step, block, moment)
    for step in STEPS
    for block in range(1, step.blocks + 1)
    for moment in ("begun", "ended")
]


def alembic(*arguments: str, url: URL) -> None:
    result = run_python("-m", "alembic", *arguments, url=url)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
async def starts(admin_url: URL) -> AsyncIterator[dict[Step, tuple[str, dict[str, object]]]]:
    """For each step: a database where it starts (to clone), and what a clean
    run of the step leaves."""
    found: dict[Step, tuple[str, dict[str, object]]] = {}
    made: list[URL] = []
    for step in STEPS:
        start = await create_database(admin_url)
        made.append(start)
        if step.start != "base":
            alembic("upgrade", step.start, url=start)
        clean = await create_database(admin_url, template=start.database)
        try:
            alembic(step.direction, step.target, url=clean)
            found[step] = (start.database or "", await snapshot(clean))
        finally:
            await drop_database(admin_url, clean.database or "")
    yield found
    for url in made:
        await drop_database(admin_url, url.database or "")


def test_the_history_has_steps_with_autocommit_blocks() -> None:
    # The revisions that backfill in batches and build indexes concurrently.
    assert {(step.revision, step.direction) for step in STEPS} >= {
        ("0006_auth_identity_backfill", "upgrade"),
        ("0007_auth_identity_constraints", "upgrade"),
        ("0008_drop_cognito_sub", "downgrade"),
        ("0012_config_item_types", "upgrade"),
    }


@pytest.mark.parametrize(
    ("step", "block", "moment"),
    CASES,
    ids=[f"{s.revision}-{s.direction}-block{b}-{m}" for s, b, m in CASES],
)
async def test_a_step_killed_after_a_commit_runs_again_over_its_work(
    step: Step,
    block: int,
    moment: str,
    starts: dict[Step, tuple[str, dict[str, object]]],
    admin_url: URL,
) -> None:
    template, clean = starts[step]
    url = await create_database(admin_url, template=template)
    try:
        stopped = run_python(
            "-c", STOPPING_ALEMBIC, str(block), moment, step.direction, step.target, url=url
        )
        assert stopped.returncode == KILLED, stopped.stderr[-3000:]
        assert (await snapshot(url))["version"] == (None if step.start == "base" else step.start)
        alembic(step.direction, step.target, url=url)
        assert await snapshot(url) == clean
    finally:
        await drop_database(admin_url, url.database or "")
