"""The circuit breaker of the scheduler: after 5 consecutive failed
scans a watch rests for a cool-down that doubles from 60 s up to 1 h, `run` skips it
meanwhile, tries it again afterwards, and one success closes the circuit. Failures are
real: the watch's root is removed."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import wqscan
from helpers.db import scan, watch
from helpers.trees import write
from prometheus_client.parser import text_string_to_metric_families

from wqscan.clock import iso_from_ns, parse_iso
from wqscan.service import breaker
from wqscan.store import Store

pytestmark = pytest.mark.scanner_free

SLACK_NS = 5_000_000  # stored times have millisecond precision


# -- helpers -------------------------------------------------------------------------------

def stats(store: Store, wid: str) -> dict:
    return store.stats_row(wid) or {}


def fail_once(store: Store, wid: str) -> tuple[int, int]:
    """One failed reconcile of a watch; returns the time bracket (ns) around it."""
    t0 = time.time_ns()
    report = scan(store, wid)
    t1 = time.time_ns()
    assert not report.ok and "unavailable" in report.reason, report.reason
    return t0, t1


def assert_open_for(store: Store, wid: str, seconds: float, bracket: tuple[int, int]) -> None:
    """circuit_open_until is `seconds` after the failure that happened within `bracket`."""
    until = stats(store, wid)["circuit_open_until"]
    assert until is not None, f"circuit closed, expected open for {seconds} s"
    t = parse_iso(until)
    lo, hi = bracket[0] + int(seconds * 1e9), bracket[1] + int(seconds * 1e9)
    assert lo - SLACK_NS <= t <= hi + SLACK_NS, \
        (until, f"expected {seconds} s after the failure: {iso_from_ns(lo)}..{iso_from_ns(hi)}")


def status_of(store: Store, wid: str) -> dict:
    r = wqscan(store.path, "status", "--json")
    assert r.returncode == 0, r.stderr
    (w,) = [w for w in json.loads(r.stdout)["watches"] if w["watch_id"] == wid]
    return w


def circuit_metric(store: Store) -> dict[str, float]:
    """wqscan_circuit_open by watch id, from `wqscan metrics` read by a real parser."""
    r = wqscan(store.path, "metrics")
    assert r.returncode == 0, r.stderr
    for family in text_string_to_metric_families(r.stdout):
        if family.name == "wqscan_circuit_open":
            return {s.labels["watch_id"]: s.value for s in family.samples}
    pytest.fail("no wqscan_circuit_open in the metrics:\n" + r.stdout)


def run_once(store: Store) -> subprocess.CompletedProcess:
    """`wqscan run --once`, once every watch's interval has passed since its last scan (so
    that only the circuit breaker can keep a watch from being due)."""
    for w in store.conn.execute("SELECT watch_id, poll_interval_seconds FROM watch_folders"
                                ).fetchall():
        start = stats(store, w[0]).get("last_scan_start")
        if start:
            due = parse_iso(start) + int(w[1] * 1.1 * 1e9) + 1_000_000  # interval + jitter
            deadline = time.monotonic() + 5
            while time.time_ns() < due:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    return wqscan(store.path, "run", "--once")


def set_circuit(store: Store, wid: str, until_ns: int) -> None:
    """Move the end of a watch's cool-down (as if that much time had passed)."""
    with store.write():
        store.conn.execute("UPDATE wq_watch_stats SET circuit_open_until = ? WHERE watch_id = ?",
                           (iso_from_ns(until_ns), wid))


@pytest.fixture
def broken(store, tmp_path) -> tuple[str, Path]:
    """A watch (interval 0.1 s, so it is always due) whose root has been removed."""
    root = tmp_path / "share"
    write(root / "doc.txt", "hello\n")
    wid = watch(store, root, watch_id="share", interval=0.1)
    shutil.rmtree(root)
    return wid, root


# -- the cool-down schedule ----------------------------------------------------------------

def test_cooldown_schedule():
    """cooldown(): closed below 5 failures, then 60 s doubling per failure, capped at 1 h."""
    assert [breaker.cooldown(n) for n in range(5)] == [None] * 5
    assert [breaker.cooldown(n) for n in range(5, 13)] == \
        [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert breaker.cooldown(100) == 3600


def test_circuit_opens_after_five_failures(store, broken):
    """Four failed scans leave the circuit closed; the fifth opens it for 60 s, visible in
    wq_watch_stats, `status --json` and `metrics`."""
    wid, _ = broken
    for n in range(1, 5):
        fail_once(store, wid)
        s = stats(store, wid)
        assert (s["consecutive_failures"], s["circuit_open_until"]) == (n, None), s
    assert status_of(store, wid)["circuit"] == "closed"
    assert circuit_metric(store) == {wid: 0}

    bracket = fail_once(store, wid)
    s = stats(store, wid)
    assert s["consecutive_failures"] == 5 and s["scans_failed"] == 5, s
    assert_open_for(store, wid, 60, bracket)
    w = status_of(store, wid)
    assert w["circuit"] == f"open until {s['circuit_open_until']}", w
    assert w["last_result"] == "failed" and w["consecutive_failures"] == 5, w
    assert w["next_due"] == s["circuit_open_until"], w  # not before the cool-down ends
    assert circuit_metric(store) == {wid: 1}


def test_cooldown_doubles_up_to_an_hour(store, broken):
    """Each failure after the fifth doubles the cool-down, counted from that failure:
    60, 120, 240, ... s, never more than 3600 s."""
    wid, _ = broken
    for _ in range(4):
        fail_once(store, wid)
    for n, seconds in zip(range(5, 14), (60, 120, 240, 480, 960, 1920, 3600, 3600, 3600)):
        bracket = fail_once(store, wid)
        assert stats(store, wid)["consecutive_failures"] == n
        assert_open_for(store, wid, seconds, bracket)


def test_one_success_closes_the_circuit(store, broken):
    """With the root back, one successful reconcile closes an open circuit and resets the
    count: the next failures start over (closed until the fifth, then 60 s)."""
    wid, root = broken
    for _ in range(7):
        fail_once(store, wid)
    assert stats(store, wid)["circuit_open_until"] is not None
    write(root / "doc.txt", "hello\n")
    report = scan(store, wid)
    assert report.ok, report.reason
    s = stats(store, wid)
    assert (s["circuit_open_until"], s["consecutive_failures"]) == (None, 0), s
    assert status_of(store, wid)["circuit"] == "closed"
    assert circuit_metric(store) == {wid: 0}

    shutil.rmtree(root)
    for n in range(1, 5):
        fail_once(store, wid)
        assert stats(store, wid)["circuit_open_until"] is None, n
    bracket = fail_once(store, wid)
    assert_open_for(store, wid, 60, bracket)


# -- the scheduler honours it --------------------------------------------------------------

def test_run_once_failures_open_the_circuit(store, broken):
    """Five `run --once` in a row fail the watch (exit 1) and open its circuit; a sixth
    skips the watch and exits 0."""
    wid, _ = broken
    for n in range(1, 6):
        r = run_once(store)
        assert r.returncode == 1, (n, r.stderr)
        assert f"{wid}: scan failed" in r.stderr
        assert stats(store, wid)["consecutive_failures"] == n
    assert status_of(store, wid)["circuit"].startswith("open until ")
    r = run_once(store)
    assert r.returncode == 0, r.stderr
    assert "scan started" not in r.stderr, r.stderr
    assert stats(store, wid)["scans_failed"] == 5


def test_run_skips_open_circuit_and_retries_after_cooldown(store, broken, tmp_path):
    """`run --once` skips a due watch whose circuit is open (other watches are scanned);
    once the cool-down has passed it scans it again: a sixth failure rests it 120 s."""
    wid, _ = broken
    healthy = watch(store, write(tmp_path / "ok" / "a.txt").parent, watch_id="healthy",
                    interval=0.1)
    for _ in range(5):
        fail_once(store, wid)
    before = stats(store, wid)

    r = run_once(store)
    assert r.returncode == 0, r.stderr
    assert f"{healthy}: scan started" in r.stderr  # the run did scan
    assert f"{wid}: scan started" not in r.stderr, r.stderr
    after = stats(store, wid)
    assert (after["scans_failed"], after["last_scan_start"], after["circuit_open_until"]) == \
        (before["scans_failed"], before["last_scan_start"], before["circuit_open_until"])

    set_circuit(store, wid, time.time_ns() - 1_000_000_000)  # the cool-down is over
    t0 = time.time_ns()
    r = run_once(store)
    t1 = time.time_ns()
    assert r.returncode == 1, r.stderr
    assert f"{wid}: scan started" in r.stderr and f"{wid}: scan failed" in r.stderr
    s = stats(store, wid)
    assert (s["scans_failed"], s["consecutive_failures"]) == (6, 6), s
    assert_open_for(store, wid, 120, (t0, t1))


def test_run_after_cooldown_success_closes_circuit(store, broken):
    """A watch whose root came back is scanned by `run --once` after its cool-down, and
    that one success closes the circuit."""
    wid, root = broken
    for _ in range(6):
        fail_once(store, wid)
    write(root / "doc.txt", "hello\n")
    set_circuit(store, wid, time.time_ns() - 1_000_000_000)
    r = run_once(store)
    assert r.returncode == 0, r.stderr
    s = stats(store, wid)
    assert (s["last_result"], s["consecutive_failures"], s["circuit_open_until"]) == \
        ("ok", 0, None), s
    assert s["scans_ok"] == 1
    assert status_of(store, wid)["circuit"] == "closed"
    assert circuit_metric(store) == {wid: 0}
