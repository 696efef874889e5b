"""`python -m alembic_lockstep`: each command documented by --help, configured
from the adopter's settings object (--settings) or the environment, run on
the second app (tests/second_app) in its own folder, where nothing of the
service is importable."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy.engine import URL

from tests.support.postgres import service_url
from tests.support.second_app import REVISIONS, SECOND_APP, run_second_app_python

pytestmark = pytest.mark.processes

COMMANDS = ["serve", "migrate", "status", "history", "verify", "heads", "lint"]
SETTINGS = "notes.app:migration_config"


def lockstep(*arguments: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return run_second_app_python("-m", "alembic_lockstep", *arguments, variables=variables)


def test_help_documents_every_command() -> None:
    result = lockstep("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"\n    {command}" in result.stdout, result.stdout
        assert f"{command}" in result.stdout.split("positional arguments:")[-1]
    for command in COMMANDS:
        own = lockstep(command, "--help")
        assert own.returncode == 0, own.stderr
        assert own.stdout.startswith(f"usage: python -m alembic_lockstep {command}"), own.stdout


def test_commands_from_the_settings_object(empty_database: URL) -> None:
    url = service_url(empty_database.set(drivername="postgresql+asyncpg"))
    before = lockstep("--settings", SETTINGS, "status", "--json", NOTES_DATABASE_URL=url)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["pending"] == REVISIONS
    migrated = lockstep("--settings", SETTINGS, "migrate", NOTES_DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    # The progress, without any logging set-up.
    assert "applied revision notes_0001" in migrated.stderr
    status = lockstep("--settings", SETTINGS, "status", "--json", NOTES_DATABASE_URL=url)
    assert json.loads(status.stdout)["current_revision"] == [REVISIONS[-1]]
    history = lockstep("--settings", SETTINGS, "history", "--json", NOTES_DATABASE_URL=url)
    assert [step["revision"] for step in json.loads(history.stdout)] == REVISIONS[::-1]
    verified = lockstep("--settings", SETTINGS, "verify", NOTES_DATABASE_URL=url)
    assert verified.returncode == 0, verified.stderr


def test_commands_from_the_environment(empty_database: URL) -> None:
    url = service_url(empty_database.set(drivername="postgresql"))
    environment = {
        "ALEMBIC_LOCKSTEP_DATABASE_URL": url,
        "ALEMBIC_LOCKSTEP_ALEMBIC_CONFIG": str(SECOND_APP / "alembic.ini"),
        "ALEMBIC_LOCKSTEP_LOCK_NAME": "notes-app:schema-migrations",
        # The notes app's env.py builds its own configuration for the alembic
        # command line; the bootstrap's connection is the one it uses here.
        "NOTES_DATABASE_URL": url,
    }
    migrated = lockstep("migrate", **environment)
    assert migrated.returncode == 0, migrated.stderr
    status = lockstep("status", "--json", **environment)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current_revision"] == [REVISIONS[-1]]


def test_heads_needs_no_database() -> None:
    # An unreachable database: heads reads the revision scripts only. The notes
    # app keeps no heads manifest, and the check says how to write one.
    result = lockstep(
        "--settings", SETTINGS, "heads", NOTES_DATABASE_URL="postgresql+asyncpg://x@127.0.0.1:1/x"
    )
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "is out of date (heads notes_0002)" in output
    assert "run `python -m alembic_lockstep heads --write`" in output


@pytest.mark.parametrize(
    ("arguments", "variables", "expected"),
    [
        (["status"], {}, "no settings: pass --settings"),
        (["--settings", "notes.app", "status"], {}, "expected module:name"),
        (["--settings", "notes.app:nowhere", "status"], {}, "nowhere"),
        (["--settings", "no_such_module:x", "status"], {}, "no_such_module"),
        (["--settings", "notes.models:notes", "status"], {}, "not a MigrationConfig"),
        (["status"], {"ALEMBIC_LOCKSTEP_DATABASE_URL": "not a url \x7f"}, "is not a database URL"),
        (
            ["status"],
            {"ALEMBIC_LOCKSTEP_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1/"},
            "names no database",
        ),
        (["serve", "notes.app:app", "--workers", "0"], {}, "must be a whole number"),
        (["serve", "notes.app:app", "--port", "٨٠"], {}, "is not a port number"),
        (["history", "--limit", "²"], {}, "must be a whole number"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    arguments: list[str], variables: dict[str, str], expected: str
) -> None:
    result = lockstep(*arguments, ALEMBIC_LOCKSTEP_SETTINGS="", **variables)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
