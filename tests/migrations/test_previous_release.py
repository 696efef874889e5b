"""The previous release on the new schema (`python -m release_check`): a copy
of this project in a new git repository is the release; a commit adding one
revision makes the new head. The check runs as CI runs it: a real process,
real git, the release's real server (two workers) on a real database."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from release_check.release import previous_release
from release_check.walk import walked_operations
from service.app import create_app
from tests.support.configs import settings_for
from tests.support.processes import PROCESS_OUTPUTS, PROJECT_ROOT, service_environment
from tests.support.revisions import HEAD

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

REVISION = '''"""Test only: {doc}

Revision ID: test_release_check
Revises: {head}
"""

import sqlalchemy as sa

from alembic import op

revision = "test_release_check"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''

DROP_COLUMN = '    op.drop_column("configs", "description")'
EXPAND_ONLY = (
    '    op.add_column("environments", sa.Column("description", sa.Text(), nullable=True))'
)
# A NOT NULL column the previous release does not write: its inserts fail.
NOT_NULL_UNWRITTEN = """    op.add_column(
        "configs", sa.Column("owner_note", sa.Text(), server_default="none", nullable=False)
    )
    op.alter_column("configs", "owner_note", server_default=None)"""


def git(repository: Path, *arguments: str) -> str:
    identity = ["-c", "user.name=release check", "-c", "user.email=check@example.com"]
    result = subprocess.run(
        ["git", *identity, *arguments], cwd=repository, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def commit_all(repository: Path, message: str) -> str:
    git(repository, "add", "-A")
    git(repository, "commit", "-q", "-m", message)
    return git(repository, "rev-parse", "HEAD")


@pytest.fixture
def release_repository(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose only commit is this project as it is now: the release."""
    repository = tmp_path / "repository"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        source = PROJECT_ROOT / name
        if source.is_file():
            (repository / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repository / name)
    git(repository, "init", "-q", "-b", "main")
    return repository, commit_all(repository, "the release")


def add_revision(repository: Path, doc: str, body: str) -> str:
    path = repository / "alembic" / "versions" / "29990101_test_release_check.py"
    path.write_text(REVISION.format(doc=doc, head=HEAD, body=body))
    heads = subprocess.run(
        [sys.executable, "-m", "service", "db", "heads", "--write"],
        cwd=repository, env=service_environment(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert heads.returncode == 0, heads.stderr
    return commit_all(repository, f"add a revision: {doc}")


def operations_of_this_code() -> set[str]:
    document = create_app(settings_for(URL.create("postgresql+asyncpg", database="x"))).openapi()
    return walked_operations(document)


def check(repository: Path, admin_url: URL, *arguments: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "release_check", "--json", *arguments],
        cwd=repository,
        env=service_environment(
            RELEASE_CHECK_DATABASE_URL=admin_url.render_as_string(hide_password=False)
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    PROCESS_OUTPUTS.append(result.stdout + result.stderr)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def check_revision(
    release_repository: tuple[Path, str], admin_url: URL, doc: str, body: str
) -> tuple[int, dict[str, Any]]:
    """Add a revision after the release, then run the check."""
    repository, _ = release_repository
    add_revision(repository, doc, body)
    return check(repository, admin_url)


def test_a_revision_dropping_a_column_the_release_reads_fails_the_check(
    release_repository: tuple[Path, str], admin_url: URL
) -> None:
    status, outcome = check_revision(release_repository, admin_url, "drop", DROP_COLUMN)
    assert status == 1, outcome
    assert outcome["verdict"] == "failed"
    assert outcome["release"].startswith(release_repository[1][:12])
    assert outcome["revisions"] == ["test_release_check"]
    assert "test_release_check" in outcome["reason"]
    failing = "\n".join(outcome["failures"])
    assert "GET /v1/configs /v1/configs: 500 (was 200)" in failing, json.dumps(outcome)[-3000:]
    assert "POST /v1/configs /v1/configs: 500 (was 201)" in failing
    assert "/v1/users" not in failing, "routes that do not touch the column still pass"
    assert any("description" in line for line in outcome["server_errors"])


def test_the_expand_only_version_passes(
    release_repository: tuple[Path, str], admin_url: URL
) -> None:
    status, outcome = check_revision(release_repository, admin_url, "expand", EXPAND_ONLY)
    assert status == 0, outcome
    assert outcome["verdict"] == "passed"
    assert outcome["failures"] == []
    assert outcome["revisions"] == ["test_release_check"]
    # Both walks called every operation of the release's OpenAPI document, once each.
    assert outcome["operations"] == len(operations_of_this_code())
    assert outcome["requests"] == 2 * outcome["operations"]
    assert set(outcome["seconds"]) >= {
        "seed walk on the release's schema",
        "walk on the new schema",
    }


def test_a_not_null_column_the_release_does_not_write_fails_the_check(
    release_repository: tuple[Path, str], admin_url: URL
) -> None:
    status, outcome = check_revision(release_repository, admin_url, "not null", NOT_NULL_UNWRITTEN)
    assert status == 1, outcome
    failing = "\n".join(outcome["failures"])
    assert "POST /v1/configs /v1/configs:" in failing
    assert "GET /v1/configs /v1/configs" not in failing, "reads still pass"


def test_the_release_is_the_parent_of_the_newest_commit_that_changed_the_revisions(
    release_repository: tuple[Path, str],
) -> None:
    repository, first = release_repository
    (repository / "NOTES").write_text("a change of code only\n")
    before_revision = commit_all(repository, "code only")
    added = add_revision(repository, "expand", EXPAND_ONLY)
    (repository / "NOTES").write_text("more code\n")
    commit_all(repository, "code only, after the revision")
    assert previous_release(repository) == (before_revision, added)
    assert first != before_revision


def test_nothing_to_check_when_the_release_has_every_revision(
    release_repository: tuple[Path, str], admin_url: URL
) -> None:
    repository, _ = release_repository
    status, outcome = check(repository, admin_url)
    assert (status, outcome["verdict"]) == (0, "skipped")
    assert "no earlier commit changed alembic/versions" in outcome["reason"]
    status, outcome = check(repository, admin_url, "--release", "HEAD")
    assert (status, outcome["verdict"]) == (0, "skipped")
    assert outcome["reason"] == "the release already has every revision"
