"""A write whose COMMIT the database never confirms: PostgreSQL may keep it
(a synchronous standby that is gone: the commit is made locally, and the wait
for the standby is what the request's timeout cuts). Such an answer must not
tell the client to retry, as an unreachable database's does: the client would
write twice."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.db.embedded import EmbeddedPostgres
from tests.support.api import JSONAPI, create_account_over_http, document
from tests.support.configs import shared_folder
from tests.support.postgres import connect, service_url
from tests.support.processes import (
    OPERATOR_TOKEN,
    ServiceProcess,
    free_port,
    service_environment,
)

pytestmark = pytest.mark.processes


async def test_a_commit_never_confirmed_is_answered_as_unknown_not_as_retry(
    tmp_path: Path,
) -> None:
    with shared_folder() as folder:
        server = EmbeddedPostgres(folder / "unconfirmed", port=free_port())
        url = server.start()
        process = ServiceProcess.uvicorn(
            service_environment(
                DATABASE_URL=service_url(url),
                OPERATOR_TOKEN=OPERATOR_TOKEN,
                REQUEST_STATEMENT_TIMEOUT="1",
            ),
            tmp_path / "unconfirmed.log",
        )
        admin = None
        try:
            process.wait_for_phase("ready")
            key = create_account_over_http(process.port or 0, "Unconfirmed")
            headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}

            def create(config_key: str, name: str) -> httpx.Response:
                return httpx.post(
                    f"http://127.0.0.1:{process.port}/v1/configs",
                    headers=headers,
                    json=document("configs", {"key": config_key, "name": name}),
                    timeout=30,
                )

            confirmed = create("confirmed", "Confirmed")
            assert confirmed.status_code == 201, confirmed.text
            admin = await connect(url)
            await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'gone_standby'")
            await admin.execute("SELECT pg_reload_conf()")
            answer = create("unconfirmed", "Unconfirmed")
            assert answer.status_code == 503, answer.text
            detail = answer.json()["errors"][0]["detail"]
            assert "may have been made" in detail, detail
            assert "retry-after" not in answer.headers
            # Kept all the same: the client must read before writing again.
            kept = await admin.fetchval("SELECT count(*) FROM configs WHERE key = 'unconfirmed'")
            assert kept == 1
            assert "did not confirm a commit" in process.logs()
            assert key not in process.logs()
            # Once no standby is waited for, writes are answered as before.
            await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await admin.execute("SELECT pg_reload_conf()")
            again = create("confirmed", "Twice")
            assert again.status_code == 409, again.text
        finally:
            if admin is not None:
                await admin.close()
            process.stop()
            server.stop()
