"""Timestamps in the one format every table uses: ISO-8601 UTC with milliseconds."""
from __future__ import annotations

import time


def iso_from_ns(ns: int) -> str:
    """`2026-11-28T14:53:42.123Z` for a time in nanoseconds since the epoch."""
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%03dZ" % (rest // 1_000_000)


def now_iso() -> str:
    """The current time in the table format."""
    return iso_from_ns(time.time_ns())


def parse_iso(text: str) -> int:
    """Nanoseconds since the epoch of a table timestamp (ISO-8601 UTC, Z or +00:00)."""
    from datetime import datetime, timezone

    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1_000_000) * 1000
