"""The circuit breaker: after repeated failed scans a watch rests before it is tried again."""
from __future__ import annotations

FAILURES_TO_OPEN = 5
FIRST_COOLDOWN = 60.0
MAX_COOLDOWN = 3600.0


def cooldown(consecutive_failures: int) -> float | None:
    """Seconds to skip a watch after its latest failure; None while the circuit is closed.
    Doubles from 60 s with each further failure, up to an hour."""
    if consecutive_failures < FAILURES_TO_OPEN:
        return None
    return min(MAX_COOLDOWN, FIRST_COOLDOWN * 2 ** (consecutive_failures - FAILURES_TO_OPEN))
