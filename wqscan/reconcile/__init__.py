"""Scanning watches: `reconcile` scans the chosen watches once each, `scan_watch` one watch
under its lease. One scan is wired in `scan.py` from the parts that each do one job:
`root.py` (the root checks), `sink.py` (what the walk reports), `batches.py` (held or
streamed results), `guard.py` (the mass-delete guard), `rows.py` (queue rows, with
`moves.py` and `projects.py`) and `commit.py` (the transactions)."""
from __future__ import annotations

import os
import time
from typing import Callable

from ..errors import UsageError, WatchFailed, WatchHeld
from ..model import Watch
from ..service import leases
from ..store import Store
from ..watches import below, containing, get_watch, list_watches
from .options import Progress, ScanOptions, Warn
from .report import WatchReport, record

__all__ = ["Progress", "ScanOptions", "Warn", "WatchReport", "reconcile",
           "scan_watch", "select"]

SETTLE_POLL = 0.5  # seconds at least between scans that wait for deferred files to settle


def select(store: Store, ids: list[str], path: str | None) -> list[tuple[Watch, tuple[str, ...]]]:
    """The watches to scan with the scope of each: named ones (even disabled), else all
    enabled; with `path`, those containing it (only its subtree scanned), else those whose
    root lies below it (scanned whole). A path inside a watch's tree that a symlink leads
    out of it names no watch."""
    watches = [get_watch(store, i) for i in ids] if ids else \
        [w for w in list_watches(store) if w.enabled]
    if path is None:
        return [(w, ()) for w in watches]
    chosen = containing(watches, path)
    given = os.path.abspath(path)
    if not chosen and not any(given.startswith(w.path.rstrip("/") + "/") for w in watches):
        chosen = [(w, ()) for w in below(watches, path)]
    if not chosen:
        raise UsageError(f"no {'named' if ids else 'enabled'} watch contains {path} or lies "
                         "below it")
    return chosen


def reconcile(store: Store, ids: list[str] | None = None, path: str | None = None,
              dry_run: bool = False, allow_mass_delete: bool = False,
              on_warning: Warn | None = None, threads: int | None = None,
              wait: float = 0.0, on_progress: Progress | None = None,
              until_settled: float = 0.0,
              on_watch: Callable[[Watch | None], None] | None = None) -> list[WatchReport]:
    """Scan the chosen watches once each; a failed watch is reported, not raised.
    `threads` overrides each watch's own setting; a watch another process is scanning is
    waited for up to `wait` seconds, then reported as held. With `until_settled`, a watch
    whose scan deferred files (too recently modified) is scanned again once its settle time
    has passed, for up to that many seconds, so that a git checkout's files are all queued
    by the one run a hook starts; a file still being written stays deferred. `on_watch`
    is told of each scan as it starts (the watch) and ends (None)."""
    options = ScanOptions(dry_run, allow_mass_delete, on_warning, threads, wait, on_progress)

    def scan(w: Watch, scope: tuple[str, ...]) -> WatchReport:
        if on_watch is not None:
            on_watch(w)
        try:
            return scan_watch(store, w, scope, options)
        finally:
            if on_watch is not None:
                on_watch(None)

    reports = []
    for w, scope in select(store, list(ids or ()), path):
        started = time.monotonic()
        report = scan(w, scope)
        while report.ok and report.totals.deferred and not dry_run:
            pause = max(w.settle, SETTLE_POLL)
            if time.monotonic() + pause > started + until_settled:
                break
            time.sleep(pause)
            report.add(scan(w, scope))
            report.duration = time.monotonic() - started  # every pass, and the waits
        reports.append(report)
    return reports


def scan_watch(store: Store, watch: Watch, scope: tuple[str, ...] = (),
               options: ScanOptions = ScanOptions()) -> WatchReport:
    """One scan of one watch (of `scope` below its root, if given), holding its lease."""
    from .watch_scan import scan_once  # the scan's parts load when a watch is scanned

    report = WatchReport(watch.watch_id)
    if options.dry_run:  # writes nothing, so needs no lease
        return scan_once(store, watch, scope, report, options, None)
    try:
        with leases.hold(store, watch.watch_id, options.wait) as holder:
            return scan_once(store, watch, scope, report, options, holder)
    except WatchHeld as e:
        report.ok, report.held, report.reason = False, True, str(e)
        return report
    except WatchFailed as e:  # the lease could not be written: the database is busy
        report.ok, report.reason = False, str(e)
        report.queue_errors += 1
        record(store, watch, report, time.time_ns())
        return report
