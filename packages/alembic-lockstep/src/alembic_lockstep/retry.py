"""Backoff for retries, and the schedule of a revision that waits for its locks."""

import random

# A revision that cannot get its table locks within lock_timeout is rolled back
# and retried, the way GitLab's `with_lock_retries` and strong_migrations do it:
# the first attempt waits FIRST_LOCK_TIMEOUT at most (requests on the table queue
# behind a waiting ALTER only that long), each retry twice as long up to
# MIGRATION_LOCK_TIMEOUT, after a pause with jitter that grows from
# LOCK_RETRY_PAUSE_FIRST to LOCK_RETRY_PAUSE_MAX, during which traffic flows.
FIRST_LOCK_TIMEOUT = 0.1
LOCK_RETRY_PAUSE_FIRST = 0.5
LOCK_RETRY_PAUSE_MAX = 30.0


def backoff(attempt: int, first: float, ceiling: float) -> float:
    """Exponential backoff with jitter, so a fleet does not retry in step."""
    return random.uniform(first / 2, min(ceiling, first * 2**attempt))


def lock_timeout(attempt: int, longest: float) -> float:
    """The lock_timeout of a revision's attempt (0 is the first), in seconds."""
    return min(longest, FIRST_LOCK_TIMEOUT * 2.0**attempt)


def lock_retry_pause(attempt: int) -> float:
    """The pause after a revision's attempt hit lock_timeout, in seconds."""
    return backoff(attempt, LOCK_RETRY_PAUSE_FIRST, LOCK_RETRY_PAUSE_MAX)
