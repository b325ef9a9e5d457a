"""`wqscan run`: scan each enabled watch when it is due, a few at a time.

Every scan runs as a child process (`wqscan reconcile ID`), so that one stuck in a
`stat` on a dead server can be abandoned after its timeout while the other watches
keep their schedule; the watch's lease keeps a second scan from starting while the
abandoned one lingers. `watch_folders` is read again at every tick, so watches added,
changed, disabled or removed take effect without a restart.

A store that cannot be reached (a PostgreSQL server down or restarting) is ridden out:
the schedule goes on from the watches last read, each scan due meanwhile counted as
failed (recorded when the store is back, without opening the watch's circuit breaker),
while the store is tried again with a capped backoff (Outage).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Callable, NamedTuple

from ..clock import iso_from_ns, parse_iso
from ..errors import EXIT_FAILED, EXIT_HELD, EXIT_OK, EXIT_UNREACHABLE, StoreUnreachable
from ..model import DEFAULT_TIMEOUT, Watch
from ..reconcile.report import WatchReport, abandoned, record
from ..store import Store, Target
from ..watches import list_watches
from . import leases
from .breaker import circuit_open, next_due_ns

TICK = 1.0  # seconds between looks at the watch list
JITTER = 0.1  # share of the interval by which a due time is randomly delayed...
MAX_JITTER = 30.0  # ...at most this many seconds
STOP_GRACE = 3.0  # seconds children get to end after SIGTERM
FIRST_RECONNECT = 1.0  # seconds before the store is tried again, doubling...
MAX_RECONNECT = 10.0  # ...up to this (a store back is found within as long)

Log = Callable[[str], None]


class _Child(NamedTuple):
    """A running scan: its process, and when it started and must end."""

    watch: Watch
    proc: subprocess.Popen
    started: float  # time.monotonic()
    start_ns: int
    deadline: float
    holder: str  # the lease holder it scans as


class Outage:
    """The store cannot be reached: since when, when to try it again, and the scans due
    meanwhile (watch, start), to be recorded as failed once it is back."""

    def __init__(self, error: StoreUnreachable) -> None:
        self.error = error
        self.since = time.monotonic()
        self.delay = FIRST_RECONNECT
        self.next_try = self.since + self.delay
        self.missed: list[tuple[Watch, int]] = []

    def tried(self) -> None:
        """One more attempt failed: wait twice as long (capped) before the next."""
        self.delay = min(MAX_RECONNECT, self.delay * 2)
        self.next_try = time.monotonic() + self.delay


class Scheduler:
    """The scheduling loop over one database; `run()` returns an exit code."""

    def __init__(self, db: Target, jobs: int = 4, once: bool = False, log: Log | None = None,
                 reload: Callable[[Store], None] | None = None) -> None:
        self.db = db
        self.jobs = max(1, jobs)
        self.once = once
        self.log = log or (lambda line: None)
        self.reload = reload  # applies the YAML configuration (on start and SIGHUP)
        self.running: dict[str, _Child] = {}
        self.abandoned: list[_Child] = []  # timed out, killed, not yet reaped
        self.jitter: dict[str, tuple[str, float]] = {}  # watch -> (attempt, share of jitter)
        self.held_reported: set[tuple[str, str]] = set()  # (watch, lease acquired_at)
        self.started_once: set[str] = set()
        self.failed = False
        self.stopping: int | None = None  # the signal that asked to stop
        self.outcomes: list[dict] = []  # each scan that ended: watch, result, duration, why
        self.reload_requested = reload is not None
        self.known: dict[str, tuple[Watch, dict]] = {}  # the watches and stats last read
        self.outage: Outage | None = None

    # -- signals -----------------------------------------------------------------------

    def _on_stop(self, signum: int, frame) -> None:
        self.stopping = signum

    def _on_hup(self, signum: int, frame) -> None:
        self.reload_requested = True

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        store = Store.open(self.db)
        store.set_reconnect(())  # the backoff is Outage's: a tick never waits on the store
        try:
            while self.stopping is None:
                try:
                    if self.outage is not None and not self._back(store):
                        self._keep_schedule()
                    elif self._tick(store):
                        break
                except StoreUnreachable as e:
                    self._lost(e)
                self._sleep()
        finally:
            if self.stopping is not None:
                self.log(f"stopping on {signal.Signals(self.stopping).name}: ending "
                         f"{len(self.running)} running scan(s)")
            self._stop_children(store)
            store.close()
            for s, handler in old.items():
                signal.signal(s, handler)
        return EXIT_FAILED if self.failed and self.once else EXIT_OK

    def _tick(self, store: Store) -> bool:
        """One look at the watches with the store at hand; whether `--once` is done."""
        if self.reload_requested and self.reload is not None:
            self.reload(store)
            self.reload_requested = False
        self._reap(store)
        started = self._start_due(store)
        if self.once and not self.running and not started:
            if not self.started_once:
                self.log(self._next_due(store))
            return True
        return False

    # -- riding out an unreachable store -------------------------------------------------

    def _lost(self, error: StoreUnreachable) -> None:
        """The store stopped answering: said once, then tried again with a backoff (`--once`
        gives up instead: cron's next run is its retry)."""
        if self.once:
            raise error
        if self.outage is None:
            self.outage = Outage(error)
            self.log(f"store unreachable: {error}; scans due meanwhile count as failed; "
                     f"trying again after {FIRST_RECONNECT:g} s, doubling up to "
                     f"{MAX_RECONNECT:g} s")
        else:
            self.outage.tried()

    def _back(self, store: Store) -> bool:
        """Whether the store answers again (tried when the backoff says); once it does, the
        scans missed meanwhile are recorded as failed, and that is said once."""
        outage = self.outage
        if time.monotonic() < outage.next_try:
            return False
        store.clock_ns()  # reconnects, or raises StoreUnreachable
        with store.write():
            for watch, start_ns in outage.missed:
                report = WatchReport(watch.watch_id)
                report.ok, report.reason = False, f"store unreachable: {outage.error}"
                record(store, watch, report, start_ns, breaker=False)
        self.outage = None
        self.log(f"store reachable again after {time.monotonic() - outage.since:.0f} s; "
                 f"{len(outage.missed)} scan(s) due meanwhile counted as failed")
        return True

    def _keep_schedule(self) -> None:
        """While the store is unreachable: each scan that falls due by the watches last
        read is counted as missed (a scan could not reach the store either)."""
        now_ns = time.time_ns()
        for wid, (watch, stats) in self.known.items():
            if not watch.enabled or wid in self.running or not self._due(watch, stats, now_ns):
                continue
            self.outage.missed.append((watch, now_ns))
            self.known[wid] = (watch, {**stats, "last_scan_start": iso_from_ns(now_ns)})
            self.failed = True
            self.outcomes.append({"watch_id": wid, "result": "failed", "duration_seconds": 0,
                                  "reason": "store unreachable"})

    def _sleep(self) -> None:
        end = time.monotonic() + TICK
        while self.stopping is None and time.monotonic() < end:
            if self.outage is None and any(c.proc.poll() is not None
                                           for c in self.running.values()):
                return  # a slot came free
            time.sleep(0.05)

    # -- starting ----------------------------------------------------------------------

    def _start_due(self, store: Store) -> int:
        """Start the due watches while slots are free; returns how many started."""
        now_ns = time.time_ns()
        started = 0
        watches = list_watches(store)
        self.known = {w.watch_id: (w, self.known.get(w.watch_id, (w, {}))[1]) for w in watches}
        for watch in watches:
            if len(self.running) >= self.jobs:
                break
            wid = watch.watch_id
            if not watch.enabled or wid in self.running or self._lingering(wid):
                continue
            if self.once and wid in self.started_once:
                continue
            stats = store.stats_row(wid) or {}
            self.known[wid] = (watch, stats)
            if not self._due(watch, stats, now_ns):
                continue
            self._start(watch)
            started += 1
        return started

    def _next_due(self, store: Store) -> str:
        """What `run --once` says when nothing was due: which watch is due next, and when
        (before jitter)."""
        due = sorted((next_due_ns(w.interval, store.stats_row(w.watch_id) or {},
                                  w.last_scan) or 0, w.watch_id)
                     for w in list_watches(store) if w.enabled)
        if not due:
            return "nothing to scan: no enabled watch (wqscan add PATH --collection NAME)"
        when, wid = due[0]
        return f"nothing due; the next is {wid} at {iso_from_ns(when)}"

    def _due(self, watch: Watch, stats: dict, now_ns: int) -> bool:
        """Due when the interval (plus a little jitter, drawn once per attempt) has passed
        since the last attempt, and the circuit breaker does not say rest. The interval is
        read afresh every tick, so a changed one takes effect at once."""
        if circuit_open(stats, now_ns):
            return False
        attempt = stats.get("last_scan_start") or watch.last_scan
        if attempt is None:
            return True
        seen = self.jitter.get(watch.watch_id)
        if seen is None or seen[0] != attempt:
            seen = self.jitter[watch.watch_id] = (attempt, random.random())
        interval = watch.interval
        jitter = seen[1] * min(MAX_JITTER, JITTER * interval)
        return now_ns >= next_due_ns(interval, stats, watch.last_scan, jitter)

    def _lingering(self, wid: str) -> bool:
        return any(c.watch.watch_id == wid for c in self.abandoned)

    def _start(self, watch: Watch) -> None:
        # the scheduler abandons the child itself: no deadline of its own (--timeout 0)
        cmd = [sys.executable, "-P", "-m", "wqscan", *self.db.argv(), "reconcile",
               watch.watch_id, "--timeout", "0", "-q"]
        env = dict(os.environ)
        env.pop("WQSCAN_CONFIG", None)  # the scheduler applies the file; on SIGHUP only
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, env=env)
        timeout = watch.timeout or DEFAULT_TIMEOUT
        now = time.monotonic()
        self.running[watch.watch_id] = _Child(watch, proc, now, time.time_ns(), now + timeout,
                                              leases.holder_id(proc.pid))
        self.started_once.add(watch.watch_id)
        self.log(f"{watch.watch_id}: scan started (pid {proc.pid})")

    # -- finishing ---------------------------------------------------------------------

    def _reap(self, store: Store) -> None:
        now = time.monotonic()
        for wid, child in list(self.running.items()):
            code = child.proc.poll()
            if code is None:
                if now >= child.deadline:
                    self._abandon(store, child)
                    del self.running[wid]
                continue
            del self.running[wid]
            err = child.proc.stderr.read().decode(errors="replace").strip() if child.proc.stderr \
                else ""
            if child.proc.stderr:
                child.proc.stderr.close()
            took = round(now - child.started, 3)
            if code == EXIT_OK:
                self.outcomes.append({"watch_id": wid, "result": "ok", "duration_seconds": took,
                                      "reason": None})
                last = store.stats_row(wid) or {}
                self.log(f"{wid}: scan done in {now - child.started:.2f} s: " + ", ".join(
                    f"{last.get('last_' + k) or 0} {k}" for k in
                    ("ingest", "update", "delete", "deferred")))
            elif code == EXIT_HELD:
                self.outcomes.append({"watch_id": wid, "result": "held", "duration_seconds": took,
                                      "reason": "another process is scanning it"})
                self.log(f"{wid}: skipped, another process is scanning it")
                self._check_holder(store, child)
            else:
                self.failed = True
                line = _reason(err, wid) if err else f"exit code {code}"
                self.outcomes.append({"watch_id": wid, "result": "failed",
                                      "duration_seconds": took, "reason": line})
                self.log(f"{wid}: scan failed: {line}")
                if code == EXIT_UNREACHABLE:  # the store's fault, not the watch's; the scan
                    # could neither record its failure nor give its lease back
                    self._record_failure(store, child, line, breaker=False)
                    leases.release(store, wid, child.holder)
                if code < 0:  # killed: it could not record its own failure, nor release
                    self._record_failure(store, child, f"scan killed by signal {-code}")
                    leases.release(store, wid, child.holder)
        self.abandoned = [c for c in self.abandoned if c.proc.poll() is None]

    def _check_holder(self, store: Store, child: _Child) -> None:
        """A watch held by another process for longer than its timeout (a scan left hung
        by a killed scheduler, say) is reported as failed, once per holder."""
        lease = store.lease(child.watch.watch_id)
        if lease is None:
            return
        holder, acquired, _ = lease
        timeout = child.watch.timeout or DEFAULT_TIMEOUT
        age = (time.time_ns() - parse_iso(acquired)) / 1e9
        if age > timeout and (child.watch.watch_id, acquired) not in self.held_reported:
            self.held_reported.add((child.watch.watch_id, acquired))
            self.failed = True
            reason = (f"another process ({holder}) has held the watch for {age:.0f} s, "
                      f"longer than its {timeout:g} s timeout (a hung scan?)")
            self.log(f"{child.watch.watch_id}: {reason}")
            self._record_failure(store, child, reason)

    def _abandon(self, store: Store, child: _Child) -> None:
        """A scan past its timeout: kill it, report the watch as failed, move on."""
        wid = child.watch.watch_id
        timeout = child.deadline - child.started
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.abandoned.append(child)
        self.failed = True
        reason = abandoned(timeout)
        self.outcomes.append({"watch_id": wid, "result": "failed", "duration_seconds": timeout,
                              "reason": reason})
        self.log(f"{wid}: {reason}")
        self._record_failure(store, child, reason)
        leases.release(store, wid, child.holder)

    def _record_failure(self, store: Store, child: _Child, reason: str,
                        breaker: bool = True) -> None:
        report = WatchReport(child.watch.watch_id)
        report.ok, report.reason = False, reason
        report.duration = time.monotonic() - child.started
        record(store, child.watch, report, child.start_ns, breaker)

    def _stop_children(self, store: Store) -> None:
        """On SIGTERM/SIGINT: ask running scans to end, kill those that do not; a kill
        cannot leave a half-written batch, since every batch is one transaction."""
        children = list(self.running.values())
        for c in children:
            try:
                os.killpg(c.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + STOP_GRACE
        for c in children:
            try:
                code = c.proc.wait(max(0.0, end - time.monotonic()))
                self.log(f"{c.watch.watch_id}: scan stopped (exit {code})")
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(c.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.log(f"{c.watch.watch_id}: scan killed: it did not stop within "
                         f"{STOP_GRACE:g} s")
            if c.proc.stderr:
                c.proc.stderr.close()
            # a scan stopped here leaves no lease for scanners on other hosts to wait out
            leases.release(store, c.watch.watch_id, c.holder)
        self.running.clear()


def _reason(stderr: str, watch_id: str) -> str:
    """Why a scan failed, from the last line its process wrote, without the prefixes that
    line carries on a terminal (`wqscan: error: ID: `): the log adds its own."""
    line = stderr.splitlines()[-1]
    for prefix in ("wqscan: error: ", "wqscan: ", f"{watch_id}: "):
        line = line.removeprefix(prefix)
    return line
