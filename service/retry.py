"""Backoff for retries."""

import random


def backoff(attempt: int, first: float, ceiling: float) -> float:
    """Exponential backoff with jitter, so a fleet does not retry in step."""
    return random.uniform(first / 2, min(ceiling, first * 2**attempt))
