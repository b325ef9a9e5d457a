"""What `wqscan queue list` and `queue stats` show, in either queue layout.

In the workspace-qdrant-mcp layout every row is waiting (its presence means "to do"), so
all rows count as `pending` and are due.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..clock import now_iso
from ..errors import UsageError
from ..model import QUEUE_STATUSES
from ..store import Store


def rows(store: Store, status: str | None = None, limit: int | None = None,
         collection: str | None = None) -> list[dict[str, Any]]:
    """Rows in the order a consumer takes them, optionally of one status and collection, at
    most `limit`."""
    if status is not None:
        check_status(status, QUEUE_STATUSES)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or not 0 <= limit <= 2 ** 62):
        raise UsageError(f"limit must be 0 or more, not {limit!r}", field="limit")
    return store.queue.rows(status, limit, collection=collection)


def left_out(store: Store, shown: int, limit: int | None, status: str | None = None,
             collection: str | None = None) -> int:
    """How many rows a listing cut at `limit` (showing `shown`) left out."""
    if limit is None or shown < limit:
        return 0
    return max(0, store.queue.count(status, collection) - shown)


def stats(store: Store, storage: bool = False) -> dict[str, Any]:
    """Rows by status and operation; due and later pending rows; expired leases; the
    oldest pending row's queue time; with `storage`, on PostgreSQL, the queue table's
    health (dead rows, vacuums, the oldest transaction; SQLite has no such key)."""
    depth: dict[str, dict[str, int]] = {s: {} for s in QUEUE_STATUSES}
    for st, op, n in store.queue.depth():
        depth.setdefault(st, {})[op] = n
    totals = {s: sum(ops.values()) for s, ops in depth.items()}
    doc = {"total": sum(totals.values()), "by_status": totals, "by_operation": depth,
           **store.queue.times(now_iso())}
    health = store.queue_storage() if storage else None
    return doc if health is None else {**doc, "storage": health}


def check_status(status: str, allowed: Sequence[str]) -> None:
    if status not in allowed:
        raise UsageError(f"bad status '{status}': expected one of {', '.join(allowed)}",
                         field="status")
