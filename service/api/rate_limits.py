"""Rate limits of one worker process: token buckets per API key and per client address.

Each worker process counts for itself (no round trip to share counts): with W
workers in R replicas a key may make up to W x R times its limit. A limit for
the whole fleet belongs at the proxy in front (README, "Limits").
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

# Buckets kept per limiter; the least recently used is forgotten beyond it, so
# a client cycling through addresses or keys cannot grow the process.
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests a second for each key, in bursts of up to `burst`; a
    rate of 0 allows everything."""

    def __init__(self, rate: float, burst: float, max_buckets: int = MAX_BUCKETS):
        self.rate, self.burst, self.max_buckets = rate, max(burst, 1.0), max_buckets
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """Spend one request of `key`: 0 when allowed, else the seconds until it would be."""
        if self.rate <= 0:
            return 0.0
        bucket = self._refilled(key)
        if bucket.tokens < 1:
            return (1 - bucket.tokens) / self.rate
        bucket.tokens -= 1
        return 0.0

    def _refilled(self, key: Hashable) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket


@dataclass(frozen=True)
class RateLimits:
    """The limits of one worker process: requests per key, and failed
    authentications per client address."""

    keys: RateLimiter
    failures: RateLimiter

    @classmethod
    def per_second_and_minute(cls, per_key: float, failures_per_minute: float) -> RateLimits:
        return cls(
            RateLimiter(per_key, 2 * per_key),
            RateLimiter(failures_per_minute / 60, failures_per_minute),
        )


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
