"""What `status` and `show` report: per-watch settings, statistics and the queue depth."""
from __future__ import annotations

import time
from typing import Any

from .. import _scan
from ..clock import iso_from_ns
from ..model import Watch
from ..scan.fsinfo import check_stat_mode, dircache_off, fs_type
from ..store import Store
from ..store.schema import STATS_COUNTERS, STATS_LAST_COUNTS
from ..watches import get_watch, list_watches
from .breaker import circuit_open, next_due_ns


def watch_status(store: Store, watch_id: str) -> dict[str, Any]:
    """Settings of one watch with its statistics and last scan."""
    watch = get_watch(store, watch_id)
    stats = store.stats_row(watch_id) or {}
    stats.pop("watch_id", None)
    return {**watch.to_json(), "layout": store.layout.name, **_filesystem(watch),
            "stats": stats, "snapshot_files": store.snapshot_files(watch_id)}


def _filesystem(watch: Watch) -> dict[str, Any]:
    """The root's filesystem type, the stat comparison scans use there and whether they
    use the directory cache (from the mount table alone: a hung mount cannot block
    status)."""
    fstype = fs_type(watch.path, resolve=False)
    return {"filesystem": fstype,
            "check_stat_effective": check_stat_mode(watch.check_stat, fstype),
            "directory_cache": dircache_off(fstype, watch.follow_symlinks) or "on"}


def _circuit(stats: dict[str, Any]) -> str:
    if circuit_open(stats, time.time_ns()):
        return f"open until {stats['circuit_open_until']}"
    return "closed"


def status(store: Store) -> dict[str, Any]:
    """Every watch's last scan and counters, and the queue depth by status and operation."""
    watches = []
    hook_runs = store.hook_runs()
    for w in list_watches(store):
        stats = store.stats_row(w.watch_id) or {}
        watches.append({
            "watch_id": w.watch_id, "path": w.path, "collection": w.collection,
            "enabled": w.enabled, "last_scan": w.last_scan, **_filesystem(w),
            "last_scan_start": stats.get("last_scan_start"),
            "last_duration_seconds": stats.get("last_scan_duration"),
            "last_result": stats.get("last_result"), "last_reason": stats.get("last_reason"),
            "consecutive_failures": stats.get("consecutive_failures", 0),
            "circuit": _circuit(stats), "next_due": next_due(w, stats),
            "scanner": stats.get("last_backend"),
            "counters": {k: stats.get(k, 0) for k in STATS_COUNTERS},
            "last": {k.removeprefix("last_"): stats.get(k) for k in STATS_LAST_COUNTS},
            "last_hook_run": hook_runs.get(w.watch_id),
        })
    depth: dict[str, dict[str, int]] = {}
    for st, op, n in store.queue.depth():
        depth.setdefault(st, {})[op] = n
    return {"scanner": _scan.BACKEND, "database": store.path, "store": store.describe(),
            "layout": store.layout.name,
            "watches": watches, "queue": depth}


def next_due(watch: Watch, stats: dict[str, Any]) -> str | None:
    """When the scheduler next scans a watch (before jitter); None when it never has."""
    due = next_due_ns(watch.interval, stats, watch.last_scan)
    return None if due is None else iso_from_ns(due)
