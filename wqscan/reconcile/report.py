"""What one scan of one watch did, and how that is recorded: statistics, the last scan,
and the circuit breaker."""
from __future__ import annotations

import time
from typing import Any

from ..clock import iso_from_ns, now_iso
from ..errors import WqscanError
from ..model import Watch
from ..scan.records import ScanTotals
from ..service.breaker import cooldown
from ..store import Store

MAX_KEPT_WARNINGS = 200


class WatchReport:
    """What one scan of one watch did."""

    __slots__ = ("watch_id", "ok", "reason", "ingest", "update", "delete", "written", "totals",
                 "duration", "warnings", "operations", "config_error", "held", "queue_errors")

    def __init__(self, watch_id: str) -> None:
        self.watch_id = watch_id
        self.ok = True
        self.reason: str | None = None
        self.ingest = self.update = self.delete = 0
        self.written = 0
        self.totals = ScanTotals()
        self.duration = 0.0
        self.warnings: list[str] = []
        self.operations: list[dict[str, Any]] = []  # filled by --dry-run
        self.config_error = False  # failed on a bad setting rather than on the tree
        self.held = False  # not scanned: another process holds the watch
        self.queue_errors = 0  # writes that failed (database busy or broken)

    def add(self, later: "WatchReport") -> None:
        """Fold in a later scan of the same watch: operations add up, its totals stand (the
        caller sets the duration of the whole)."""
        self.ok, self.reason, self.held = later.ok, later.reason, later.held
        self.config_error = later.config_error
        self.ingest += later.ingest
        self.update += later.update
        self.delete += later.delete
        self.written += later.written
        self.queue_errors += later.queue_errors
        self.totals = later.totals
        self.warnings += later.warnings[:MAX_KEPT_WARNINGS - len(self.warnings)]

    def to_json(self) -> dict[str, Any]:
        t = self.totals
        out = {"watch_id": self.watch_id, "ok": self.ok, "reason": self.reason,
               "ingest": self.ingest, "update": self.update, "delete": self.delete,
               "deferred": t.deferred, "written": self.written, "files": t.files,
               "dirs": t.dirs, "filtered": t.filtered, "errors": t.errors,
               "bytes_hashed": t.bytes_hashed, "duration_seconds": round(self.duration, 6),
               "warnings": self.warnings}
        if self.operations:
            out["operations"] = self.operations
        return out


def abandoned(seconds: float) -> str:
    """Why a scan that outlived its timeout failed (by `run`, or a one-shot reconcile)."""
    return (f"scan abandoned after {seconds:g} s without finishing (hung mount? --timeout "
            "sets the limit)")


def record_hook_run(store: Store, reports: list[WatchReport], hook: str,
                    repository: str | None, log: str | None, started: str) -> None:
    """Note, for each watch a git hook's run scanned, how that scan ended and where the
    run's output went, for `status`."""
    try:
        with store.write():
            for r in reports:
                store.record_hook_run(r.watch_id, {
                    "hook": hook, "repository": repository, "started_at": started,
                    "result": "held" if r.held else "ok" if r.ok else "failed",
                    "reason": r.reason, "log": log})
    except WqscanError as e:
        for r in reports:
            r.warnings.append(f"hook run not recorded: {e}")


def record(store: Store, watch: Watch, report: WatchReport, start_ns: int,
           breaker: bool = True) -> None:
    """Persist the outcome of a scan: statistics, last scan, and the circuit breaker (not
    for a scan that failed for want of the store, `breaker` False: the watch is not at
    fault)."""
    from .. import _scan  # loaded by the scan recorded; a run without watches goes without

    t = report.totals
    last = {"last_scan_start": iso_from_ns(start_ns), "last_scan_duration": report.duration,
            "last_result": "ok" if report.ok else "failed", "last_reason": report.reason,
            "last_files": t.files, "last_dirs": t.dirs, "last_filtered": t.filtered,
            "last_bytes_hashed": t.bytes_hashed, "last_ingest": report.ingest,
            "last_update": report.update, "last_delete": report.delete,
            "last_deferred": t.deferred, "last_errors": t.errors,
            "last_backend": _scan.BACKEND}
    try:
        with store.write():
            store.add_stats(watch.watch_id, {"events_filtered": t.filtered,
                                             "queue_errors": report.queue_errors})
            store.finish_scan(watch.watch_id, report.ok, last, now_iso(), streak=breaker)
            if not report.ok and breaker:
                rest = cooldown((store.stats_row(watch.watch_id) or {}).get(
                    "consecutive_failures", 0))
                if rest is not None:
                    store.set_circuit(watch.watch_id,
                                      iso_from_ns(time.time_ns() + int(rest * 1e9)))
    except WqscanError as e:
        report.warnings.append(f"statistics not recorded: {e}")
