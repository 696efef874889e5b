"""The settings' rates as moving windows (as the `limits` package counts
them): whole requests in whole seconds, the average kept, bursts as the
README says."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from service.api.rate_limits import MovingWindow, RateLimits, moving_window


@pytest.mark.parametrize(
    ("per_second", "burst_seconds", "amount", "seconds"),
    [
        (100, 2, 200, 2),  # RATE_LIMIT_PER_KEY's default: bursts of twice the rate
        (30 / 60, 60, 30, 60),  # RATE_LIMIT_AUTH_FAILURES' default, a minute's worth
        (0.01, 2, 1, 100),  # slower than one a window: one request, a longer window
        (2.5, 2, 5, 2),
        (1_000_000, 2, 2_000_000, 2),
    ],
)
def test_a_rate_becomes_a_moving_window(
    per_second: float, burst_seconds: int, amount: int, seconds: int
) -> None:
    window = moving_window(per_second, burst_seconds, "key")
    assert window is not None
    assert (window.amount, window.seconds) == (amount, seconds)


def test_a_rate_of_zero_is_no_limit() -> None:
    assert moving_window(0, 2, "key") is None


@pytest.mark.processes
def test_a_worker_loads_no_package_it_has_no_use_for() -> None:
    """What a worker imports that it never uses only costs it memory: `limits`
    and Redis's client without RATE_LIMIT_STORAGE_URL (it counts in its own
    memory then), and the parts of uvicorn's "standard" extra the service
    leaves out, which uvicorn imports whenever they are installed: websockets
    (no WebSocket route) and watchfiles (only for --reload). 3 MiB in all
    (docs/benchmarks/api.notes.md)."""
    script = (
        "import sys\n"
        "import uvicorn\n"
        "from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol\n"
        "from service.app import create_app\n"
        "from service.api.rate_limits import RateLimits\n"
        "RateLimits(100, 30, None)\n"
        "unused = ('limits', 'redis', 'websockets', 'watchfiles', 'wsproto')\n"
        "print(sorted(name for name in unused if name in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


async def test_an_error_of_the_shared_stores_client_fails_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever the shared store's client raises, a request is counted in its
    own process instead. Here Redis's client fails before connecting, on a
    query parameter it does not know (a URL the settings refuse at startup:
    tests/test_settings.py), as it would for every request."""
    limits = RateLimits(0.01, 1, "redis://127.0.0.1:1/0?unknown=1")
    with caplog.at_level(logging.WARNING, logger="service.rate_limits"):
        assert await limits.take_key("k") == 0
        assert await limits.take_key("k") > 0
        assert await limits.take_failure("address") == 0
    assert caplog.text.count("RATE_LIMIT_STORAGE_URL does not answer (TypeError)") == 1


async def test_a_key_and_an_address_are_counted_apart() -> None:
    # One request in 100 s, one failure a minute.
    limits = RateLimits(per_key=0.01, failures_per_minute=1)
    assert await limits.take_key("k") == 0
    assert 0 < await limits.take_key("k") <= 100
    assert await limits.take_key("other") == 0
    assert await limits.take_failure("k") == 0
    assert 0 < await limits.take_failure("k") <= 60
    unlimited = RateLimits(per_key=0, failures_per_minute=0)
    assert {await unlimited.take_key("k") for _ in range(1000)} == {0}


class Clock:
    """The seconds a window sees, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_counts_exactly_and_says_when_its_oldest_request_leaves() -> None:
    clock = Clock()
    window = MovingWindow(3, 10, clock)
    for at in (0.0, 1.0, 2.0):
        clock.now = 1000 + at
        assert window.take("k") == 0
    clock.now = 1005
    # Three in the last 10 s: refused until the first (at 1000) is 10 s old.
    assert window.take("k") == pytest.approx(5)
    assert window.take("other") == 0
    clock.now = 1009.999
    assert window.take("k") == pytest.approx(0.001)
    clock.now = 1010
    assert window.take("k") == 0  # the first left; the refused ones were not counted
    assert window.take("k") == pytest.approx(1)  # 1001, 1002, 1010 are in the window


def test_one_request_in_a_long_window_never_lets_a_second_through_at_its_edge() -> None:
    clock = Clock()
    window = MovingWindow(1, 100, clock)
    assert window.take("k") == 0
    for at in (1.0, 50.0, 99.0, 99.999):
        clock.now = 1000 + at
        assert window.take("k") > 0
    clock.now = 1100
    assert window.take("k") == 0


def test_clients_idle_for_a_window_are_forgotten() -> None:
    clock = Clock()
    window = MovingWindow(5, 60, clock)
    for n in range(1000):
        window.take(f"address {n}")
    assert len(window) == 1000
    clock.now += 30
    window.take("busy")
    assert len(window) == 1001  # nobody idle for a whole window yet
    clock.now += 31
    window.take("busy")
    # Swept: the thousand sent nothing for 61 s; "busy" sent 31 s ago.
    assert len(window) == 1
    clock.now += 59
    assert window.take("busy") == 0
