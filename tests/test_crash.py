"""SIGKILL a real `wqscan reconcile` process at chosen moments: no change is lost, none is
queued twice, and the next run finishes the work (SPEC §6 rule 6)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import apsw
import pytest
import xxhash

from helpers import build_wqm_db, load_twin

pytestmark = pytest.mark.slow

DIRS = 200
FILES_PER_DIR = 100  # 20,000 files in all
#: Old enough that neither the default settle time nor the racy rule ever applies.
OLD_NS = 1_700_000_000_123_456_789
POLL = 0.002  # seconds between two looks at the database
PATIENCE = 120.0  # seconds a kill point may take to be reached before the test fails


@pytest.fixture(params=["c", "py"])
def env(request) -> dict[str, str]:
    """The environment that makes `python -m wqscan` use one scanner twin."""
    load_twin(request.param)  # skips `c` when the test run asks for the pure scanner
    e = dict(os.environ)
    if request.param == "py":
        e["WQSCAN_NO_EXTENSIONS"] = "1"
    else:
        e.pop("WQSCAN_NO_EXTENSIONS", None)
    return e


def backend(env: dict[str, str]) -> str:
    """What `_scan.BACKEND` must say in a process started with `env`."""
    return "python" if env.get("WQSCAN_NO_EXTENSIONS") else "cython"


def _write(path: str, data: bytes, mtime_ns: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _content(i: int, version: int = 0) -> bytes:
    return b"file %d version %d\n" % (i, version)


def build_tree(root: Path) -> dict[str, bytes]:
    """DIRS x FILES_PER_DIR small files with old, distinct mtimes; {absolute path: content}."""
    root.mkdir()
    base = os.path.realpath(root)
    files: dict[str, bytes] = {}
    i = 0
    for d in range(DIRS):
        dpath = f"{base}/d{d:03d}"
        os.mkdir(dpath)
        for f in range(FILES_PER_DIR):
            p = f"{dpath}/f{f:03d}.txt"
            data = _content(i)
            _write(p, data, OLD_NS + i * 1_000)
            files[p] = data
            i += 1
    return files


def cli(db: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `python -m wqscan --db DB ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "wqscan", "--db", str(db), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(params=["wqscan", "wqm"])
def layout(request) -> str:
    """The queue layout: wqscan's own database, or workspace-qdrant-mcp's state database."""
    return request.param


class Queue:
    """A separate read-only connection that watches the queue while the scanner writes."""

    def __init__(self, db: Path, layout: str) -> None:
        self.conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        # one row per path, which is its key, waiting as long as it is there
        self.key = "queue_id, status" if layout == "wqscan" else \
            "file_absolute_path, 'pending'"

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM ingestion_queue").fetchall()[0][0]

    def rows(self) -> list[tuple[str, str, str, str, dict]]:
        """(queue_id, path, status, operation, metadata) of every row."""
        return [(q, p, s, o, json.loads(m)) for q, s, p, o, m in self.conn.execute(
            f"SELECT {self.key}, file_absolute_path, operation, metadata "
            "FROM ingestion_queue ORDER BY file_absolute_path")]

    def backend(self) -> str:
        return self.conn.execute("SELECT last_backend FROM wq_watch_stats").fetchall()[0][0]

    def close(self) -> None:
        self.conn.close()


def walking(pid: int, root: str) -> bool:
    """True while process `pid` holds a descriptor open on the tree (its walk is under way)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == root or target.startswith(root + "/"):
            return True
    return False


def kill_reconcile(db: Path, env: dict[str, str], tmp: Path,
                   when: Callable[[subprocess.Popen], bool]) -> None:
    """Start `wqscan reconcile` and SIGKILL it as soon as `when` holds."""
    with open(tmp / "killed.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wqscan", "--db", str(db), "reconcile"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + PATIENCE
    try:
        while not when(proc):
            if proc.poll() is not None:
                pytest.fail(f"reconcile ended (exit {proc.returncode}) before the kill point: "
                            + (tmp / "killed.out").read_text(errors="replace"))
            if time.monotonic() > deadline:
                pytest.fail("the kill point was not reached in time")
            time.sleep(POLL)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the scan finished before the kill landed"


def finish(db: Path, env: dict[str, str]) -> dict:
    """Run `wqscan reconcile --json` to completion and return the watch's report."""
    r = cli(db, env, "reconcile", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (report,) = json.loads(r.stdout)["watches"]
    assert report["ok"], report
    return report


def hash_of(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def setup_watch(tmp_path: Path, env: dict[str, str], layout: str
                ) -> tuple[Path, str, dict[str, bytes]]:
    files = build_tree(tmp_path / "tree")
    root = os.path.realpath(tmp_path / "tree")
    db = tmp_path / "wq.db"
    if layout == "wqm":
        build_wqm_db(db, extras=True)
    r = cli(db, env, "add", root, "--collection", "crash")
    assert r.returncode == 0, r.stdout + r.stderr
    return db, root, files


def assert_quiet_rescan(db: Path, env: dict[str, str], q: Queue) -> None:
    """A further reconcile finds nothing and leaves the queue exactly as it was."""
    before = q.rows()
    report = finish(db, env)
    assert (report["ingest"], report["update"], report["delete"], report["deferred"]) \
        == (0, 0, 0, 0), report
    assert q.rows() == before


def test_first_scan_killed_repeatedly(tmp_path, env, layout):
    """A first scan SIGKILLed before any commit and after 1, 2 and 3 batches ends with one
    ingest per file (in either queue layout)."""
    db, root, files = setup_watch(tmp_path, env, layout)
    q = Queue(db, layout)
    try:
        moments = [
            lambda p: walking(p.pid, root) and q.count() == 0,
            lambda p: q.count() > 0,
            lambda p: q.count() > 5000,
            lambda p: q.count() > 12000,
        ]
        seen = []
        for when in moments:
            kill_reconcile(db, env, tmp_path, when)
            seen.append(q.count())
        # every kill left the work unfinished, and the queue only ever grew
        assert seen == sorted(seen) and seen[-1] < len(files), seen
        assert seen[1] > 0 and seen[2] > 5000 and seen[3] > 12000, seen
        report = finish(db, env)
        assert q.backend() == backend(env)
        assert report["ingest"] == len(files) - seen[-1], report

        rows = q.rows()
        assert len(rows) == len(files)
        assert {r[1] for r in rows} == set(files)
        for _qid, path, status, op, meta in rows:
            assert (status, op) == ("pending", "ingest"), (path, status, op)
            assert meta["content_hash"] == hash_of(files[path]), path
            assert meta["relative_path"] == os.path.relpath(path, root)
        assert_quiet_rescan(db, env, q)
    finally:
        q.close()


def test_update_scan_killed_midway(tmp_path, env, layout):
    """After a drained first scan, 5,000 modified and 1,000 deleted files, a rescan
    SIGKILLed mid-walk and between its batches ends with one update or delete per file
    (in either queue layout)."""
    db, root, files = setup_watch(tmp_path, env, layout)
    q = Queue(db, layout)
    try:
        assert finish(db, env)["ingest"] == len(files)
        with apsw.Connection(str(db)) as w:
            w.execute("DELETE FROM ingestion_queue")

        paths = sorted(files)
        modified = {p: files[p] for p in paths[0::4]}  # 5,000
        deleted = {p: files[p] for p in paths[1::20]}  # 1,000
        new: dict[str, bytes] = {}
        for n, p in enumerate(modified):
            if n % 2:  # same size, new mtime
                data = files[p].replace(b"version 0", b"version 1")
                assert len(data) == len(files[p])
            else:  # another size, mtime also new
                data = files[p] + b"more\n"
            _write(p, data, OLD_NS + 10**12 + n)
            new[p] = data
        for p in deleted:
            os.unlink(p)

        kill_reconcile(db, env, tmp_path, lambda p: walking(p.pid, root) and q.count() == 0)
        kill_reconcile(db, env, tmp_path, lambda p: q.count() > 0)
        midway = q.count()
        assert 0 < midway < len(modified) + len(deleted)
        report = finish(db, env)
        assert q.backend() == backend(env)
        # the last run queued exactly what the killed ones had not committed
        assert report["update"] + report["delete"] == len(modified) + len(deleted) - midway

        rows = q.rows()
        assert len(rows) == len(modified) + len(deleted)
        by_path = {r[1]: r for r in rows}
        assert set(by_path) == set(modified) | set(deleted)
        for path, (_qid, _p, status, op, meta) in by_path.items():
            assert status == "pending"
            if path in modified:
                assert op == "update", (path, op)
                assert meta["content_hash"] == hash_of(new[path]), path
                assert meta["previous_hash"] == hash_of(files[path]), path
            else:
                assert op == "delete", (path, op)
                assert meta["content_hash"] == hash_of(files[path]), path
        assert_quiet_rescan(db, env, q)
    finally:
        q.close()
