"""Rate limits through the `limits` package: shared by the processes of a
fleet through a real Redis (RATE_LIMIT_STORAGE_URL), and still held, per
process, when that Redis stops answering. Real servers with two workers each,
new connections for each request so that every worker takes part."""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
from sqlalchemy.engine import URL

from service.api.rate_limits import RateLimits
from tests.support.api import create_account_over_http
from tests.support.processes import ServiceProcess, wait_for
from tests.support.redis import RedisServer, redis_server
from tests.support.servers import ready_server

pytestmark = pytest.mark.processes

ALONE = "rate limits: the Redis of RATE_LIMIT_STORAGE_URL does not answer"
SHARED_AGAIN = "rate limits: shared through RATE_LIMIT_STORAGE_URL again"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def limited_server(database: URL, redis: RedisServer) -> AbstractContextManager[ServiceProcess]:
    """One request per key in 100 s, two failures per address a minute: any
    second process counting on its own would let more through."""
    return ready_server(
        database,
        shipped=True,
        RATE_LIMIT_PER_KEY="0.01",
        RATE_LIMIT_AUTH_FAILURES="2",
        RATE_LIMIT_STORAGE_URL=redis.url,
    )


def get(server: ServiceProcess, key: str, source: str = "127.0.0.1") -> httpx.Response:
    """GET /v1/account with `key`, on a new connection from `source`."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(
            f"http://127.0.0.1:{server.port}/v1/account",
            headers={"Authorization": f"Bearer {key}"},
        )


def test_two_replicas_share_one_keys_limit_and_one_addresses_failures(
    migrated_database: URL, redis: RedisServer
) -> None:
    with (
        limited_server(migrated_database, redis) as first,
        limited_server(migrated_database, redis) as second,
    ):
        assert first.port is not None
        key = create_account_over_http(first.port, "Shared")
        answers = [get(server, key) for server in (first, second) * 5]
        statuses = [answer.status_code for answer in answers]
        assert sorted(statuses) == [200] + [429] * 9, statuses
        assert all(int(a.headers["retry-after"]) > 1 for a in answers if a.status_code == 429)

        # A different wrong key each time: one key's own limit (counted for
        # every well-formed key) would refuse a second try of the same one.
        wrong = [f"psk_{number}" + "w" * 42 for number in range(6)]
        failures = [
            get(server, key, "127.0.0.6").status_code
            for server, key in zip((first, second) * 3, wrong, strict=True)
        ]
        assert failures == [401, 401] + [429] * 4
        assert "does not answer" not in first.logs() + second.logs()


def test_an_unreachable_redis_leaves_per_process_limits_and_one_warning(
    migrated_database: URL, redis: RedisServer
) -> None:
    with limited_server(migrated_database, redis) as server:
        assert server.port is not None
        key = create_account_over_http(server.port, "Alone")
        redis.stop()
        statuses = [get(server, key).status_code for _ in range(12)]
        # Two workers, each counting alone: one request each at most, never an error.
        assert set(statuses) <= {200, 429}, statuses
        assert 1 <= statuses.count(200) <= 2, statuses
        wrong = "psk_" + "w" * 43
        failures = [get(server, wrong, "127.0.0.6").status_code for _ in range(8)]
        assert set(failures) == {401, 429}, failures
        assert failures.count(401) <= 2 * 2, failures

        warnings = collections.Counter(
            event["pid"] for event in server.events() if event["message"].startswith(ALONE)
        )
        assert warnings, "no warning"
        assert set(warnings.values()) == {1}, warnings
        assert "Traceback" not in server.logs()

        redis.start()

        def shared_again() -> bool:
            get(server, key)
            return bool(server.pids_that_logged(SHARED_AGAIN))

        wait_for(shared_again, 60, "a worker counting in Redis again")


async def test_a_redis_that_refuses_the_service_is_named_so_and_counted_alone(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password (here: one sent to a Redis that has none) is no
    outage: the warning says Redis refused, and the process counts alone."""
    password = "not-its-password-7c1e"
    limits = RateLimits(0.01, 1, f"redis://:{password}@127.0.0.1:{redis.port}/0")
    with caplog.at_level(logging.WARNING, logger="service.rate_limits"):
        assert await limits.take_key("k") == 0
        assert await limits.take_key("k") > 0  # one request in 100 s, in this process
    assert "refuses this service's commands (AuthenticationError)" in caplog.text
    assert "does not answer" not in caplog.text
    assert password not in caplog.text
