"""Proof under faults: real processes, real filesystems, no mocks.

1. A file rewritten or growing while it is hashed is deferred (no operation, counted in
   `reconcile --json`), and queued correctly once it is stable.
2. A database locked by another writer for longer than the busy retries: `reconcile`
   and `queue claim` fail cleanly (exit 1, one line naming the database), nothing is
   half-written, the next run converges.
3. The database on a full filesystem: one error line, the database keeps its previous
   content, and the next scan after room is made converges.
4. A read-only database (read-only bind mount; a 0444 file opened by a non-root user):
   writing commands fail with one line, reading commands work where SQLite can read.
5. `wqscan run` SIGKILLed (with its scan children) again and again while the tree
   changes and a consumer drains the queue: no operation lost, none applied twice, and
   the consumer's view equals the tree.
6. The error line of a database fault (full, read-only) names the database.

Mounting needs root; those tests skip without it.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import apsw
import consumer_log
import pytest
from helpers.cli import wqscan, wqscan_argv
from helpers.ondisk import read_only, read_rows
from helpers.procs import holds_tree
from helpers.trees import OLD_NS, h, write_file

from wqscan import _scan_py

POLL = 0.002

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts filesystems: needs root")


# -- shared helpers --------------------------------------------------------------------------

def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def report_of(r: subprocess.CompletedProcess) -> dict:
    """The single watch report of a successful `reconcile --json`."""
    ok(r)
    (rep,) = json.loads(r.stdout)["watches"]
    assert rep["ok"], rep
    return rep


def error_line(r: subprocess.CompletedProcess, codes: tuple[int, ...] = (1, 2)) -> str:
    """A clean failure: an expected exit code, and stderr holding exactly one line
    `wqscan: error: ...` and no traceback. Returns the line."""
    assert r.returncode in codes, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, (r.args, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (r.args, "expected one error line", r.stderr)
    assert lines[0].startswith("wqscan: error: "), (r.args, lines[0])
    return lines[0]


def dump(db: Path | str, tables: tuple[str, ...] | None = None) -> dict[str, list[tuple]]:
    """Every row of every table (or of `tables`), order-independent."""
    with read_only(db) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
                for n in names if tables is None or n in tables}


def integrity(db: Path | str) -> str:
    return read_rows(db, "PRAGMA integrity_check")[0][0]


def queue_rows(db: Path | str, status: str | None = None) -> list[dict[str, Any]]:
    """Queue rows with metadata decoded."""
    sql = ("SELECT queue_id, file_absolute_path, operation, status, metadata "
           "FROM ingestion_queue")
    args: tuple = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    return [{"queue_id": q, "path": p, "operation": o, "status": s,
             "metadata": json.loads(m) if m else None}
            for q, p, o, s, m in read_rows(db, sql + " ORDER BY file_absolute_path", args)]


def snapshot_files(db: Path | str, watch_id: str, root: str) -> set[str]:
    """The absolute paths of every file the snapshot of a watch holds."""
    files: set[str] = set()
    for key, nfiles, blob in read_rows(db, "SELECT dir, nfiles, entries FROM wq_snapshot "
                                       "WHERE watch_id = ?", (watch_id,)):
        entries = _scan_py.decode_entries(blob)
        assert nfiles == len(entries), key
        files.update(f"{root}/{key}{e.name}" for e in entries)
    return files


def mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stderr)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# -- 1. files changing while they are hashed ---------------------------------------------------

CHUNK = 1 << 20
REWRITE_CHUNKS = 48  # the rewritten file: 48 MiB, rewritten 1 MiB at a time
APPEND_BASE = 32 * CHUNK  # the growing file starts at 32 MiB...
APPEND = 16 << 10  # ...and grows by 16 KiB at a time

#: A writer process. Each step changes the file (`rewrite`: one 1 MiB chunk of the next
#: version, in place; `append`: 16 KiB more) and then sets its mtime to OLD_NS + step, so
#: that between steps the file always looks old (settle never applies) and every step
#: leaves a distinct mtime: the content of the file at mtime OLD_NS + k is known exactly.
#: A rewrite stops only on a whole version. Prints the last step.
WRITER = r"""
import os, struct, sys, time
mode, path, start, stop, ready = sys.argv[1:]
start = int(start)
OLD, CHUNK, N, APPEND = %d, %d, %d, %d
def chunk(v, i):
    return struct.pack("<QQ", v, i) * (CHUNK // 16)
fd = os.open(path, os.O_WRONLY | (os.O_APPEND if mode == "append" else 0))
k = start
while True:
    if os.path.exists(stop) and (mode == "append" or k %% N == 0):
        break
    k += 1
    if mode == "rewrite":
        os.pwrite(fd, chunk(1 + (k - 1) // N, (k - 1) %% N), ((k - 1) %% N) * CHUNK)
    else:
        os.write(fd, struct.pack("<QQ", k, 0xA99E) * (APPEND // 16))
        time.sleep(0.0003)
    os.utime(path, ns=(OLD + k, OLD + k))
    if k == start + 1:
        open(ready, "w").close()
os.close(fd)
print(k)
""" % (OLD_NS, CHUNK, REWRITE_CHUNKS, APPEND)


def rw_chunk(version: int, i: int) -> bytes:
    return struct.pack("<QQ", version, i) * (CHUNK // 16)


def rewrite_state(k: int) -> bytes:
    """The rewritten file's content after step k (0: version 0 throughout)."""
    if k == 0:
        return b"".join(rw_chunk(0, i) for i in range(REWRITE_CHUNKS))
    v, last = 1 + (k - 1) // REWRITE_CHUNKS, (k - 1) % REWRITE_CHUNKS
    return b"".join(rw_chunk(v if i <= last else v - 1, i) for i in range(REWRITE_CHUNKS))


def append_base() -> bytes:
    return b"".join(rw_chunk(0, i) for i in range(APPEND_BASE // CHUNK))


class Writer:
    """The writer process, started and stopped around a phase of scans."""

    def __init__(self, mode: str, path: Path, start: int, work: Path) -> None:
        self.stop_file = work / f"stop.{start}"
        ready = work / f"ready.{start}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, mode, str(path), str(start), str(self.stop_file),
             str(ready)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the writer did not start"
            time.sleep(POLL)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Stop it on a whole version; returns its last step."""
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return int(out)


def pending_row(db: Path, path: str) -> dict | None:
    rows = [r for r in queue_rows(db, "pending") if r["path"] == path]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def check_scan_while_writing(db: Path, env: dict, big: str, mode: str, before: dict | None,
                             writer: Writer) -> bool:
    """One `reconcile --json` while the writer runs. The big file is either deferred (no
    new operation for it, counted as deferred) or, should the writer have paused for the
    whole read, queued with exactly the content the file had at the mtime recorded.
    Returns whether it was deferred."""
    rep = report_of(wqscan(db, "reconcile", "--json", env=env))
    assert writer.running(), "the writer stopped during the scan"
    row = pending_row(db, big)
    if row == before:
        assert rep["deferred"] >= 1, ("no operation for the changing file, yet not counted "
                                      "as deferred", rep)
        return True
    # a new operation: it must be a state the file really had, complete and consistent
    meta = row["metadata"]
    k = meta["mtime_ns"] - OLD_NS
    assert 0 <= k < 10**9, ("an operation for a file caught mid-write (mtime not one the "
                            "writer set)", meta)
    if mode == "rewrite":
        expected = rewrite_state(k)
    else:
        expected = append_base() + b"".join(struct.pack("<QQ", j, 0xA99E) * (APPEND // 16)
                                             for j in range(1, k + 1))
    assert meta["size"] == len(expected), ("size of the queued version", meta)
    assert meta["content_hash"] == h(expected), (
        "queued a hash that is no version of the file: the file changed while it was "
        "hashed and was not deferred", meta)
    return False


@needs_root
@pytest.mark.parametrize("mode", ["rewrite", "append"])
def test_file_changing_while_hashed_is_deferred(tmp_path, env, mode):
    """A 48 MiB file rewritten in place (or a 32 MiB file growing) by another process
    during the scans: every scan while it changes defers it (no operation, counted as
    deferred), first when it is new and again when it is known; once the writer stops,
    the next scan queues it with the hash of its final content (ingest, then update with
    the right previous_hash), and a further scan finds nothing."""
    with tmpfs(tmp_path / "fs", "256m") as fs:
        root = fs / "tree"
        root.mkdir()
        root_s = os.path.realpath(root)
        for name in ("a.txt", "b.txt"):
            write_file(f"{root_s}/{name}", name.encode() * 100, OLD_NS - 10**9)
        big = f"{root_s}/big.bin"
        write_file(big, rewrite_state(0) if mode == "rewrite" else append_base(), OLD_NS)
        db = tmp_path / "wq.db"
        ok(wqscan(db, "add", root_s, "--collection", "c", "--id", "w", "--settle", "0", env=env))
        step = 0
        deferred_by_phase = []
        for phase in ("new", "known"):
            before = pending_row(db, big)
            writer = Writer(mode, Path(big), step, tmp_path)
            try:
                deferred = [check_scan_while_writing(db, env, big, mode, before, writer)
                            for _ in range(2)]
                if phase == "new":  # the small files went in meanwhile, the big one did not
                    assert {r["path"] for r in queue_rows(db)} >= {f"{root_s}/a.txt",
                                                                   f"{root_s}/b.txt"}
            finally:
                step = writer.stop()
            deferred_by_phase.append(deferred)
            with open(big, "rb") as f:
                content = f.read()
            if mode == "rewrite":
                assert content == rewrite_state(step)  # the writer did what it says
            else:
                assert len(content) == APPEND_BASE + step * APPEND
            assert os.stat(big).st_mtime_ns == OLD_NS + step
            final = h(content)

            rep = report_of(wqscan(db, "reconcile", "--json", env=env))
            assert rep["deferred"] == 0, rep
            row = pending_row(db, big)
            assert row is not None, "the stable file was not queued"
            meta = row["metadata"]
            assert meta["content_hash"] == final, ("queued hash is not the final content's",
                                                   meta)
            assert (meta["size"], meta["mtime_ns"]) == (len(content), OLD_NS + step)
            if phase == "new":
                assert row["operation"] == "ingest"
                previous = final
                conn = apsw.Connection(str(db))  # a consumer took everything
                try:
                    conn.set_busy_timeout(5000)
                    conn.execute("DELETE FROM ingestion_queue")
                finally:
                    conn.close()
            else:
                assert row["operation"] == "update"
                assert meta["previous_hash"] == previous, meta
                assert len(queue_rows(db)) == 1, queue_rows(db)
            rep = report_of(wqscan(db, "reconcile", "--json", env=env))
            assert (rep["ingest"], rep["update"], rep["delete"], rep["deferred"]) == \
                (0, 0, 0, 0), rep
        print(f"{mode}: scans while writing deferred the file: {deferred_by_phase}")
        # the writer overlapped the hashing: deferral was really exercised in both phases
        assert all(any(d) for d in deferred_by_phase), deferred_by_phase


# -- 2. a database locked by another writer ---------------------------------------------------

@contextmanager
def write_lock(db: Path, timeout_ms: int = 5000) -> Iterator[apsw.Connection]:
    """Hold the database's write lock (BEGIN IMMEDIATE) from this process."""
    conn = apsw.Connection(str(db))
    conn.set_busy_timeout(timeout_ms)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def small_tree(root: Path, n: int, start: int = 0) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    base = os.path.realpath(root)
    files = {}
    for i in range(start, start + n):
        d = f"{base}/d{i % 5}"
        os.makedirs(d, exist_ok=True)
        p = f"{d}/f{i:05d}.txt"
        data = b"file %d\n" % i
        write_file(p, data, OLD_NS + i * 1000)
        files[p] = data
    return files


@pytest.mark.scanner_free
class Changes(NamedTuple):
    """What a tree holds after its first scan (`files`), and what changed since."""

    files: dict[str, bytes]
    changed: dict[str, bytes]
    deleted: list[str]
    created: dict[str, bytes]


def consumed_and_changed(tmp_path: Path, db: Path) -> Changes:
    """A 40-file tree scanned once; a consumer took 30 rows, finished 20 and still works on
    10, 10 wait; then 5 finished files changed, 5 were deleted and 5 files were created."""
    files = small_tree(tmp_path / "tree", 40)
    root = os.path.realpath(tmp_path / "tree")
    ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))
    assert report_of(wqscan(db, "reconcile", "--json"))["ingest"] == 40
    taken = json.loads(ok(wqscan(db, "queue", "claim", "30", "--owner", "me", "--json")).stdout)
    assert len(taken) == 30
    ok(wqscan(db, "queue", "complete", *[t["queue_id"] for t in taken[:20]], "--owner", "me"))
    done = sorted(t["file_absolute_path"] for t in taken[:20])
    changed = {}
    for n, p in enumerate(done[:5]):
        changed[p] = files[p] + b"changed\n"
        write_file(p, changed[p], OLD_NS + 10**12 + n)
    for p in done[5:10]:
        os.unlink(p)
    return Changes(files, changed, done[5:10], small_tree(tmp_path / "tree", 5, start=1000))


class Locked(NamedTuple):
    """How `reconcile`, `queue claim` and the API's claim ended against a locked database."""

    results: dict[str, subprocess.CompletedProcess]  # by command
    took: dict[str, float]  # seconds until each command ended
    api_took: float  # seconds until the API's claim gave up
    busy: BaseException  # what it raised


def run_while_locked(db: Path) -> Locked:
    """Hold the write lock while `reconcile` and `queue claim` run as processes and the
    Python consumer claims; returns how each ended (a command still running after 60 s
    fails the test: a hang)."""
    from wqscan import QueueClient
    from wqscan.errors import DatabaseBusy

    procs: dict[str, subprocess.Popen] = {}
    try:
        with write_lock(db):
            t0 = time.monotonic()
            for name, args in (("reconcile", ("reconcile",)),
                               ("claim", ("queue", "claim", "5", "--owner", "other"))):
                procs[name] = subprocess.Popen(wqscan_argv(db, *args), stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)
            with QueueClient(str(db)) as client:  # the Python consumer, meanwhile
                t1 = time.monotonic()
                with pytest.raises(DatabaseBusy) as busy:
                    client.claim(5)
                api_took = time.monotonic() - t1
            results, took = {}, {}
            while len(took) < len(procs):  # when each one ends (their output is small)
                for name, p in procs.items():
                    if name not in took and p.poll() is not None:
                        took[name] = time.monotonic() - t0
                if time.monotonic() - t0 > 60:
                    pytest.fail(f"still running 60 s into a locked database (hang): "
                                f"{sorted(set(procs) - set(took))}")
                time.sleep(0.01)
            for name, p in procs.items():
                out, err = p.communicate()
                results[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
            # the lock was held the whole time: nothing can have been written
    finally:
        for p in procs.values():
            stop_process(p)
            for f in (p.stdout, p.stderr):
                f.close()
    return Locked(results, took, api_took, busy.value)


def assert_each_change_queued_once(db: Path, ch: Changes, before: dict[str, list[tuple]]
                                   ) -> None:
    """The run after the lock converges: each change queued once with its hashes, the 10
    waiting rows kept, the rows in progress untouched, and a second run finds nothing."""
    rep = report_of(wqscan(db, "reconcile", "--json"))
    assert (rep["ingest"], rep["update"], rep["delete"]) == (5, 5, 5), rep
    rows = queue_rows(db)
    pending = {r["path"]: r for r in rows if r["status"] == "pending"}
    assert len(pending) == sum(r["status"] == "pending" for r in rows), "a file queued twice"
    waiting = {t[1] for t in before["ingestion_queue"] if t[7] == "pending"}
    assert len(waiting) == 10
    assert set(pending) == set(ch.created) | set(ch.changed) | set(ch.deleted) | waiting
    for p, r in pending.items():
        if p in waiting:
            assert r["operation"] == "ingest" and r["metadata"]["content_hash"] == \
                h(ch.files[p])
        elif p in ch.created:
            assert r["operation"] == "ingest"
            assert r["metadata"]["content_hash"] == h(ch.created[p])
        elif p in ch.changed:
            assert r["operation"] == "update"
            assert r["metadata"]["content_hash"] == h(ch.changed[p])
            assert r["metadata"]["previous_hash"] == h(ch.files[p])
        else:
            assert r["operation"] == "delete"
            assert r["metadata"]["content_hash"] == h(ch.files[p])
    # the rows in progress were not touched
    assert [r for r in before["ingestion_queue"] if r[7] == "in_progress"] == \
        [r for r in dump(db)["ingestion_queue"] if r[7] == "in_progress"]
    busy_files = {r["path"] for r in rows if r["status"] == "in_progress"}
    claimed = json.loads(ok(wqscan(db, "queue", "claim", "100", "--json")).stdout)
    assert sorted(c["file_absolute_path"] for c in claimed) == \
        sorted(set(pending) - busy_files)
    rep = report_of(wqscan(db, "reconcile", "--json"))
    assert (rep["ingest"], rep["update"], rep["delete"]) == (0, 0, 0), rep


def test_database_locked_longer_than_retries(tmp_path):
    """While another process holds the write lock: `reconcile` and `queue claim` retry
    (0.5 + 1 + 2 s), then exit 1 with one line naming the locked database, no traceback;
    the API's claim raises DatabaseBusy; the database is unchanged. After the lock is
    released, the next reconcile queues every change exactly once."""
    db = tmp_path / "wq.db"
    ch = consumed_and_changed(tmp_path, db)
    before = dump(db)
    locked = run_while_locked(db)
    assert str(db) in str(locked.busy), locked.busy
    assert locked.api_took >= 3.4, \
        f"the API gave up after {locked.api_took:.1f} s, before its retries"
    for name, r in locked.results.items():
        line = error_line(r, codes=(1,))
        assert str(db) in line, (name, line)
        assert "locked" in line or "busy" in line, (name, line)
    print(f"locked database: API claim gave up after {locked.api_took:.1f} s, the commands "
          f"after { {k: round(v, 1) for k, v in locked.took.items()} } s")
    for name, t in locked.took.items():
        assert t >= 3.4, f"{name} gave up after {t:.1f} s, before the 0.5 + 1 + 2 s retries"
    assert locked.results["reconcile"].stdout == ""
    assert locked.results["claim"].stdout == ""
    assert dump(db) == before, "a run against a locked database changed it"
    assert integrity(db) == "ok"
    assert_each_change_queued_once(db, ch, before)


@pytest.mark.slow
@pytest.mark.scanner_free
def test_database_locked_mid_scan_leaves_whole_batches(tmp_path):
    """A first scan of 7,000 files (commits of 5,000) that finds the database locked
    after its first commit: it fails with exit 1 and one line, what it committed is
    consistent (every snapshot file has its ingest, no queue row without its snapshot
    entry), and the next run queues exactly the rest."""
    base = os.path.realpath(tmp_path)
    root = f"{base}/tree"
    os.mkdir(root)
    files = set()
    for d in range(70):
        os.mkdir(f"{root}/d{d:03d}")
        for f in range(100):
            p = f"{root}/d{d:03d}/f{f:03d}"
            write_file(p, b"%d %d\n" % (d, f), OLD_NS + len(files))
            files.add(p)
    db = tmp_path / "wq.db"
    ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))

    proc = subprocess.Popen(wqscan_argv(db, "reconcile"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while read_rows(db, "SELECT count(*) FROM ingestion_queue")[0][0] == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no first commit"
            time.sleep(POLL)
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = read_rows(db, "SELECT count(*) FROM ingestion_queue")[0][0]
        assert 0 < frozen < len(files)
        lock = apsw.Connection(str(db))
        lock.set_busy_timeout(1000)
        try:
            try:
                lock.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:  # stopped inside its next commit: let it finish that
                os.kill(proc.pid, signal.SIGCONT)
                lock.set_busy_timeout(30000)
                lock.execute("BEGIN IMMEDIATE")
            os.kill(proc.pid, signal.SIGCONT)
            t0 = time.monotonic()
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("reconcile hangs on a locked database")
            print(f"reconcile locked out mid-scan gave up after {time.monotonic() - t0:.1f} s")
            lock.execute("ROLLBACK")
        finally:
            lock.close()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = error_line(r, codes=(1,))
    assert str(db) in line and ("locked" in line or "busy" in line), line
    snap = snapshot_files(db, "w", root)
    rows = queue_rows(db)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a file queued twice"
    assert {(r["status"], r["operation"]) for r in rows} == {("pending", "ingest")}
    assert set(paths) == snap, "snapshot and queue disagree: a half-written batch"
    assert frozen <= len(snap) < len(files)
    assert integrity(db) == "ok"

    rep = report_of(wqscan(db, "reconcile", "--json"))
    assert rep["ingest"] == len(files) - len(snap), rep
    rows = queue_rows(db)
    assert sorted(r["path"] for r in rows) == sorted(files)
    assert snapshot_files(db, "w", root) == files


# -- 3. the database on a full filesystem ------------------------------------------------------

@needs_root
@pytest.mark.scanner_free
def test_database_on_full_filesystem(tmp_path):
    """A scan whose batch needs more room than the database's filesystem has left: one
    error line, exit 1 or 2, no traceback; the database opens, passes an integrity check
    and holds exactly its previous queue and snapshot; reading commands work. With no
    room left at all, commands still fail with one line. After the filesystem is grown,
    the database is intact and the next scan queues every new file once."""
    root = os.path.realpath(tmp_path) + "/tree"
    first = small_tree(Path(root), 20)
    with tmpfs(tmp_path / "dbfs", "4m") as fs:
        db = fs / "wq.db"
        ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))
        assert report_of(wqscan(db, "reconcile", "--json"))["ingest"] == 20
        sub = f"{root}/a_subdirectory_with_a_fairly_long_name_to_make_rows_bigger"
        os.mkdir(sub)
        new = {}
        for i in range(2500):
            p = f"{sub}/new_document_number_{i:05d}_with_a_long_file_name.txt"
            write_file(p, b"new %d\n" % i, OLD_NS + 10**12 + i)
            new[p] = b"new %d\n" % i
        before = dump(db, ("ingestion_queue", "wq_snapshot", "watch_folders"))
        fill(fs, 256 << 10)  # room for small transactions, not for 2,500 queue rows
        r = wqscan(db, "reconcile")
        line = error_line(r)
        assert "full" in line.lower() or "space" in line.lower(), line

        # nothing lost: the database opens and holds what it held
        assert integrity(db) == "ok"
        assert dump(db, ("ingestion_queue", "wq_snapshot", "watch_folders")) == before, \
            "the failed scan changed the queue or the snapshot"
        stats = json.loads(ok(wqscan(db, "queue", "stats", "--json")).stdout)
        assert stats["by_status"]["pending"] == 20, stats

        # no room at all, not even for the WAL index: a scan (and any command that cannot
        # open the database) fails cleanly
        fill(fs, 8 << 10, "ballast2")
        for args in (("reconcile",), ("queue", "stats", "--json")):
            r = wqscan(db, *args)
            if r.returncode != 0 or args[0] == "reconcile":
                error_line(r)

        mount("-o", "remount,size=64m", str(fs))
        assert integrity(db) == "ok"
        assert dump(db, ("ingestion_queue", "wq_snapshot", "watch_folders")) == before
        rep = report_of(wqscan(db, "reconcile", "--json"))
        assert (rep["ingest"], rep["update"], rep["delete"]) == (2500, 0, 0), rep
        rows = queue_rows(db)
        assert len(rows) == 2520
        assert {r["path"] for r in rows} == set(first) | set(new)
        for r in rows:
            data = new.get(r["path"], first.get(r["path"]))
            assert (r["operation"], r["metadata"]["content_hash"]) == ("ingest", h(data))
        rep = report_of(wqscan(db, "reconcile", "--json"))
        assert (rep["ingest"], rep["update"], rep["delete"]) == (0, 0, 0), rep
        assert integrity(db) == "ok"


def fill(fs: Path, leave: int, name: str = "ballast") -> None:
    """Fill a filesystem with a ballast file, leaving about `leave` bytes free."""
    st = os.statvfs(fs)
    with open(fs / name, "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - leave))
    st = os.statvfs(fs)
    assert st.f_bavail * st.f_frsize <= leave + (64 << 10)


# -- 4. a read-only database -------------------------------------------------------------------

WRITERS = (("reconcile",), ("add", "{other}", "--collection", "x"),
           ("queue", "claim", "5"))
READERS = (("list", "--json"), ("status", "--json"), ("queue", "list", "--json"),
           ("queue", "stats", "--json"))


def check_reader(args: tuple[str, ...], out: str, pending: int) -> None:
    """The output of a reading command against the test database."""
    doc = json.loads(out)
    if args[0] == "list":
        assert [w["watch_id"] for w in doc] == ["w"], doc
    elif args[0] == "status":
        assert [w["watch_id"] for w in doc["watches"]] == ["w"], doc
        assert doc["queue"]["pending"]["ingest"] == pending, doc
    elif args[1] == "list":
        assert len(doc) == pending, doc
    else:
        assert doc["by_status"]["pending"] == pending, doc


@needs_root
@pytest.mark.scanner_free
def test_read_only_database_bind_mount(tmp_path):
    """The database seen through a read-only bind mount. Writing commands (reconcile,
    add, queue claim) fail with one line, exit 1 or 2, no traceback; reading commands
    (list, status, queue list, queue stats) work while a writer elsewhere keeps the WAL
    index (-shm) alive. Without a -shm file SQLite cannot open a WAL database in a
    read-only directory (short of `immutable=1`): reading commands then either work or
    fail just as cleanly, with one line naming the database (today they fail). Nothing
    changes; through the writable path the next scan converges."""
    root = os.path.realpath(tmp_path) + "/tree"
    files = small_tree(Path(root), 10)
    other = os.path.realpath(tmp_path) + "/other"
    os.mkdir(other)
    with tmpfs(tmp_path / "rw", "16m") as rw:
        db = rw / "wq.db"
        ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))
        assert report_of(wqscan(db, "reconcile", "--json"))["ingest"] == 10
        write_file(f"{root}/d0/late.txt", b"late\n", OLD_NS + 10**12)
        ro = tmp_path / "ro"
        ro.mkdir()
        mount("--bind", str(rw), str(ro))
        try:
            mount("-o", "remount,bind,ro", str(ro))
            rodb = ro / "wq.db"
            before = dump(db)
            outcomes = {}
            holder = apsw.Connection(str(db))  # a live writer's connection elsewhere
            try:
                holder.execute("SELECT count(*) FROM ingestion_queue").fetchall()
                assert (rw / "wq.db-shm").exists()
                for args in WRITERS:
                    args = tuple(a.format(other=other) for a in args)
                    error_line(wqscan(rodb, *args))
                for args in READERS:
                    r = ok(wqscan(rodb, *args))
                    check_reader(args, r.stdout, 10)
            finally:
                holder.close()
            assert not (rw / "wq.db-shm").exists()
            for args in WRITERS:
                args = tuple(a.format(other=other) for a in args)
                error_line(wqscan(rodb, *args))
            for args in READERS:
                r = wqscan(rodb, *args)
                if r.returncode == 0:
                    check_reader(args, r.stdout, 10)
                    outcomes[args] = "works"
                else:
                    line = error_line(r)
                    assert str(rodb) in line and "open" in line, line
                    outcomes[args] = line
            print("reading commands on a read-only database without -shm:", outcomes)
            assert dump(db) == before
            assert integrity(db) == "ok"
        finally:
            unmount(ro)
        rep = report_of(wqscan(db, "reconcile", "--json"))
        assert (rep["ingest"], rep["update"], rep["delete"]) == (1, 0, 0), rep
        assert len(queue_rows(db)) == len(files) + 1


def _run_as_nobody(argv: list[str], warm_argv: list[str], out_path: str) -> tuple[int, str]:
    """Run `wqscan.cli.main(argv)` in a forked child as uid/gid 65534; returns (exit
    code, stdout+stderr). The interpreter's own files are not readable by that user, so
    the child first runs `warm_argv` as root (against a scratch database) to import
    everything the command needs."""
    import wqscan.cli

    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            wqscan.cli.main(warm_argv)
            sys.stdout.flush()
            sys.stderr.flush()
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.dup2(out, 1)
            os.dup2(out, 2)
            code = wqscan.cli.main(argv)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(out)
    _, status = os.waitpid(pid, 0)
    with open(out_path) as f:
        return os.waitstatus_to_exitcode(status), f.read()


@needs_root
@pytest.mark.scanner_free
def test_read_only_database_file_as_other_user(tmp_path):
    """A database file of mode 0444 (in a directory the user may write) opened by a
    non-root user: writing commands fail with one line, no traceback; reading commands
    work; the file is unchanged."""
    root = os.path.realpath(tmp_path) + "/tree"
    small_tree(Path(root), 10)
    write_file(f"{root}/d1/late.txt", b"late\n", OLD_NS + 10**12)
    work = tempfile.mkdtemp(prefix="wqscan-faults-", dir="/tmp")
    try:
        os.chmod(work, 0o1777)  # the user can create the -wal and -shm files here
        db = f"{work}/wq.db"
        ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))
        write_file(f"{root}/d1/first.txt", b"first\n", OLD_NS + 10**12 + 1)
        ok(wqscan(db, "reconcile"))
        os.unlink(f"{root}/d1/first.txt")  # so a scan would have work: a delete
        before = dump(db)
        pending = read_rows(db, "SELECT count(*) FROM ingestion_queue")[0][0]
        assert pending == 12
        os.chmod(db, 0o444)
        scratch = f"{work}/scratch.db"
        for kind, args in [("write", a) for a in WRITERS] + [("read", a) for a in READERS]:
            args = [a.format(other=work) for a in args]
            shutil.copyfile(db, scratch)
            os.chmod(scratch, 0o644)
            code, output = _run_as_nobody(["--db", db, *args], ["--db", scratch, *args],
                                          str(tmp_path / "nobody.out"))
            r = subprocess.CompletedProcess(args, code, "", output)
            if kind == "write":
                error_line(r)
            else:
                assert code == 0, (args, output)
                check_reader(tuple(args), output, pending)
        os.chmod(db, 0o644)
        assert dump(db) == before
        assert integrity(db) == "ok"
    finally:
        shutil.rmtree(work, ignore_errors=True)


@needs_root
@pytest.mark.scanner_free
def test_database_fault_errors_name_the_database(tmp_path):
    """Errors are one readable line naming the thing at fault. When the fault
    is the database's (its filesystem is full, it is read-only), the line names the
    database file, as the busy error does ("database PATH is locked by another
    writer ..."), rather than passing on a bare SQLite message through the catch-all
    handler for unexpected errors ("FullError: database or disk is full (-v shows the
    traceback)")."""
    root = os.path.realpath(tmp_path) + "/tree"
    small_tree(Path(root), 10)
    other = os.path.realpath(tmp_path) + "/other"
    os.mkdir(other)
    lines: dict[str, tuple[str, str]] = {}
    with tmpfs(tmp_path / "fs", "4m") as fs:
        db = fs / "wq.db"
        ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0"))
        ok(wqscan(db, "reconcile"))
        sub = f"{root}/a_subdirectory_with_a_fairly_long_name_to_make_rows_bigger"
        os.mkdir(sub)
        for i in range(2500):
            write_file(f"{sub}/new_document_number_{i:05d}_with_a_long_file_name.txt",
                       b"new %d\n" % i, OLD_NS + 10**12 + i)
        fill(fs, 256 << 10)
        lines["reconcile, full filesystem"] = (str(db), error_line(wqscan(db, "reconcile")))
        os.unlink(fs / "ballast")
        ro = tmp_path / "ro"
        ro.mkdir()
        mount("--bind", str(fs), str(ro))
        try:
            mount("-o", "remount,bind,ro", str(ro))
            holder = apsw.Connection(str(db))  # a writer elsewhere keeps it readable
            try:
                holder.execute("SELECT count(*) FROM ingestion_queue").fetchall()
                for args in WRITERS:
                    args = tuple(a.format(other=other) for a in args)
                    what = " ".join(args[:2]) if args[0] == "queue" else args[0]
                    lines[f"{what}, read-only database"] = (
                        str(ro / "wq.db"), error_line(wqscan(ro / "wq.db", *args)))
            finally:
                holder.close()
        finally:
            unmount(ro)
    unnamed = [f"{what}: {line!r}" for what, (path, line) in lines.items()
               if path not in line]
    assert not unnamed, unnamed


# -- 5. SIGKILL of `wqscan run`, again and again -----------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc's children lists of all its threads."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def kill_run(proc: subprocess.Popen) -> int:
    """SIGKILL `wqscan run`, its process group and its scan children's groups (they run
    in sessions of their own). It is frozen first so that it starts no scan meanwhile.
    Returns how many scan processes died with it."""
    try:
        os.kill(proc.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    kids = descendants(proc.pid)
    for k in kids:
        try:
            if os.getpgid(k) == k:
                os.killpg(k, signal.SIGKILL)
            else:
                os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return len(kids)


def wait_for_scan(run: subprocess.Popen, root: str, walking: bool) -> int:
    """Wait until `run` has a scan child (that, if `walking`, holds a descriptor on the
    tree); returns its pid."""
    deadline = time.monotonic() + 20
    while True:
        assert run.poll() is None, f"run ended by itself (exit {run.returncode})"
        assert time.monotonic() < deadline, "run started no scan"
        for pid in descendants(run.pid):
            if not walking or holds_tree(pid, root):
                return pid
        time.sleep(POLL)


class Mutator:
    """Random changes with exact, never reused mtimes: create, rewrite (in place, also
    keeping the size), delete, rename."""

    def __init__(self, root: str, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.seq = 0
        self.dirs = [f"{root}/d{i}" for i in range(8)]

    def mtime(self) -> int:
        self.seq += 1
        return OLD_NS + 10**12 + self.seq * 1_000_003

    def files(self) -> list[str]:
        return sorted(f"{d}/{n}" for d in self.dirs for n in os.listdir(d))

    def step(self, n: int) -> None:
        rng = self.rng
        for _ in range(n):
            files = self.files()
            action = rng.choices(("create", "rewrite", "same-size", "delete", "rename"),
                                 (3, 3, 2, 2, 2))[0]
            if action == "create" or not files:
                p = f"{rng.choice(self.dirs)}/n{self.seq}_{rng.randrange(10**6)}.txt"
                write_file(p, os.urandom(rng.randrange(1, 3000)), self.mtime())
            elif action == "rewrite":
                write_file(rng.choice(files), os.urandom(rng.randrange(1, 3000)), self.mtime())
            elif action == "same-size":
                p = rng.choice(files)
                write_file(p, os.urandom(os.path.getsize(p)), self.mtime())
            elif action == "delete":
                os.unlink(rng.choice(files))
            else:
                os.rename(rng.choice(files),
                          f"{rng.choice(self.dirs)}/m{self.seq}_{rng.randrange(10**6)}.txt")
                self.seq += 1


@pytest.mark.slow
@pytest.mark.scanner_free
def test_sigkill_run_repeatedly_loses_and_duplicates_nothing(tmp_path):
    """`wqscan run` (interval 0.2 s, settle 0) is SIGKILLed with its scan children at
    random moments, up to 32 times (at least 30, at least 10 of them during a scan), while
    the tree changes between (and sometimes during) its runs and a consumer drains the
    queue, logging each row before completing it. After a final reconcile and drain: no
    row applied twice, every operation applied to a file in a valid state (ingest when
    absent, update and delete when present), nothing left in the queue, and the
    consumer's view equals the tree (XXH3-128). A failure names its random seed;
    WQSCAN_FAULTS_SEED=N replays the same choices."""
    seed = int(os.environ.get("WQSCAN_FAULTS_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    root = os.path.realpath(tmp_path) + "/tree"
    os.mkdir(root)
    mut = Mutator(root, rng)
    for d in mut.dirs:
        os.mkdir(d)
    for i in range(1500):
        write_file(f"{mut.dirs[i % 8]}/f{i:04d}.txt", os.urandom(rng.randrange(1, 3000)),
                   OLD_NS + i * 1000)
    db = tmp_path / "wq.db"
    ok(wqscan(db, "add", root, "--collection", "c", "--id", "w", "--settle", "0",
          "--interval", "0.2"))
    log, stop = tmp_path / "applied.jsonl", tmp_path / "stop"
    err = open(tmp_path / "consumer.err", "wb")
    consumer = subprocess.Popen(consumer_log.command(db, log, stop, "--batch", "25", "--lease",
                                                     "600", "--retry-busy"),
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    kills = with_scans = 0
    runs_log = open(tmp_path / "run.err", "wb")
    try:
        deadline = time.monotonic() + 45
        while kills < 32 and time.monotonic() < deadline:
            mut.step(rng.randrange(3, 15))
            run = subprocess.Popen(wqscan_argv(db, "run", "--jobs", "1"), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=runs_log,
                                   start_new_session=True)
            try:
                how = rng.choice(("any time", "scan started", "scan walking"))
                if how == "any time":  # starting up, scanning, or idle between scans
                    time.sleep(rng.uniform(0.05, 1.0))
                else:
                    wait_for_scan(run, root, how == "scan walking")
                    if rng.random() < 0.3:  # changes while it scans
                        mut.step(rng.randrange(1, 6))
                    time.sleep(rng.uniform(0, 0.1 if how == "scan started" else 0.01))
                assert run.poll() is None, f"run ended by itself (exit {run.returncode})"
            finally:
                n = kill_run(run)
            kills += 1
            with_scans += n > 0
            assert consumer.poll() is None, (tmp_path / "consumer.err").read_text()
        assert kills >= 30, f"seed {seed}: only {kills} kills in the time allowed"
        assert with_scans >= 10, f"seed {seed}: only {with_scans} of {kills} kills hit a scan"
        assert integrity(db) == "ok"

        r = wqscan(db, "reconcile", "--json")
        rep = report_of(r)
        assert rep["deferred"] == 0, rep
        stop.touch()
        try:
            consumer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the consumer did not drain the queue")
        assert consumer.returncode == 0, (tmp_path / "consumer.err").read_text()
    finally:
        stop.touch()
        stop_process(consumer)
        err.close()
        runs_log.close()
    left = read_rows(db, "SELECT status, operation, file_absolute_path FROM ingestion_queue")
    assert left == [], f"rows left in the queue: {left[:10]}"
    view, problems, lines = consumer_log.replay(log)
    applied = len(lines)
    tree = consumer_log.tree_hashes(root)
    for p in sorted(set(view) | set(tree)):
        if view.get(p) != tree.get(p):
            problems.append(f"{p}: the consumer holds {view.get(p)}, the tree has {tree.get(p)}")
    assert not problems, (f"seed {seed}, {kills} kills ({with_scans} during scans), "
                          f"{applied} rows applied", problems[:20])
    assert applied >= 1500
