"""The heads manifest (alembic_lockstep/heads.py): up to date with the scripts, ignored
when the files differ from it, and a stale one is caught after startup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from alembic_lockstep.heads import files_digest, read_heads, write_manifest
from alembic_lockstep.scripts import load_revisions
from sqlalchemy.engine import URL

from tests.support.configs import scenario_config, settings_for
from tests.support.processes import PROJECT_ROOT, run_python
from tests.support.readiness import running_app, wait_for_phase
from tests.support.revisions import HEAD, REVISIONS

CONFIG = PROJECT_ROOT / "alembic.ini"


@pytest.mark.processes
def test_the_manifest_names_the_heads_the_scripts_have() -> None:
    assert read_heads(CONFIG) == load_revisions(CONFIG).heads == (HEAD,)
    result = run_python("-m", "service", "db", "heads")
    assert result.returncode == 0, result.stdout + result.stderr


def copy_of_the_migrations(folder: Path) -> Path:
    shutil.copy(CONFIG, folder / "alembic.ini")
    shutil.copytree(
        PROJECT_ROOT / "alembic", folder / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder / "alembic.ini"


def test_a_manifest_that_does_not_match_the_files_is_not_used(tmp_path: Path) -> None:
    config = copy_of_the_migrations(tmp_path)
    assert read_heads(config) == (HEAD,)
    revision = next((tmp_path / "alembic" / "versions").glob("*0009*.py"))
    revision.rename(revision.with_name("20261127_0009_renamed.py"))
    assert read_heads(config) is None
    revision.with_name("20261127_0009_renamed.py").rename(revision)
    assert read_heads(config) == (HEAD,)
    (revision.parent / "20261127_0010_new.py").write_text("")
    assert read_heads(config) is None
    # Scenario configs add version locations: their listing is not the manifest's.
    assert read_heads(scenario_config("slow")) is None


@pytest.mark.processes
async def test_a_stale_manifest_fails_readiness_once_the_scripts_are_read(
    empty_database: URL, tmp_path: Path
) -> None:
    config = copy_of_the_migrations(tmp_path)
    before_head = REVISIONS[-2]
    manifest = {"heads": [before_head], "files": files_digest(config)}
    (tmp_path / "alembic" / "heads.json").write_text(json.dumps(manifest))
    result = run_python(
        "-m", "alembic", "-c", str(config), "upgrade", before_head, url=empty_database
    )
    assert result.returncode == 0, result.stderr[-2000:]
    async with running_app(settings_for(empty_database, alembic_config=config)) as client:
        body = await wait_for_phase(client, "failed")
    assert "heads manifest names" in body["error"]
    assert HEAD in body["error"]


async def test_a_revision_in_a_sub_folder_is_seen_with_recursive_version_locations(
    migrated_database: URL, tmp_path: Path
) -> None:
    """Alembic loads sub-folders with recursive_version_locations = true: so does
    the manifest's digest, and a revision added there is migrated, not missed."""
    config = copy_of_the_migrations(tmp_path)
    config.write_text(
        config.read_text().replace(
            "[alembic]\n", "[alembic]\nrecursive_version_locations = true\n", 1
        )
    )
    write_manifest(config, (HEAD,))
    assert read_heads(config) == (HEAD,)
    later = tmp_path / "alembic" / "versions" / "later"
    later.mkdir()
    (later / "test_in_sub_folder.py").write_text(
        f'"""Test only: a revision in a sub-folder."""\n\n'
        f'revision = "test_in_sub_folder"\ndown_revision = "{HEAD}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    assert read_heads(config) is None
    async with running_app(settings_for(migrated_database, alembic_config=config)) as client:
        body = await wait_for_phase(client, "ready")
    assert body["current_revision"] == "test_in_sub_folder"


# A process serving at head: its bootstrap's checks while serving, printed
# once the verification is reported, with whether Alembic was ever imported.
_SERVING_AT_HEAD = """
import asyncio, sys
import alembic_lockstep.bootstrap as bootstrap
bootstrap.CHECK_SCRIPTS_AFTER = 0.1
from service.app import create_app

async def main():
    app = create_app()
    async with app.router.lifespan_context(app) as state:
        status = state["bootstrap"].status
        for _ in range(1200):
            if status.verification is not None:
                break
            await asyncio.sleep(0.05)
        print(status.verification)
        print("alembic" in sys.modules)

asyncio.run(main())
"""


@pytest.mark.processes
def test_a_process_serving_at_head_checks_its_scripts_without_importing_alembic(
    migrated_database: URL,
) -> None:
    """The scripts are read by a short-lived process of their own: the
    serving one keeps about 10 MiB less (docs/benchmarks/api.notes.md), and
    the checks still run (the checksums of every revision)."""
    result = run_python("-c", _SERVING_AT_HEAD, url=migrated_database, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    verification, imported = result.stdout.strip().splitlines()[-2:]
    assert verification == f"{len(REVISIONS)} applied revisions match their files"
    assert imported == "False", result.stdout
