"""Discovery in bounded batches, through a real server with two workers: a
request of 1,000 chained configs holds the account's tree lock for one batch
at a time, so the account's other writers and discoveries get in between."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.api import JSONAPI, create_account_over_http
from tests.support.configs import shared_folder
from tests.support.pgbouncer import pgbouncer
from tests.support.postgres import service_url
from tests.support.processes import ServiceProcess, wait_for
from tests.support.servers import ready_server

WAIT = 120.0
CHAIN = 1000


@pytest.fixture(scope="module")
def server(module_database: URL) -> Iterator[ServiceProcess]:
    with ready_server(module_database, workers=2) as process:
        yield process


def _chain(prefix: str, length: int = CHAIN) -> dict[str, Any]:
    """A discovery of `length` configs, each the parent of the next."""
    configs: list[dict[str, Any]] = [{"id": f"{prefix}-0"}]
    configs += [{"id": f"{prefix}-{n}", "parent": f"{prefix}-{n - 1}"} for n in range(1, length)]
    return {"configs": configs}


def _discover(base: str, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
    return httpx.post(f"{base}/api/v1/configs/bulk", json=body, headers=headers, timeout=WAIT)


@pytest.mark.processes
def test_a_long_discovery_lets_the_accounts_other_writers_in(server: ServiceProcess) -> None:
    """While a discovery of 1,000 chained configs runs, a config created under
    its first one (which takes the same tree lock) is answered before the
    discovery is: it waited for one batch, not for the whole request."""
    base = f"http://127.0.0.1:{server.port}"
    key = create_account_over_http(server.port or 0, "Discovering")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": JSONAPI}
    finished = threading.Event()
    answers: list[httpx.Response] = []

    def discover() -> None:
        answers.append(_discover(base, key, _chain("long")))
        finished.set()

    thread = threading.Thread(target=discover, daemon=True)
    thread.start()
    wait_for(
        lambda: httpx.get(f"{base}/api/v1/configs/long-0", headers=headers).status_code == 200,
        WAIT,
        "the first batch committed",
        interval=0.02,
    )
    body = {
        "data": {"type": "config", "id": "between", "attributes": {"name": "B", "parent": "long-0"}}
    }
    created = httpx.post(f"{base}/api/v1/configs", json=body, headers=headers, timeout=WAIT)
    discovery_had_finished = finished.is_set()
    thread.join(WAIT)
    assert created.status_code == 201, created.text
    assert not discovery_had_finished
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json() == {"registered": CHAIN, "skipped": []}


@pytest.fixture(scope="module")
def pooled_server(module_database: URL) -> Iterator[ServiceProcess]:
    """The service through a transaction-pooling PgBouncer, as deployed."""
    with (
        shared_folder() as folder,
        pgbouncer(module_database, folder / "pgbouncer") as pooled,
        ready_server(
            pooled,
            workers=2,
            MIGRATION_DATABASE_URL=service_url(module_database),
            DATABASE_POOLER="transaction",
        ) as process,
    ):
        yield process


@pytest.mark.processes
@pytest.mark.parametrize("through", ["direct", "PgBouncer"])
def test_concurrent_discoveries_of_an_account_all_succeed(
    server: ServiceProcess, pooled_server: ServiceProcess, through: str
) -> None:
    """Four discoveries of the same 1,000 configs at once, on both workers:
    each succeeds, and together they register each config once."""
    if through == "PgBouncer":
        server = pooled_server
    base = f"http://127.0.0.1:{server.port}"
    key = create_account_over_http(server.port or 0, f"Racing discoveries {through}")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _discover(base, key, _chain("same")), range(4)))
    assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
    assert sum(answer.json()["registered"] for answer in answers) == CHAIN
