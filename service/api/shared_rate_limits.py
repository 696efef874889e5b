"""The rate limits' windows shared by a fleet: the `limits` package's moving
window, counted in the Redis of RATE_LIMIT_STORAGE_URL. Imported only when
that setting is given (service/api/rate_limits.py says when it is used and
what happens when the Redis does not answer)."""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import AuthenticationError, ResponseError

from service.api.rate_limits import SHARED_TIMEOUT_SECONDS, Limit

# The prefix of the service's keys in a Redis that others may share.
REDIS_KEY_PREFIX = "platform-service"


class SharedWindows:
    """One process's door to the fleet's windows."""

    def __init__(self, storage_url: str) -> None:
        self._limiter = MovingWindowRateLimiter(_redis(storage_url))
        self._items: dict[Limit, RateLimitItem] = {}

    async def take(self, limit: Limit, identifier: str) -> float:
        """Spend one request of `identifier` under `limit`: 0 when allowed,
        else the seconds until it would be."""
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerSecond(
                limit.amount, limit.seconds, limit.namespace
            )
        if await self._limiter.hit(item, identifier):
            return 0.0
        reset = (await self._limiter.get_window_stats(item, identifier)).reset_time
        return max(0.0, reset - time.time())

    @staticmethod
    def trouble(error: BaseException) -> str:
        """What went wrong, for the operator: Redis did not answer, or it
        answered and refused (a wrong password or database), named by the
        error behind it (a storage error wraps Redis's own)."""
        cause = error.storage_error if isinstance(error, StorageError) else error
        if isinstance(cause, (AuthenticationError, ResponseError)):
            return f"refuses this service's commands ({type(cause).__name__})"
        return f"does not answer ({type(cause).__name__})"


def _redis(url: str) -> Any:
    """The shared storage: no retries and short timeouts, since a request
    waits for it; errors wrapped as StorageError."""
    from limits.aio.storage import RedisStorage
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return RedisStorage(
        "async+" + url,
        wrap_exceptions=True,
        implementation="redispy",
        key_prefix=REDIS_KEY_PREFIX,
        socket_connect_timeout=SHARED_TIMEOUT_SECONDS,
        socket_timeout=SHARED_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
    )
