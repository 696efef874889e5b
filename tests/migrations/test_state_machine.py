"""The bootstrap's state machine: the transition table, its documentation, and
real runs of the package that drive every transition in it."""

from __future__ import annotations

import ast
import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic_lockstep import Bootstrap, MigrationConfig, MigrationFailed, Phase
from alembic_lockstep.commands import migrate
from alembic_lockstep.holds import Hold
from alembic_lockstep.lock import lock_key
from alembic_lockstep.status import (
    TRANSITIONS,
    IllegalTransition,
    MigrationStatus,
    Transition,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.configs import scenario_config
from tests.support.postgres import connect, create_database, drop_database, reading_configs
from tests.support.processes import PROJECT_ROOT
from tests.support.revisions import REVISIONS

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
STATUS_MODULE = PROJECT_ROOT / "service" / "migrations" / "status.py"
LOCK_NAME = "state-machine-test"

# How each transition is made on a status.
MOVES: dict[Transition, Callable[[MigrationStatus], None]] = {
    Transition.CHECK: lambda status: status.check(),
    Transition.LOSE_DATABASE: lambda status: status.lose_database("refused"),
    Transition.WAIT_FOR_LOCK: lambda status: status.wait_for_lock(None),
    Transition.MIGRATE: lambda status: status.migrate(),
    Transition.WAIT_FOR_SCHEMA: lambda status: status.wait_for_schema(),
    Transition.HOLD: lambda status: status.held(
        Hold("a_revision", "cancelled", datetime.now(UTC), "host pid 1"), "held"
    ),
    Transition.READY_BY_MANIFEST: lambda status: status.ready_by_manifest(),
    Transition.READY: lambda status: status.reach_head(),
    Transition.READY_AHEAD: lambda status: _reach_head_ahead(status),
    Transition.SCHEMA_CHANGED: lambda status: status.schema_changed("downgraded"),
    Transition.SCHEMA_RESTORED: lambda status: status.schema_restored(),
    Transition.FAIL: lambda status: status.fail("broken", "error"),
    Transition.RECOVER: lambda status: status.recover(),
    Transition.STOP: lambda status: status.stop("stopped while waiting"),
}


def _reach_head_ahead(status: MigrationStatus) -> None:
    status.observe((), [], ahead=True)
    status.reach_head()


def status_in(phase: Phase) -> MigrationStatus:
    """A status brought to `phase` by legal transitions only (the shortest way)."""
    paths: dict[Phase, list[Transition]] = {Phase.STARTING: []}
    frontier = [Phase.STARTING]
    while frontier:
        current = frontier.pop(0)
        for transition, (sources, target) in TRANSITIONS.items():
            if current in sources and target not in paths:
                paths[target] = [*paths[current], transition]
                frontier.append(target)
    status = MigrationStatus()
    for transition in paths[phase]:
        MOVES[transition](status)
    assert status.phase is phase
    return status


def test_every_phase_is_reachable_and_every_transition_has_a_method() -> None:
    assert set(MOVES) == set(Transition) == set(TRANSITIONS)
    for phase in Phase:
        status_in(phase)


@pytest.mark.parametrize("transition", list(Transition))
@pytest.mark.parametrize("phase", list(Phase))
def test_a_transition_moves_only_from_the_phases_of_its_row(
    phase: Phase, transition: Transition
) -> None:
    status = status_in(phase)
    sources, target = TRANSITIONS[transition]
    before = (status.phase, status.error, len(status.history))
    if phase in sources:
        MOVES[transition](status)
        assert status.phase is target
        assert status.history[-1] == (phase, transition, target)
    else:
        with pytest.raises(
            IllegalTransition, match=f"{transition.value} is not a transition from {phase.value}"
        ):
            MOVES[transition](status)
        assert (status.phase, status.error, len(status.history)) == before


def test_the_phase_cannot_be_set_from_outside() -> None:
    status = MigrationStatus()
    with pytest.raises(AttributeError):
        status.phase = Phase.READY  # type: ignore[misc]


def test_no_module_but_the_status_writes_the_phase() -> None:
    """Every change of phase goes through status.py's transitions."""
    writers = []
    for path in (PROJECT_ROOT / "service").rglob("*.py"):
        if path == STATUS_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in {"phase", "_phase"}:
                    writers.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert writers == []


def rendered_table() -> str:
    lines = [f"{'transition':<20}{'to':<23}from"]
    for transition, (sources, target) in TRANSITIONS.items():
        names = ", ".join(phase.value for phase in Phase if phase in sources)
        wrapped = textwrap.wrap(names, width=50)
        lines.append(f"{transition.value:<20}{target.value:<23}{wrapped[0]}")
        lines += [" " * 43 + line for line in wrapped[1:]]
    return "\n".join(lines)


def test_the_module_docstring_and_the_documentation_show_the_table() -> None:
    import alembic_lockstep.status

    table = rendered_table()
    assert textwrap.indent(table, "    ") in (alembic_lockstep.status.__doc__ or "")
    page = PROJECT_ROOT / "docs" / "operations" / "bootstrap.md"
    assert f"```\n{table}\n```" in page.read_text()


# Real runs of the package, on their own databases.


def config_for(url: URL, alembic_config: Path = ALEMBIC_INI, **options: object) -> MigrationConfig:
    values: dict[str, object] = {
        "lock_name": LOCK_NAME,
        "application_name": "state-machine-test",
        "exit_on_failure": False,
        "poll_interval": 0.2,
        "retry_max_interval": 0.3,
        "connect_timeout": 2.0,
    }
    values.update(options)
    return MigrationConfig(migration_url=url, alembic_config=alembic_config, **values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(config: MigrationConfig) -> AsyncIterator[Bootstrap]:
    """The bootstrap of `config` running in a task, cancelled at the end."""
    engine = create_async_engine(config.migration_url, connect_args={"timeout": 2})
    bootstrap = Bootstrap(config, engine)
    task = asyncio.create_task(bootstrap.run())
    try:
        yield bootstrap
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError, MigrationFailed):
            await task
        await engine.dispose()


async def reaches(bootstrap: Bootstrap, phase: Phase, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while bootstrap.status.phase is not phase:  # noqa: ASYNC110 (the bootstrap runs beside)
            await asyncio.sleep(0.02)


@asynccontextmanager
async def database(admin_url: URL, template: str | None = None) -> AsyncIterator[URL]:
    url = await create_database(admin_url, template=template)
    try:
        yield url
    finally:
        await drop_database(admin_url, url.database or "")


def transitions_of(bootstrap: Bootstrap) -> list[Transition]:
    return [transition for _, transition, _ in bootstrap.status.history]


async def test_real_runs_drive_every_transition_of_the_table(
    admin_url: URL, migrated_template: str
) -> None:
    seen: set[Transition] = set()

    # An empty database: check, migrate, check, ready.
    async with database(admin_url) as url, running(config_for(url)) as bootstrap:
        await reaches(bootstrap, Phase.READY)
        # The manifest's check, the first check of the scripts path, the check
        # under the lock.
        assert transitions_of(bootstrap) == [
            Transition.CHECK,
            Transition.CHECK,
            Transition.CHECK,
            Transition.MIGRATE,
            Transition.CHECK,
            Transition.READY,
        ]
        seen |= set(transitions_of(bootstrap))

    # At the manifest's heads: the fast path; then a downgrade behind its back,
    # and back at head.
    async with database(admin_url, migrated_template) as url, running(config_for(url)) as bootstrap:
        await reaches(bootstrap, Phase.READY)
        assert transitions_of(bootstrap) == [Transition.CHECK, Transition.READY_BY_MANIFEST]
        await set_revision(url, REVISIONS[-2])
        await reaches(bootstrap, Phase.SCHEMA_CHANGED)
        await set_revision(url, REVISIONS[-1])
        await reaches(bootstrap, Phase.READY)
        assert transitions_of(bootstrap)[2:] == [
            Transition.SCHEMA_CHANGED,
            Transition.SCHEMA_RESTORED,
        ]
        seen |= set(transitions_of(bootstrap))

    # The lock held elsewhere: waiting for it; a migrator under another lock
    # name brings the schema to head meanwhile: ready without the lock.
    async with (
        database(admin_url) as url,
        holding_lock(url),
        running(config_for(url)) as bootstrap,
    ):
        await reaches(bootstrap, Phase.WAITING_FOR_LOCK)
        assert await migrate(config_for(url, lock_name="another-lock"), None) == 0
        await reaches(bootstrap, Phase.READY)
        assert transitions_of(bootstrap)[-2:] == [Transition.WAIT_FOR_LOCK, Transition.READY]
        seen |= set(transitions_of(bootstrap))

    # Stopped while waiting for the lock.
    async with database(admin_url) as url, holding_lock(url):
        async with running(config_for(url)) as bootstrap:
            await reaches(bootstrap, Phase.WAITING_FOR_LOCK)
        assert bootstrap.status.phase is Phase.STOPPED
        assert transitions_of(bootstrap)[-1] is Transition.STOP
        seen |= set(transitions_of(bootstrap))

    # A process that does not migrate waits for the schema.
    async with (
        database(admin_url) as url,
        running(config_for(url, migrate_on_startup=False)) as bootstrap,
    ):
        await reaches(bootstrap, Phase.WAITING_FOR_SCHEMA)
        assert await migrate(config_for(url), None) == 0
        await reaches(bootstrap, Phase.READY)
        seen |= set(transitions_of(bootstrap))
        assert Transition.WAIT_FOR_SCHEMA in seen

    # Ahead of this code on its own line (a rolled-back deploy).
    async with database(admin_url, migrated_template) as url:
        assert await migrate(config_for(url, scenario_config("locking")), None) == 0
        async with running(config_for(url)) as bootstrap:
            await reaches(bootstrap, Phase.READY)
            assert transitions_of(bootstrap)[-1] is Transition.READY_AHEAD
            assert bootstrap.status.schema_ahead
            seen |= set(transitions_of(bootstrap))

    # A revision that fails.
    async with (
        database(admin_url, migrated_template) as url,
        running(config_for(url, scenario_config("failing"))) as bootstrap,
    ):
        await reaches(bootstrap, Phase.FAILED)
        assert transitions_of(bootstrap)[-2:] == [Transition.MIGRATE, Transition.FAIL]
        seen |= set(transitions_of(bootstrap))

    # A revision that cannot get its locks (a report holds its table): failed;
    # the report ends, another process migrates: ready again, no restart.
    async with database(admin_url, migrated_template) as url:
        locking = config_for(
            url, scenario_config("locking"), lock_timeout=0.1, lock_retries=0, poll_interval=0.1
        )
        async with running(locking) as bootstrap:
            async with reading_configs(url):
                await reaches(bootstrap, Phase.FAILED)
            assert bootstrap.status.failure == "lock_timeout"
            assert await migrate(config_for(url, scenario_config("locking")), None) == 0
            await reaches(bootstrap, Phase.READY)
            assert transitions_of(bootstrap)[-4:] == [
                Transition.MIGRATE,
                Transition.FAIL,
                Transition.RECOVER,
                Transition.READY,
            ]
            seen |= set(transitions_of(bootstrap))

    # A revision to apply is held (an operator cancelled it): held until the
    # hold is lifted, then migrated.
    async with database(admin_url, migrated_template) as url:
        await execute(
            url,
            "INSERT INTO schema_migration_holds (revision, reason, held_by) "
            "VALUES ('test_locking', 'cancelled', 'a test')",
        )
        async with running(config_for(url, scenario_config("locking"))) as bootstrap:
            await reaches(bootstrap, Phase.HELD)
            assert bootstrap.status.as_json()["hold"]["revision"] == "test_locking"  # type: ignore[index]
            await execute(url, "UPDATE schema_migration_holds SET lifted_at = now()")
            await reaches(bootstrap, Phase.READY)
            assert Transition.HOLD in transitions_of(bootstrap)
            seen |= set(transitions_of(bootstrap))

    # A database that refuses connections.
    closed = admin_url.set(host="127.0.0.1", port=1)
    async with running(config_for(closed)) as bootstrap:
        await reaches(bootstrap, Phase.WAITING_FOR_DATABASE)
        seen |= set(transitions_of(bootstrap))

    assert seen == set(Transition)


async def execute(url: URL, statement: str) -> None:
    connection = await connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def set_revision(url: URL, revision: str) -> None:
    connection = await connect(url)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await connection.close()


@asynccontextmanager
async def holding_lock(url: URL) -> AsyncIterator[None]:
    connection = await connect(url)
    try:
        assert await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(LOCK_NAME))
        yield
    finally:
        await connection.close()
