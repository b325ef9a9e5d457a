"""`wqscan run` as a real process over a real database (each test on an SQLite file and on
a PostgreSQL schema): watches on short intervals are scanned repeatedly, the watch list is
re-read while it runs, `--jobs` limits concurrent scans, `--once` is the cron form, and
SIGTERM/SIGINT stop it promptly."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from helpers.cli import wqscan, wqscan_argv
from helpers.db import Db
from helpers.procs import alive, children
from helpers.trees import OLD_NS, write

from wqscan.clock import iso_from_ns, parse_iso

pytestmark = pytest.mark.scanner_free

DEADLINE = 30.0  # seconds a scheduler gets to reach an expected state before the test fails
POLL = 0.05


# -- helpers -------------------------------------------------------------------------------

def ok(db: Db, *args: str) -> str:
    """A command that must exit 0; returns its stdout."""
    r = wqscan(db, *args)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # the time of a log line


def tree(path: Path, names: tuple[str, ...] = ("a.txt", "sub/b.txt")) -> str:
    """A small tree with old mtimes; returns its real path."""
    for n in names:
        write(path / n, f"content of {n}\n")
    return os.path.realpath(path)


def add(db: Db, root: str, wid: str, *extra: str, interval: str = "1") -> None:
    """`wqscan add ROOT --id WID --interval N --settle 0 EXTRA`."""
    out = ok(db, "add", root, "--collection", "c", "--id", wid, "--interval", interval,
             "--settle", "0", *extra)
    assert out.strip() == wid


def stats(db: Db) -> dict[str, dict]:
    """wq_watch_stats by watch id (read while the scheduler writes)."""
    return {d["watch_id"]: d for d in db.read("SELECT * FROM wq_watch_stats", dicts=True,
                                              busy_ms=2000)}


def scans_ok(db: Db, wid: str) -> int:
    return stats(db).get(wid, {}).get("scans_ok", 0)


def pending(db: Db) -> dict[str, str]:
    """{absolute path: operation} of the pending queue rows."""
    return dict(db.read("SELECT file_absolute_path, operation FROM ingestion_queue "
                        "WHERE status = 'pending'", busy_ms=2000))


class Starts:
    """Distinct scan starts of each watch, collected by polling wq_watch_stats (a scan
    takes well under its 1 s interval, so polling every 50 ms sees each one)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.seen: dict[str, list[tuple[str, float | None]]] = {}

    def poll(self) -> None:
        for wid, s in stats(self.db).items():
            start = s.get("last_scan_start")
            runs = self.seen.setdefault(wid, [])
            if start and (not runs or runs[-1][0] != start):
                runs.append((start, s.get("last_scan_duration")))

    def count(self, wid: str) -> int:
        return len(self.seen.get(wid, []))


class Run:
    """`wqscan run ARGS` as a child process, stderr to a file; always stopped at the end."""

    def __init__(self, db: Db, tmp: Path, *args: str, quiet: bool = False) -> None:
        self.db = db
        n = len(list(tmp.glob("run-*.err")))
        self.log_path = tmp / f"run-{n}.err"
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                wqscan_argv(db, "run", *args, *(["-q"] if quiet else [])),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        """Pids of every scan this run started (from its log lines)."""
        return [int(p) for p in re.findall(r"scan started \(pid (\d+)\)", self.log())]

    def children(self) -> list[int]:
        """Current child processes of the scheduler."""
        return children(self.proc.pid)

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = DEADLINE,
                 each: Callable[[], None] | None = None) -> None:
        """Poll until `cond` holds; fail if the deadline passes or `run` exits."""
        end = time.monotonic() + timeout
        while True:
            if each is not None:
                each()
            if cond():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"run exited ({self.proc.returncode}) before {what}:\n{self.log()}")
            if time.monotonic() > end:
                pytest.fail(f"not reached within {timeout} s: {what}\n{self.log()}")
            time.sleep(POLL)

    def stop(self, sig: int = signal.SIGTERM, within: float = 5.0) -> tuple[int, float]:
        """Send `sig`; returns (exit code, seconds until exit); fails after `within`."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run did not exit within {within} s of signal {sig}:\n{self.log()}")
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        kill_leftovers(self.child_pids(), self.db.marker)


def kill_leftovers(pids: list[int], marker: str) -> None:
    for pid in pids:
        if alive(pid, marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def db(database: Db) -> Db:
    """The test's database: an SQLite file, or a PostgreSQL schema."""
    return database


@pytest.fixture
def runs(db, tmp_path):
    """Starts `wqscan run` processes and stops whatever is left of them afterwards."""
    started: list[Run] = []

    def start(*args: str, quiet: bool = False) -> Run:
        r = Run(db, tmp_path, *args, quiet=quiet)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


# -- the long-running scheduler ------------------------------------------------------------

def test_run_scans_enabled_watches_repeatedly(db, tmp_path, runs):
    """Two enabled watches on 1 s intervals are scanned again and again, a disabled one
    never; the log names each scanned watch; the queue holds the enabled watches' files."""
    a = tree(tmp_path / "a")
    b = tree(tmp_path / "b")
    c = tree(tmp_path / "c")
    add(db, a, "alpha")
    add(db, b, "beta")
    add(db, c, "gamma", "--disabled")
    starts = Starts(db)
    run = runs()
    run.wait_for(lambda: starts.count("alpha") >= 3 and starts.count("beta") >= 3,
                 "three scans of each enabled watch", each=starts.poll)
    s = stats(db)
    assert s["alpha"]["scans_ok"] >= 3 and s["beta"]["scans_ok"] >= 3, s
    assert s["alpha"]["scans_failed"] == s["beta"]["scans_failed"] == 0, s
    # the starts really advance, and no more often than the 1 s interval
    for wid in ("alpha", "beta"):
        times = [parse_iso(t) / 1e9 for t, _ in starts.seen[wid]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps and min(gaps) >= 0.999, (wid, gaps)
    assert "gamma" not in s or (s["gamma"]["scans_ok"], s["gamma"]["scans_failed"]) == (0, 0)
    assert db.read("SELECT last_scan FROM watch_folders WHERE watch_id = 'gamma'") == \
        [(None,)]
    q = pending(db)
    assert set(q) == {f"{r}/{n}" for r in (a, b) for n in ("a.txt", "sub/b.txt")}, q
    assert set(q.values()) == {"ingest"}

    rc, _ = run.stop()
    assert rc == 0
    log = run.log()
    for wid in ("alpha", "beta"):
        assert f"{wid}: scan started" in log and f"{wid}: scan done" in log, log
    assert "gamma" not in log, log


def test_run_queues_changes_made_while_running(db, tmp_path, runs):
    """Files created, modified and deleted while `run` runs end up in the queue as one
    ingest, one update and one delete, and nothing more."""
    root = tree(tmp_path / "t", ("keep.txt", "mod.txt", "gone.txt"))
    add(db, root, "t")
    run = runs()
    run.wait_for(lambda: len(pending(db)) == 3, "the first scan's three ingests")
    db.write("DELETE FROM ingestion_queue WHERE status = 'pending'")

    stage = tmp_path / "stage"  # same filesystem: files appear by an atomic rename
    write(stage / "new", "a new file\n", OLD_NS + 5)
    os.rename(stage / "new", Path(root) / "new.txt")
    write(stage / "mod", "modified, and longer than before\n", OLD_NS + 7)
    os.rename(stage / "mod", Path(root) / "mod.txt")
    os.unlink(Path(root) / "gone.txt")

    want = {f"{root}/new.txt": "ingest", f"{root}/mod.txt": "update",
            f"{root}/gone.txt": "delete"}
    run.wait_for(lambda: pending(db) == want, f"the queue to become {want}")
    seen = time.time_ns()
    # a further scan, started after that, of the unchanged tree adds nothing
    run.wait_for(lambda: parse_iso(stats(db)["t"]["last_scan_start"]) > seen,
                 "a scan that started after the changes were queued")
    assert stats(db)["t"]["last_result"] == "ok"
    assert pending(db) == want
    assert run.stop()[0] == 0


def test_watch_added_while_running_is_picked_up(db, tmp_path, runs):
    """A watch added with `wqscan add` while `run` runs is scanned, repeatedly, by the
    same process."""
    a = tree(tmp_path / "a")
    add(db, a, "alpha")
    run = runs()
    run.wait_for(lambda: scans_ok(db, "alpha") >= 1, "the first scan of alpha")
    b = tree(tmp_path / "b", ("late.txt",))
    add(db, b, "beta")
    run.wait_for(lambda: scans_ok(db, "beta") >= 2, "two scans of the new watch")
    assert f"{b}/late.txt" in pending(db)
    assert run.proc.poll() is None  # not restarted
    assert run.stop()[0] == 0
    assert "beta: scan started" in run.log()


def test_watch_disabled_while_running_stops_being_scanned(db, tmp_path, runs):
    """After `wqscan disable`, `run` stops scanning that watch (at most a scan already
    under way finishes) while the other keeps its schedule."""
    a = tree(tmp_path / "a")
    b = tree(tmp_path / "b")
    add(db, a, "alpha")
    add(db, b, "beta")
    starts = Starts(db)
    run = runs()
    run.wait_for(lambda: starts.count("alpha") >= 1 and starts.count("beta") >= 1,
                 "a first scan of both", each=starts.poll)
    ok(db, "disable", "beta")
    at_disable = starts.count("beta")
    mark = starts.count("alpha")
    run.wait_for(lambda: starts.count("alpha") >= mark + 2, "two more scans of alpha",
                 each=starts.poll)
    settled = starts.count("beta")
    assert settled <= at_disable + 1, starts.seen["beta"]
    mark = starts.count("alpha")
    run.wait_for(lambda: starts.count("alpha") >= mark + 2, "two more scans of alpha",
                 each=starts.poll)
    assert starts.count("beta") == settled, starts.seen["beta"]
    assert run.stop()[0] == 0


def test_jobs_1_scans_both_one_at_a_time(db, tmp_path, runs):
    """With `--jobs 1` both watches are still scanned repeatedly, and never two scans run
    at once."""
    a = tree(tmp_path / "a")
    b = tree(tmp_path / "b")
    add(db, a, "alpha")
    add(db, b, "beta")
    starts = Starts(db)
    run = runs("--jobs", "1")
    most = 0

    def each() -> None:
        nonlocal most
        starts.poll()
        most = max(most, len(run.children()))

    run.wait_for(lambda: starts.count("alpha") >= 3 and starts.count("beta") >= 3,
                 "three scans of each watch", each=each)
    assert most == 1, f"{most} scans ran at once"
    assert run.stop()[0] == 0


def test_jobs_default_scans_due_watches_together(db, tmp_path, runs):
    """Without `--jobs 1`, watches due together are scanned concurrently (the control
    for the `--jobs 1` test: the child count it measures does reach 2)."""
    for wid in ("alpha", "beta", "delta"):
        add(db, tree(tmp_path / wid), wid)
    run = runs()
    most = 0

    def each() -> None:
        nonlocal most
        most = max(most, len(run.children()))

    run.wait_for(lambda: most >= 2, "two scans at once", each=each)
    assert run.stop()[0] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_run_promptly(db, tmp_path, runs, sig):
    """SIGTERM or SIGINT makes a running scheduler exit 0 within a few seconds, leaving no
    scan process behind."""
    add(db, tree(tmp_path / "a"), "alpha")
    add(db, tree(tmp_path / "b"), "beta")
    run = runs()
    run.wait_for(lambda: scans_ok(db, "alpha") >= 1 and scans_ok(db, "beta") >= 1,
                 "a first scan of both")
    rc, took = run.stop(sig, within=5.0)
    assert rc == 0, run.log()
    assert took < 5.0
    assert re.search(rf"^wqscan: {STAMP} stopping on {signal.Signals(sig).name}: ending \d "
                     r"running scan\(s\)$", run.log(), re.M), run.log()
    end = time.monotonic() + 5
    while any(alive(p, db.marker) for p in run.child_pids()) and time.monotonic() < end:
        time.sleep(POLL)
    assert not [p for p in run.child_pids() if alive(p, db.marker)]


# -- run --once ----------------------------------------------------------------------------

@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"]], ids=["default", "jobs1"])
def test_once_scans_each_due_watch_once(db, tmp_path, jobs):
    """`run --once` (also with `--jobs 1`) scans every enabled due watch exactly once and
    exits 0; a second `--once` right after scans nothing, since no watch is due again."""
    a = tree(tmp_path / "a")
    b = tree(tmp_path / "b")
    c = tree(tmp_path / "c")
    add(db, a, "alpha", interval="3600")
    add(db, b, "beta", interval="3600")
    add(db, c, "gamma", "--disabled", interval="3600")

    first = wqscan(db, "run", "--once", *jobs, timeout=60)
    assert first.returncode == 0, first.stderr
    s = stats(db)
    assert (s["alpha"]["scans_ok"], s["beta"]["scans_ok"]) == (1, 1), s
    assert "gamma" not in s or s["gamma"]["scans_ok"] == 0
    assert first.stderr.count("alpha: scan started") == 1, first.stderr
    assert first.stderr.count("beta: scan started") == 1, first.stderr
    for wid in ("alpha", "beta"):  # each line says when, and what the scan queued
        assert re.search(rf"^wqscan: {STAMP} {wid}: scan done in [0-9.]+ s: 2 ingest, "
                         "0 update, 0 delete, 0 deferred$", first.stderr, re.M), first.stderr
    assert "gamma" not in first.stderr
    assert len(pending(db)) == 4
    starts = {w: s[w]["last_scan_start"] for w in ("alpha", "beta")}

    second = wqscan(db, "run", "--once", *jobs, timeout=60)
    assert second.returncode == 0, second.stderr
    s = stats(db)
    assert (s["alpha"]["scans_ok"], s["beta"]["scans_ok"]) == (1, 1), s
    assert {w: s[w]["last_scan_start"] for w in ("alpha", "beta")} == starts
    assert "scan started" not in second.stderr, second.stderr
    # nothing was due: it says which watch is next, and when
    last, first_due = min((s[w]["last_scan_start"], w) for w in ("alpha", "beta"))
    line, = second.stderr.splitlines()
    assert re.fullmatch(rf"wqscan: {STAMP} nothing due; the next is {first_due} at {STAMP}",
                        line), line
    assert line.endswith(iso_from_ns(parse_iso(last) + 3600 * 10**9)), (line, last)


def test_once_exits_nonzero_when_a_watch_fails(db, tmp_path):
    """`run --once` exits 1 when a watch failed (its root removed), records the failure,
    and still scans the healthy watch."""
    a = tree(tmp_path / "a")
    gone = tree(tmp_path / "gone")
    add(db, a, "alpha", interval="3600")
    add(db, gone, "lost", interval="3600")
    shutil.rmtree(gone)
    r = wqscan(db, "run", "--once", timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    s = stats(db)
    assert s["alpha"]["scans_ok"] == 1 and s["alpha"]["last_result"] == "ok", s
    assert s["lost"]["scans_failed"] == 1 and s["lost"]["last_result"] == "failed", s
    assert gone in s["lost"]["last_reason"], s["lost"]
    # one prefix: the log's own, not the child's `wqscan: error: lost: ` again
    assert re.search(rf"^wqscan: {STAMP} lost: scan failed: root {gone} unavailable",
                     r.stderr, re.M), r.stderr
    assert set(pending(db)) == {f"{a}/a.txt", f"{a}/sub/b.txt"}


def test_quiet_run_logs_nothing(db, tmp_path):
    """`run --once -q` scans but writes no log lines (the control for the log checks)."""
    add(db, tree(tmp_path / "a"), "alpha", interval="3600")
    r = wqscan(db, "run", "--once", "-q", timeout=60)
    assert r.returncode == 0
    assert r.stderr == ""
    assert scans_ok(db, "alpha") == 1


def test_interval_changed_while_running_takes_effect(db, tmp_path, runs):
    """A watch whose interval is shortened (3600 s to 1 s) in watch_folders while `run`
    runs, as another tool or a reloaded configuration would do, is rescanned on the new
    interval without a restart."""
    add(db, tree(tmp_path / "a"), "alpha", interval="3600")
    add(db, tree(tmp_path / "b"), "beta")  # its scans show that the loop went on
    run = runs()

    def looked_again() -> bool:
        """run started beta after it had reaped alpha's first scan, so it has since
        computed when alpha is next due (watches are looked at in id order)."""
        log = run.log()
        done = log.find("alpha: scan done")
        return done >= 0 and "beta: scan started" in log[done:]

    run.wait_for(looked_again, "a tick of the scheduler after alpha's first scan")
    assert scans_ok(db, "alpha") == 1
    db.write("UPDATE watch_folders SET poll_interval_seconds = 1 WHERE watch_id = 'alpha'")
    run.wait_for(lambda: scans_ok(db, "alpha") >= 3, "two more scans on the 1 s interval",
                 timeout=8)
    assert run.stop()[0] == 0


def test_once_abandons_a_scan_that_stops_responding(db, tmp_path, runs):
    """A scan that stops making progress (its process frozen with SIGSTOP) is abandoned
    after the watch's `--timeout`: killed, recorded as failed ("abandoned"), `run --once`
    exits 1, and the other watch is scanned meanwhile."""
    add(db, tree(tmp_path / "a"), "alpha", "--timeout", "1", interval="3600")
    add(db, tree(tmp_path / "b"), "beta", interval="3600")
    run = runs("--once", "--jobs", "1")  # alpha first, alone
    end = time.monotonic() + DEADLINE
    # catch it long before it could finish, but after its exec (before it, the child's
    # command line is still the scheduler's)
    while not ((kids := run.children()) and alive(kids[0], "alpha")):
        assert run.proc.poll() is None and time.monotonic() < end, run.log()
        time.sleep(0.001)
    frozen = kids[0]
    os.kill(frozen, signal.SIGSTOP)
    assert alive(frozen, "alpha"), "caught the wrong scan"
    try:
        rc = run.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("run --once did not finish:\n" + run.log())
    log = run.log()
    assert rc == 1, log
    assert "alpha: scan abandoned after 1 s" in log, log
    assert "beta: scan done" in log, log
    s = stats(db)
    assert s["alpha"]["last_result"] == "failed" and "abandoned" in s["alpha"]["last_reason"]
    assert s["alpha"]["scans_failed"] == 1 and s["beta"]["scans_ok"] == 1, s
    end = time.monotonic() + 5
    while alive(frozen, db.marker) and time.monotonic() < end:
        time.sleep(POLL)
    assert not alive(frozen, db.marker), "the abandoned scan was not killed"
