"""Real signals to real `wqscan run` and `wqscan reconcile` processes during a large first
scan (crash safety, the scheduler's leases): SIGTERM/SIGINT leave no half-written batch (the
snapshot and the queue stay consistent) and the next scan finishes the work; after a
SIGKILL the dead scanner's lease does not block the next scan."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from helpers.cli import wqscan, wqscan_argv
from helpers.ondisk import assert_one_ingest_per_file, read_rows
from helpers.procs import children, holds_tree, pending_signals, proc_state
from helpers.trees import OLD_NS, make_big_tree
from helpers.twins import load_twin, twin_environ

from wqscan import _scan_py

DIRS = 150
FILES_PER_DIR = 100  # 15,000 files: three commits of 5,000 operations in a first scan
POLL = 0.002  # seconds between looks at the queue while a scan runs
PATIENCE = 60.0
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # as docs/operations.md documents them
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
BIG = 16 << 30  # a sparse file whose hash takes tens of seconds here
STOPPED_WITHIN = 2.0  # seconds: "within a second", with room for a loaded machine


# -- the tree and the database -------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[str, set[str]]:
    """15,000 small files with old mtimes, shared (read only) by the tests of this file;
    returns (real root, set of absolute file paths)."""
    root = tmp_path_factory.mktemp("signals") / "tree"
    return os.path.realpath(root), set(make_big_tree(root, DIRS, FILES_PER_DIR))


def setup_db(tmp_path: Path, env: dict[str, str], root: str) -> Path:
    db = tmp_path / "wq.db"
    r = wqscan(db, "add", root, "--collection", "sig", "--id", "big", "--settle", "0", env=env,
               timeout=300)
    assert r.returncode == 0, r.stderr
    return db


def queue_count(db: Path) -> int:
    return read_rows(db, "SELECT count(*) FROM ingestion_queue")[0][0]


def assert_consistent(db: Path, root: str) -> set[str]:
    """Snapshot and queue agree: every file of every directory row has exactly one pending
    ingest, and no queue row exists for a file the snapshot does not hold. Returns the
    files of the snapshot."""
    snap: set[str] = set()
    for key, nfiles, blob in read_rows(db, "SELECT dir, nfiles, entries FROM wq_snapshot "
                                           "WHERE watch_id = 'big'"):
        entries = _scan_py.decode_entries(blob)
        assert nfiles == len(entries), key
        snap.update(f"{root}/{key}{e.name}" for e in entries)
    rows = read_rows(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    paths = [p for p, _, _ in rows]
    assert len(paths) == len(set(paths)), "a file queued twice"
    assert {(s, o) for _, s, o in rows} <= {("pending", "ingest")}
    assert set(paths) - snap == set(), "queue rows for files the snapshot lacks"
    assert snap - set(paths) == set(), "snapshot entries without their queue row"
    return snap


def assert_finished(db: Path, env: dict[str, str], files: set[str]) -> None:
    """A completing reconcile leaves exactly one pending ingest per file."""
    r = wqscan(db, "reconcile", "big", env=env, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert_one_ingest_per_file(db, files)


def gone(pid: int) -> bool:
    """The process has ended (a zombie counts as ended)."""
    return proc_state(pid) in (None, "Z")


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


@contextmanager
def run_frozen_mid_scan(tmp_path: Path, db: Path, env: dict[str, str], total: int
                        ) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """`wqscan run` started and its scanner frozen by freeze_mid_scan: yields (run, the
    scanner's pid, the queue rows then); whatever is left of both is killed afterwards."""
    with open(tmp_path / "run.err", "wb") as err:
        run = subprocess.Popen(wqscan_argv(db, "run"), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    scanner = None
    try:
        def started() -> bool:
            nonlocal scanner
            kids = children(run.pid)
            scanner = kids[0] if kids else None
            return scanner is not None

        wait(started, "run to start a scan")
        yield run, scanner, freeze_mid_scan(db, scanner, total, run)
    finally:
        if scanner is not None and not gone(scanner):
            os.kill(scanner, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
        run.wait()


# -- SIGTERM / SIGINT ----------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_to_run_mid_scan_leaves_no_partial_batch(tmp_path, tree, sig):
    """SIGTERM/SIGINT to `wqscan run` during a first scan of 15,000 files: run exits 0
    within a few seconds, its scanner is gone, snapshot and queue are consistent, and the
    next reconcile queues exactly one ingest per file."""
    env = dict(os.environ)
    root, files = tree
    db = setup_db(tmp_path, env, root)
    with run_frozen_mid_scan(tmp_path, db, env, len(files)) as (run, scanner, frozen):
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
        proc = subprocess.Popen(wqscan_argv(db, "reconcile"), env=env, stdin=subprocess.DEVNULL,
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
    assert rc == EXIT_CODES[sig], (rc, output)
    assert output.endswith(f"wqscan: {WORDS[sig]}\n") and "Traceback" not in output, output
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
    with run_frozen_mid_scan(tmp_path, db, env, len(files)) as (run, scanner, _):
        run.kill()
        run.wait()
        os.kill(scanner, signal.SIGKILL)
        wait(lambda: gone(scanner), "the scanner to die", timeout=5)
    (owner,) = read_rows(db, "SELECT owner FROM wq_leases WHERE watch_id = 'big'")[0]
    assert owner.split(":")[1] == str(scanner), owner  # left behind by the dead scanner
    assert_consistent(db, root)

    if then == "reconcile":
        r = wqscan(db, "reconcile", "big", env=env, timeout=300)
        assert r.returncode == 0, (r.returncode, r.stderr)
    else:
        r = wqscan(db, "run", "--once", env=env, timeout=300)
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert "big: scan done" in r.stderr and "skipped" not in r.stderr, r.stderr
    (ok, failed, result) = read_rows(db, "SELECT scans_ok, scans_failed, last_result "
                                         "FROM wq_watch_stats WHERE watch_id = 'big'")[0]
    assert (ok, failed, result) == (1, 0, "ok")
    assert read_rows(db, "SELECT count(*) FROM wq_leases") == [(0,)]
    assert_one_ingest_per_file(db, files)


# -- a signal while a big file is being hashed ---------------------------------------------

def big_tree(tmp_path: Path, size: int) -> tuple[str, str]:
    """A tree holding a sparse file of `size` bytes and a small file, both old; returns
    (real root, the big file's path)."""
    root = tmp_path / "tree"
    root.mkdir()
    big = root / "huge.bin"
    with open(big, "wb") as f:
        f.truncate(size)
    (root / "a.txt").write_text("a")
    for p in (big, root / "a.txt"):
        os.utime(p, ns=(OLD_NS, OLD_NS))
    return os.path.realpath(root), os.path.realpath(big)


def snapshot_rows(db: Path) -> list[tuple]:
    return read_rows(db, "SELECT dir, entries FROM wq_snapshot ORDER BY dir")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("scan_kind", ["first", "rescan"])
def test_signal_while_hashing_a_16_gib_file(tmp_path, env, sig, scan_kind):
    """Ctrl-C (or SIGTERM) while a scan hashes a 16 GiB file stops `reconcile` at once,
    whichever thread hashes it (a worker in a first scan, the calling thread in a rescan of
    a file that grew): exit 130 (143), one line, nothing written for the batch, the lease
    given back."""
    root, big = big_tree(tmp_path, 1 if scan_kind == "rescan" else BIG)
    db = tmp_path / "wq.db"
    r = wqscan(db, "add", root, "--collection", "big", "--id", "big", "--settle", "0", env=env)
    assert r.returncode == 0, r.stderr
    if scan_kind == "rescan":
        r = wqscan(db, "reconcile", env=env)
        assert r.returncode == 0, r.stderr
        os.truncate(big, BIG)
        os.utime(big, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
        read_rows(db, "SELECT 1")  # the database settled before the scan
    before = (read_rows(db, "SELECT * FROM ingestion_queue ORDER BY queue_id"),
              snapshot_rows(db))
    proc = subprocess.Popen(wqscan_argv(db, "reconcile"), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: holds_tree(proc.pid, big) or proc.poll() is not None,
             "the scan to open the big file")
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)  # well into the file
        assert holds_tree(proc.pid, big), "the hash ended before the signal"
        t0 = time.monotonic()
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=STOPPED_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reconcile still hashing {STOPPED_WITHIN} s after {sig.name}")
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == EXIT_CODES[sig], (proc.returncode, out, err)
    assert err == f"wqscan: {WORDS[sig]}\n", (err, took)
    assert (read_rows(db, "SELECT * FROM ingestion_queue ORDER BY queue_id"),
            snapshot_rows(db)) == before
    assert read_rows(db, "SELECT count(*) FROM wq_leases") == [(0,)]


def test_sigterm_to_run_stops_a_child_hashing_a_16_gib_file(tmp_path):
    """`wqscan run` passes SIGTERM to a scan hashing a 16 GiB file, which ends by itself
    (exit 143) rather than being killed after the grace period; run exits 0."""
    root, big = big_tree(tmp_path, BIG)
    db = tmp_path / "wq.db"
    env = dict(os.environ)
    r = wqscan(db, "add", root, "--collection", "big", "--id", "big", "--settle", "0", env=env)
    assert r.returncode == 0, r.stderr
    run = subprocess.Popen(wqscan_argv(db, "run"), env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        scanner: list[int] = []

        def hashing() -> bool:
            if run.poll() is not None:
                pytest.fail(f"run ended: {run.communicate()}")
            scanner[:] = children(run.pid)
            return bool(scanner) and holds_tree(scanner[0], big)

        wait(hashing, "run's scan to hash the big file")
        run.send_signal(signal.SIGTERM)
        try:
            _, err = run.communicate(timeout=STOPPED_WITHIN + 5)
        except subprocess.TimeoutExpired:
            pytest.fail("run did not stop")
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
        for pid in scanner:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert run.returncode == 0, err
    assert "big: scan stopped (exit 143)" in err, err
    assert read_rows(db, "SELECT count(*) FROM ingestion_queue") == [(0,)]
    assert read_rows(db, "SELECT count(*) FROM wq_leases") == [(0,)]


def test_signal_while_a_worker_hashes_the_directory_awaited(tmp_path):
    """Ctrl-C while a worker thread hashes a 16 GiB file in the very directory the calling
    thread waits for: the walk lets go of that directory only once the worker has stopped
    (valgrind sees no access of the compiled scanner to freed memory), and exits 130."""
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (.ci/run installs it)")
    load_twin("c")
    root = tmp_path / "tree"
    big = root / "sub" / "huge.bin"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as f:
        f.truncate(BIG)
    (root / "a.txt").write_text("a")
    for p in (big, root / "a.txt"):
        os.utime(p, ns=(OLD_NS, OLD_NS))
    db = tmp_path / "wq.db"
    env = twin_environ("c")
    r = wqscan(db, "add", root, "--collection", "big", "--id", "big", "--settle", "0",
               "--threads", "4", env=env)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "valgrind.log"
    proc = subprocess.Popen(["valgrind", "--quiet", f"--log-file={log}", "--leak-check=no",
                             *wqscan_argv(db, "reconcile")],
                            env={**env, "PYTHONMALLOC": "malloc"}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: holds_tree(proc.pid, os.path.realpath(big)) or proc.poll() is not None,
             "a worker to open the big file", timeout=120)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)  # the calling thread is waiting for sub/ by now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err)
    scanner_errors = [line for line in log.read_text().splitlines() if "_scan_c" in line]
    assert not scanner_errors, "\n".join(scanner_errors)
