"""Abandoning a one-shot scan that outlives its watch's timeout (a dead NFS or SMB server):
a thread blocked in the kernel on the mount cannot be interrupted, so the process records
the failure on a connection of its own, releases the lease and exits."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from ..errors import EXIT_FAILED, WqscanError
from ..model import DEFAULT_TIMEOUT, Watch
from ..reconcile.report import WatchReport, abandoned, record
from ..store import Store, Target
from . import leases


class Deadline:
    """Ends this process when a scan armed for runs past its deadline."""

    def __init__(self, db: Target, timeout: float | None = None) -> None:
        self.db = db
        self.timeout = timeout  # overrides every watch's own; 0: no limit
        self.cond: Any = None  # a threading.Condition, once a scan was armed for
        self.armed: tuple[Watch, float, float, int] | None = None

    def arm(self, watch: Watch | None) -> None:
        """Start the clock for a scan of `watch`; None stops it (the scan ended)."""
        if self.cond is None:
            if watch is None:
                return
            import threading  # here: a run without watches starts no thread (start-up time)

            self.cond = threading.Condition()
            threading.Thread(target=self._watch, daemon=True, name="wqscan-deadline").start()
        if watch is None:
            seconds = 0.0
        elif self.timeout is not None:
            seconds = self.timeout
        else:
            seconds = watch.timeout or DEFAULT_TIMEOUT
        with self.cond:
            self.armed = None if watch is None or not seconds else \
                (watch, seconds, time.monotonic() + seconds, time.time_ns())
            self.cond.notify()

    def _watch(self) -> None:
        with self.cond:
            while True:
                if self.armed is None:
                    self.cond.wait()
                    continue
                left = self.armed[2] - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                self._abandon(*self.armed)

    def _abandon(self, watch: Watch, seconds: float, _deadline: float, start_ns: int) -> None:
        reason = abandoned(seconds)
        print(f"wqscan: error: {watch.watch_id}: {reason}", file=sys.stderr, flush=True)
        report = WatchReport(watch.watch_id)
        report.ok, report.reason, report.duration = False, reason, seconds
        try:
            with Store.open(self.db, create=False) as store:
                record(store, watch, report, start_ns)
                leases.release(store, watch.watch_id, leases.holder_id())
        except WqscanError:
            pass  # the lease dies with this process anyway; the failure is on stderr
        sys.stdout.flush()
        os._exit(EXIT_FAILED)
