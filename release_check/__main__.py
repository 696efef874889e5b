"""python -m release_check [--release REF] [--database-url URL] [--json]

Checks that the previous release (see release_check/release.py) serves every
route of its API on a database migrated to this code's head. The database
server: --database-url or RELEASE_CHECK_DATABASE_URL (a superuser URL: a
database is created and dropped), else the embedded PostgreSQL. Exit 0 when
it passed or there was nothing to check, 1 when it failed, 2 when it could
not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic_lockstep import AcceptanceFileError, EditRecordError
from sqlalchemy.engine import URL

from release_check.check import run
from release_check.release import ReleaseError
from settings import parse_database_url

REPOSITORY = Path(__file__).resolve().parent.parent


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m release_check", description=__doc__)
    parser.add_argument(
        "--release", help="the release to check (default: see release_check/release.py)"
    )
    parser.add_argument("--database-url", default=os.environ.get("RELEASE_CHECK_DATABASE_URL"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args(arguments)
    try:
        with _server(options.database_url) as admin_url:
            outcome = run(REPOSITORY, options.release, admin_url)
    except (ReleaseError, AcceptanceFileError, EditRecordError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(vars(outcome), indent=2) if options.json else outcome.describe())
    return 1 if outcome.verdict == "failed" else 0


@contextmanager
def _server(database_url: str | None) -> Iterator[URL]:
    if database_url:
        yield parse_database_url(database_url)
        return
    from service.db.embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
