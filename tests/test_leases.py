"""Leases (the scheduler, `reconcile --wait`, exit 75): one process scans a watch at a time,
across real processes; a dead owner's lease is taken over at once; a lease of another host
holds until it expires; `--dry-run` needs none."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from helpers.cli import child_env, one_line, run, wqscan
from helpers.db import Db, scan, watch
from helpers.pg import pg_connect
from helpers.procs import proc_state
from helpers.trees import make_big_tree, write

from wqscan.cli import main
from wqscan.clock import now_iso
from wqscan.reconcile import batches
from wqscan.reconcile.commit import Committer
from wqscan.service import leases

pytestmark = [pytest.mark.scanner_free, pytest.mark.usefixtures("no_ambient_config")]

DIRS = 200
FILES_PER_DIR = 100  # 20,000 files: a first scan long enough to be caught mid-way
WID = "race-docs"
POLL = 0.002  # seconds between two looks at the database or /proc
PATIENCE = 60.0  # seconds a condition may take before the test fails
FAR_FUTURE = "2999-01-01T00:00:00.000Z"
LONG_AGO = "2000-01-01T00:00:00.000Z"


# -- helpers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> tuple[str, set[str]]:
    """DIRS x FILES_PER_DIR small files with old mtimes, built once for the module (scans
    only read it); (resolved root, set of absolute file paths)."""
    root = tmp_path_factory.mktemp("big") / "tree"
    return os.path.realpath(root), set(make_big_tree(root, DIRS, FILES_PER_DIR))


def start(database: Db, *args: str) -> subprocess.Popen:
    """Start `python -m wqscan ARGS` in the background, given the database by the environment
    ($WQSCAN_DB, $WQSCAN_PG_SCHEMA)."""
    return subprocess.Popen([sys.executable, "-m", "wqscan", *args],
                            env=child_env(**database.environ()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def big_db(database, big_tree) -> tuple[Db, set[str]]:
    """A database with watch WID over the module's big tree, not scanned yet: (db, files)."""
    root, files = big_tree
    r = wqscan(database, "add", root, "--collection", "race", "--id", WID)
    assert r.returncode == 0, r.stderr
    return database, files


def leases_rows(db: Db) -> list[tuple[str, str, str]]:
    """(watch_id, owner, expires_at) of every lease row, read by a separate connection."""
    return db.read("SELECT watch_id, owner, expires_at FROM wq_leases ORDER BY watch_id")


def queue_rows(db: Db) -> list[tuple[str, str, str]]:
    """(path, status, operation) of every queue row."""
    return db.read("SELECT file_absolute_path, status, operation FROM ingestion_queue "
                   "ORDER BY file_absolute_path")


def assert_finished(db: Db, files: set[str]) -> None:
    """One pending ingest per file (helpers.ondisk.assert_one_ingest_per_file, on either store),
    and no lease left behind."""
    rows = queue_rows(db)
    assert len(rows) == len(files), f"{len(rows)} rows for {len(files)} files"
    assert {p for p, _, _ in rows} == files
    assert {(s, o) for _, s, o in rows} == {("pending", "ingest")}
    assert leases_rows(db) == []


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2:].split()[19].decode()


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll `condition` until it holds; fail after PATIENCE, or when `proc` ends first."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (exit {proc.returncode}) before {what}: {out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL)


def stop(pid: int) -> None:
    """SIGSTOP a process and wait until the kernel shows it stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: proc_state(pid) in ("T", "t", None), f"process {pid} to stop")


def freeze_holding_lease(proc: subprocess.Popen, db: Db) -> None:
    """Stop a running reconcile while it holds its lease but no write transaction, so that
    other processes can still write and only the lease stands in their way."""
    wait_for(lambda: leases_rows(db), "the first scan's lease row", proc)
    in_write = writing_sqlite if db.kind == "sqlite" else writing_pg
    deadline = time.monotonic() + PATIENCE
    while True:
        stop(proc.pid)
        assert proc.poll() is None, "the first scan ended before it could be frozen"
        if in_write(db):  # frozen inside a batch: let it commit, try again
            os.kill(proc.pid, signal.SIGCONT)
            assert time.monotonic() < deadline, "never caught between two batches"
            time.sleep(POLL)
            continue
        break
    rows = leases_rows(db)
    assert [(w, o.split(":")[1]) for w, o, _ in rows] == [(WID, str(proc.pid))], rows


def writing_sqlite(db: Db) -> bool:
    """Whether another connection holds the SQLite file's write lock."""
    probe = apsw.Connection(db.target.db)
    try:
        probe.set_busy_timeout(0)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            return True
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


def writing_pg(db: Db) -> bool:
    """Whether another connection is inside a transaction that touched the schema's tables
    (it holds a lock on one of them until it ends)."""
    with pg_connect(db) as conn:
        (n,), = conn.execute(
            "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND l.pid <> pg_backend_pid()", (db.target.pg_schema,))
        return n > 0


def insert_lease(db: Db, owner: str, expires_at: str, watch_id: str = WID) -> None:
    """Write a lease row as another process (or host) would."""
    with db.open(create=False) as s, s.write():
        assert s.lease(watch_id) is None
        s.put_lease(watch_id, owner, "2026-01-01T00:00:00.000Z", expires_at)


@pytest.fixture
def small(tmp_path, database) -> tuple[Db, Path]:
    """A database with watch WID over a three-file tree; (db, tree)."""
    tree = tmp_path / "small"
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        write(tree / name, f"content of {name}")
    assert main([*database.argv, "add", str(tree), "--collection", "c", "--id", WID,
                 "--settle", "0", "-q"]) == 0
    return database, tree


@pytest.fixture
def holder():
    """A live process on this host that is not us, as a lease owner string."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        yield proc, f"{socket.gethostname()}:{proc.pid}:{start_time(proc.pid)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()


# -- two processes racing for one watch ----------------------------------------------------

def test_held_watch_exits_75_then_wait_succeeds(big_db):
    """A held watch: reconcile exits 75 with one line; --wait 30 waits, then succeeds once."""
    db, files = big_db
    first = start(db, "reconcile", WID)
    waiter = None
    try:
        freeze_holding_lease(first, db)

        t0 = time.monotonic()
        r = wqscan(db, "reconcile", WID)
        assert r.returncode == 75, (r.stdout, r.stderr)
        assert WID in one_line(r.stderr)
        assert time.monotonic() - t0 < 20, "without --wait the held watch is skipped at once"

        waiter = start(db, "reconcile", WID, "--wait", "30", "--json")
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=1.5)  # it waits while the first still holds the watch

        os.kill(first.pid, signal.SIGCONT)
        out1, err1 = first.communicate(timeout=PATIENCE)
        assert first.returncode == 0, err1
        assert "20000 ingest" in out1
        out2, err2 = waiter.communicate(timeout=PATIENCE)
        assert waiter.returncode == 0, err2
        (report,) = json.loads(out2)["watches"]
        assert report["ok"] and report["files"] == len(files), report
        assert (report["ingest"], report["update"], report["delete"]) == (0, 0, 0), report
    finally:
        for p in (first, waiter):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.communicate()
    assert_finished(db, files)


def test_two_waiting_reconciles_share_the_work(big_db):
    """Two reconciles racing with --wait both succeed and queue each file exactly once."""
    db, files = big_db
    procs = [start(db, "reconcile", WID, "--wait", "30", "--json")]
    try:
        wait_for(lambda: leases_rows(db) or procs[0].poll() is not None, "the first lease")
        procs.append(start(db, "reconcile", WID, "--wait", "30", "--json"))
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=PATIENCE)
            assert p.returncode == 0, err
            (report,) = json.loads(out)["watches"]
            reports.append(report)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert sum(r["ingest"] for r in reports) == len(files), reports
    assert all(r["update"] == r["delete"] == 0 for r in reports), reports
    assert_finished(db, files)


def test_lease_of_killed_reconcile_is_taken_over(big_db):
    """A SIGKILLed scan's lease is taken over at once (exit 0, not 75); one ingest per file."""
    db, files = big_db
    first = start(db, "reconcile", WID)
    try:
        wait_for(lambda: leases_rows(db), "the first scan's lease row", first)
        stop(first.pid)  # freeze it mid-scan, then kill it there
        assert first.poll() is None and leases_rows(db), "the scan ended before the kill"
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=PATIENCE)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    (row,) = leases_rows(db)
    assert row[0] == WID and row[1].split(":")[1] == str(first.pid)  # left behind
    assert row[2] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())  # and not expired

    t0 = time.monotonic()
    r = wqscan(db, "reconcile", WID)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert time.monotonic() - t0 < 30
    assert_finished(db, files)


# -- holder_alive --------------------------------------------------------------------------

def test_holder_alive_for_this_process():
    """This process's holder id names this host, pid and start time, and is alive."""
    me = leases.holder_id()
    assert me == f"{socket.gethostname()}:{os.getpid()}:{start_time(os.getpid())}"
    assert leases.holder_alive(me) is True


def test_holder_alive_for_dead_and_zombie_process():
    """An owner whose process exited is dead, already while it is an unreaped zombie."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        owner = f"{socket.gethostname()}:{proc.pid}:{start_time(proc.pid)}"
        assert leases.holder_alive(owner) is True
        proc.stdin.close()  # the child returns from read() and exits
        wait_for(lambda: proc_state(proc.pid) == "Z", "the child to become a zombie")
        assert leases.holder_alive(owner) is False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert leases.holder_alive(owner) is False


def test_holder_alive_for_reused_pid():
    """A live pid with another start time is a different process: the owner is dead."""
    started = int(start_time(os.getpid()))
    for other in (started + 1, started - 1):
        assert leases.holder_alive(f"{socket.gethostname()}:{os.getpid()}:{other}") is False


def test_holder_alive_for_another_host():
    """On another host nothing can be known: None, even for a pid alive here."""
    owner = f"not-{socket.gethostname()}.invalid:{os.getpid()}:{start_time(os.getpid())}"
    assert leases.holder_alive(owner) is None


# -- leases in the database ---------------------------------------------------------------

def test_unexpired_lease_of_another_host_blocks(capsys, small):
    """An unexpired lease of another host blocks reconcile (75), also with a short --wait."""
    db, _ = small
    owner = "elsewhere.invalid:4242:12345"
    insert_lease(db, owner, FAR_FUTURE)
    rc, out, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 75
    assert WID in one_line(err) and "--wait SECONDS waits for it" in err
    t0 = time.monotonic()
    rc, out, err = run(capsys, *db.argv, "reconcile", WID, "--wait", "0.6")
    assert rc == 75 and time.monotonic() - t0 >= 0.6
    assert WID in one_line(err)
    assert leases_rows(db) == [(WID, owner, FAR_FUTURE)]
    assert queue_rows(db) == []


def test_expired_lease_of_another_host_is_taken_over(capsys, small):
    """An expired lease of another host is taken over: exit 0, files queued, no lease left."""
    db, tree = small
    insert_lease(db, "elsewhere.invalid:4242:12345", LONG_AGO)
    rc, out, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 0, err
    assert [r[2] for r in queue_rows(db)] == ["ingest"] * 3
    assert leases_rows(db) == []


def test_live_local_holder_blocks_until_it_dies(capsys, small, holder):
    """A live local owner blocks even past its expiry; once it dies its lease is taken over."""
    db, _ = small
    proc, owner = holder
    insert_lease(db, owner, LONG_AGO)
    rc, _, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 75
    assert WID in one_line(err)
    assert queue_rows(db) == []
    proc.kill()
    proc.wait()
    rc, _, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 0, err
    assert len(queue_rows(db)) == 3
    assert leases_rows(db) == []


def test_dry_run_needs_no_lease(capsys, small, holder):
    """reconcile --dry-run works while another process holds the lease, and leaves it alone."""
    db, tree = small
    _, owner = holder
    insert_lease(db, owner, FAR_FUTURE)
    rc, out, err = run(capsys, *db.argv, "reconcile", WID, "--dry-run")
    assert rc == 0, err
    assert sorted(line.split()[0] for line in out.splitlines() if line.startswith("ingest")) \
        == ["ingest"] * 3, out
    assert "(dry run)" in out
    assert queue_rows(db) == []
    assert leases_rows(db) == [(WID, owner, FAR_FUTURE)]


def test_lease_removed_after_scans(capsys, small):
    """No lease row remains after a normal scan, a no-change rescan or a failed scan."""
    db, tree = small
    rc, _, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 0, err
    assert leases_rows(db) == []
    rc, _, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 0, err
    assert leases_rows(db) == []
    tree.rename(tree.with_name("gone"))
    rc, _, err = run(capsys, *db.argv, "reconcile", WID)
    assert rc == 1 and "unavailable" in one_line(err)
    assert leases_rows(db) == []


def test_each_commit_renews_the_lease(twin, store, root, monkeypatch):
    """A scan renews its watch's lease with every commit: a lease whose expiry passed before
    a commit (another host could take it over from then on) is pushed forward by it."""
    for d in range(3):
        for i in range(10):
            write(root / f"d{d}" / f"f{i}.txt", f"{d} {i}")
    wid = watch(store, root)
    monkeypatch.setattr(batches, "CHUNK_CHANGES", 10)
    write_batch = Committer._write
    expiries = []

    def after_an_expiry(self, *args):
        holder = store.lease(wid)[0]
        store.transact(lambda: store.renew_lease(wid, holder, "2000-01-01T00:00:00.000Z"))
        write_batch(self, *args)
        expiries.append(store.lease(wid)[2])

    monkeypatch.setattr(Committer, "_write", after_an_expiry)
    assert scan(store, wid).ingest == 30
    assert len(expiries) == 3
    assert all(e > now_iso() for e in expiries), expiries
