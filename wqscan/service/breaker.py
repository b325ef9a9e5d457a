"""The circuit breaker (after repeated failed scans a watch rests before it is tried
again) and when a watch is next due: the rules `run`, `status` and `metrics` share."""
from __future__ import annotations

from typing import Any

from ..clock import parse_iso

FAILURES_TO_OPEN = 5
FIRST_COOLDOWN = 60.0
MAX_COOLDOWN = 3600.0


def cooldown(consecutive_failures: int) -> float | None:
    """Seconds to skip a watch after its latest failure; None while the circuit is closed.
    Doubles from 60 s with each further failure, up to an hour."""
    if consecutive_failures < FAILURES_TO_OPEN:
        return None
    return min(MAX_COOLDOWN, FIRST_COOLDOWN * 2 ** (consecutive_failures - FAILURES_TO_OPEN))


def circuit_open(stats: dict[str, Any], now_ns: int) -> bool:
    """Whether the breaker rests the watch at `now_ns` (its statistics row)."""
    until = stats.get("circuit_open_until")
    return bool(until) and parse_iso(until) > now_ns


def next_due_ns(interval: float, stats: dict[str, Any], last_scan: str | None,
                jitter: float = 0.0) -> int | None:
    """When a watch is next due: `interval` (+ `jitter`) seconds after its last attempt,
    and not before the breaker lets it be tried; None when it never was (due at once)."""
    attempt = stats.get("last_scan_start") or last_scan
    if attempt is None:
        return None
    due = parse_iso(attempt) + int((interval + jitter) * 1e9)
    until = stats.get("circuit_open_until")
    return max(due, parse_iso(until)) if until else due
