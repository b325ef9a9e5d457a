"""Real signals to real `wqscan run` and `wqscan reconcile` processes during a large first
scan (SPEC §6 rule 6 and "Scheduler"): SIGTERM/SIGINT leave no half-written batch (the
snapshot and the queue stay consistent) and the next scan finishes the work; after a
SIGKILL the dead scanner's lease does not block the next scan."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from helpers import load_twin
from wqscan import _scan_py

DIRS = 150
FILES_PER_DIR = 100  # 15,000 files: three commits of 5,000 operations in a first scan
OLD_NS = 1_700_000_000_123_456_789
POLL = 0.002  # seconds between looks at the queue while a scan runs
PATIENCE = 60.0


# -- the tree and the database -------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[str, set[str]]:
    """15,000 small files with old mtimes, shared (read only) by the tests of this file;
    returns (real root, set of absolute file paths)."""
    root = os.path.realpath(tmp_path_factory.mktemp("signals") / "tree")
    os.mkdir(root)
    files = set()
    for d in range(DIRS):
        dpath = f"{root}/d{d:03d}"
        os.mkdir(dpath)
        for f in range(FILES_PER_DIR):
            p = f"{dpath}/f{f:03d}.txt"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"file %d %d\n" % (d, f))
            finally:
                os.close(fd)
            os.utime(p, ns=(OLD_NS + len(files), OLD_NS + len(files)))
            files.add(p)
    return root, files


@pytest.fixture(params=["c", "py"])
def env(request) -> dict[str, str]:
    """The environment that makes `python -m wqscan` use one scanner twin."""
    load_twin(request.param)
    e = dict(os.environ)
    if request.param == "py":
        e["WQSCAN_NO_EXTENSIONS"] = "1"
    else:
        e.pop("WQSCAN_NO_EXTENSIONS", None)
    return e


def wq(db: Path, env: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-m", "wqscan", "--db", str(db), *args]


def cli(db: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(wq(db, env, *args), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def setup_db(tmp_path: Path, env: dict[str, str], root: str) -> Path:
    db = tmp_path / "wq.db"
    r = cli(db, env, "add", root, "--collection", "sig", "--id", "big", "--settle", "0")
    assert r.returncode == 0, r.stderr
    return db


def query(db: Path, sql: str) -> list[tuple]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def queue_count(db: Path) -> int:
    return query(db, "SELECT count(*) FROM ingestion_queue")[0][0]


def assert_consistent(db: Path, root: str) -> set[str]:
    """Snapshot and queue agree: every file of every directory row has exactly one pending
    ingest, and no queue row exists for a file the snapshot does not hold. Returns the
    files of the snapshot."""
    snap: set[str] = set()
    for key, nfiles, blob in query(db, "SELECT dir, nfiles, entries FROM wq_snapshot "
                                       "WHERE watch_id = 'big'"):
        entries = _scan_py.decode_entries(blob)
        assert nfiles == len(entries), key
        snap.update(f"{root}/{key}{e.name}" for e in entries)
    rows = query(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    paths = [p for p, _, _ in rows]
    assert len(paths) == len(set(paths)), "a file queued twice"
    assert {(s, o) for _, s, o in rows} <= {("pending", "ingest")}
    assert set(paths) - snap == set(), "queue rows for files the snapshot lacks"
    assert snap - set(paths) == set(), "snapshot entries without their queue row"
    return snap


def assert_finished(db: Path, env: dict[str, str], files: set[str]) -> None:
    """A completing reconcile leaves exactly one pending ingest per file."""
    r = cli(db, env, "reconcile", "big")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    rows = query(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    assert len(rows) == len(files)
    assert {p for p, _, _ in rows} == files
    assert {(s, o) for _, s, o in rows} == {("pending", "ingest")}


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def pending_signals(pid: int) -> int:
    """The process-wide pending signal mask (ShdPnd) of a process; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("ShdPnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def gone(pid: int) -> bool:
    """The process has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def wait(cond, what: str, timeout: float = PATIENCE, poll: float = POLL) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(poll)


def freeze_mid_scan(db: Path, scanner: int, total: int, watcher: subprocess.Popen) -> int:
    """As soon as the scanner `scanner` has committed its first batch, stop it with
    SIGSTOP; returns the number of queue rows at that moment (checked to be a partial
    scan)."""

    def ready() -> bool:
        if watcher.poll() is not None:
            pytest.fail(f"process ended (exit {watcher.returncode}) before the first commit")
        return queue_count(db) > 0

    wait(ready, "the first commit of the scan")
    os.kill(scanner, signal.SIGSTOP)
    count = queue_count(db)
    assert 0 < count < total, f"the scan was not stopped midway ({count} of {total} rows)"
    return count


# -- SIGTERM / SIGINT ----------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_to_run_mid_scan_leaves_no_partial_batch(tmp_path, tree, sig):
    """SIGTERM/SIGINT to `wqscan run` during a first scan of 15,000 files: run exits 0
    within a few seconds, its scanner is gone, snapshot and queue are consistent, and the
    next reconcile queues exactly one ingest per file."""
    env = dict(os.environ)
    root, files = tree
    db = setup_db(tmp_path, env, root)
    with open(tmp_path / "run.err", "wb") as err:
        run = subprocess.Popen(wq(db, env, "run"), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    scanner = None
    try:
        def started() -> bool:
            nonlocal scanner
            kids = children(run.pid)
            scanner = kids[0] if kids else None
            return scanner is not None

        wait(started, "run to start a scan")
        frozen = freeze_mid_scan(db, scanner, len(files), run)
        t0 = time.monotonic()
        run.send_signal(sig)
        # run passes SIGTERM on to its scanner; let the scanner take it where it stopped
        wait(lambda: pending_signals(scanner) & (1 << (signal.SIGTERM - 1)) or gone(scanner),
             "run to pass SIGTERM to its scanner", timeout=10)
        os.kill(scanner, signal.SIGCONT)
        rc = run.wait(10)
        took = time.monotonic() - t0
        assert rc == 0, (tmp_path / "run.err").read_text()
        assert took < 5.0, f"run took {took:.1f} s to stop"
        wait(lambda: gone(scanner), "the scanner to end", timeout=5)
    finally:
        if scanner is not None and not gone(scanner):
            os.kill(scanner, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
        run.wait()
    snap = assert_consistent(db, root)
    assert len(snap) >= frozen  # what was committed before the signal stays
    assert len(snap) < len(files)
    assert_finished(db, env, files)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_to_reconcile_mid_scan_leaves_no_partial_batch(tmp_path, tree, env, sig):
    """SIGTERM/SIGINT to `wqscan reconcile` during a first scan of 15,000 files ends it
    within a few seconds with snapshot and queue consistent; the next reconcile queues
    exactly one ingest per file."""
    root, files = tree
    db = setup_db(tmp_path, env, root)
    with open(tmp_path / "rec.out", "wb") as out:
        proc = subprocess.Popen(wq(db, env, "reconcile"), env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        freeze_mid_scan(db, proc.pid, len(files), proc)
        os.kill(proc.pid, sig)
        os.kill(proc.pid, signal.SIGCONT)
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reconcile still running 5 s after signal {sig.name}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    output = (tmp_path / "rec.out").read_text(errors="replace")
    if sig == signal.SIGTERM:
        assert rc == -signal.SIGTERM, (rc, output)
    else:
        assert rc == 130, (rc, output)
        assert "Traceback" not in output, output
    snap = assert_consistent(db, root)
    assert 0 < len(snap) < len(files)
    assert_finished(db, env, files)


# -- SIGKILL: the dead scanner's lease -----------------------------------------------------

@pytest.mark.parametrize("then", ["reconcile", "run --once"])
def test_sigkill_run_mid_scan_lease_taken_over(tmp_path, tree, then):
    """SIGKILL of `wqscan run` and of its scanner mid-scan (a crashed service) leaves a
    lease owned by a dead process; the next `reconcile` or `run --once` takes it over
    (no exit 75, no "skipped") and finishes with one ingest per file."""
    env = dict(os.environ)
    root, files = tree
    db = setup_db(tmp_path, env, root)
    with open(tmp_path / "run.err", "wb") as err:
        run = subprocess.Popen(wq(db, env, "run"), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    scanner = None
    try:
        def started() -> bool:
            nonlocal scanner
            kids = children(run.pid)
            scanner = kids[0] if kids else None
            return scanner is not None

        wait(started, "run to start a scan")
        freeze_mid_scan(db, scanner, len(files), run)
        run.kill()
        run.wait()
        os.kill(scanner, signal.SIGKILL)
        wait(lambda: gone(scanner), "the scanner to die", timeout=5)
    finally:
        if scanner is not None and not gone(scanner):
            os.kill(scanner, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
        run.wait()
    (owner,) = query(db, "SELECT owner FROM wq_leases WHERE watch_id = 'big'")[0]
    assert owner.split(":")[1] == str(scanner), owner  # left behind by the dead scanner
    assert_consistent(db, root)

    if then == "reconcile":
        r = cli(db, env, "reconcile", "big")
        assert r.returncode == 0, (r.returncode, r.stderr)
    else:
        r = cli(db, env, "run", "--once")
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert "big: scan done" in r.stderr and "skipped" not in r.stderr, r.stderr
    (ok, failed, result) = query(db, "SELECT scans_ok, scans_failed, last_result "
                                     "FROM wq_watch_stats WHERE watch_id = 'big'")[0]
    assert (ok, failed, result) == (1, 0, "ok")
    assert query(db, "SELECT count(*) FROM wq_leases") == [(0,)]
    rows = query(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    assert {p for p, _, _ in rows} == files and len(rows) == len(files)
    assert {(s, o) for _, s, o in rows} == {("pending", "ingest")}
