"""The settings' rates as the moving windows `limits` counts: whole requests
in whole seconds, the average kept, bursts as the README says."""

from __future__ import annotations

import pytest

from service.api.rate_limits import RateLimits, moving_window


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
    assert (window.amount, window.get_expiry()) == (amount, seconds)


def test_a_rate_of_zero_is_no_limit() -> None:
    assert moving_window(0, 2, "key") is None


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
