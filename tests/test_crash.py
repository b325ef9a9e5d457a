"""SIGKILL a real `wqscan reconcile` process at chosen moments: no change is lost, none is
queued twice, and the next run finishes the work (crash safety)."""
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
from helpers.db import Db
from helpers.foreign import build_wqm_db
from helpers.pg import pg_connect
from helpers.procs import holds_tree
from helpers.trees import OLD_NS, h, make_big_tree, write_file

from wqscan import _scan

pytestmark = pytest.mark.slow

DIRS = 200
FILES_PER_DIR = 100  # 20,000 files in all
POLL = 0.002  # seconds between two looks at the database
PATIENCE = 120.0  # seconds a kill point may take to be reached before the test fails


def backend(env: dict[str, str]) -> str:
    """What `_scan.BACKEND` must say in a process started with `env`."""
    return "python" if env.get("WQSCAN_NO_EXTENSIONS") else "cython"


#: The queue layout (wqscan's own database, or workspace-qdrant-mcp's state database) and
#: the store holding it: an SQLite file, or a PostgreSQL schema (the wqscan layout only: the
#: other is that project's SQLite file). The pure-Python pass (WQSCAN_NO_EXTENSIONS=1) skips
#: the PostgreSQL case: the compiled-scanner pass already ran it with both twins (`env`).
LAYOUTS = pytest.mark.parametrize(
    "layout,database", [
        ("wqscan", "sqlite"),
        pytest.param("wqscan", "pg", marks=pytest.mark.skipif(
            _scan.NO_EXTENSIONS, reason="runs with both twins in the compiled-scanner pass")),
        ("wqm", "sqlite")],
    ids=["wqscan-sqlite", "wqscan-pg", "wqm-sqlite"], indirect=["database"])


def argv(database: Db, *args: str) -> list[str]:
    """`python -m wqscan` with the global options naming `database`, then ARGS."""
    return [sys.executable, "-m", "wqscan", *database.argv, *args]


class Queue:
    """A separate read-only connection that watches the queue while the scanner writes: to
    the SQLite file, or to the PostgreSQL schema (psycopg, autocommit: every query sees what
    is committed); the same queries on either."""

    def __init__(self, database: Db, layout: str) -> None:
        self.probe = None
        self.database = database
        self.blocker = None  # PostgreSQL: a transaction holding up the queue's writers
        if database.kind == "sqlite":
            self.conn = apsw.Connection(database.target.db, flags=apsw.SQLITE_OPEN_READONLY)
            self.probe = apsw.Connection(database.target.db)  # busy at once: no timeout
        else:
            self.conn = pg_connect(database)
            self.conn.execute("SET default_transaction_read_only TO on")
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

    def writing(self) -> bool:
        """Whether a write transaction is open right now: on SQLite, the write lock is
        held (a probe cannot take it). On PostgreSQL a batch's statements pass too quickly
        to be seen between two polls, so the first call takes a lock on the queue table
        that a write must wait for, held until `release`; then a wqscan session waiting
        for it inside its transaction is one caught writing."""
        if self.probe is not None:
            try:
                self.probe.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:
                return True
            self.probe.execute("ROLLBACK")
            return False
        if self.blocker is None:
            self.blocker = pg_connect(self.database)
            self.blocker.execute("BEGIN")
            self.blocker.execute("LOCK TABLE ingestion_queue IN SHARE MODE")
        return self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wqscan' "
            "AND wait_event_type = 'Lock' AND backend_xid IS NOT NULL").fetchall()[0][0] > 0

    def release(self) -> None:
        """Let writes through again (a killed scan's server session then ends its
        transaction without committing it)."""
        if self.blocker is not None:
            self.blocker.close()
            self.blocker = None

    def close(self) -> None:
        self.release()
        self.conn.close()
        if self.probe is not None:
            self.probe.close()


def empty_queue(database: Db) -> None:
    """Delete every queue row, as a consumer that completed them all would."""
    if database.kind == "sqlite":
        with apsw.Connection(database.target.db) as w:
            w.execute("DELETE FROM ingestion_queue")
        return
    with pg_connect(database) as w:
        w.execute("DELETE FROM ingestion_queue")


def kill_reconcile(database: Db, env: dict[str, str], tmp: Path,
                   when: Callable[[subprocess.Popen], bool]) -> None:
    """Start `wqscan reconcile` and SIGKILL it as soon as `when` holds."""
    with open(tmp / "killed.out", "wb") as out:
        proc = subprocess.Popen(argv(database, "reconcile"), env=env, stdout=out,
                                stderr=subprocess.STDOUT)
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


def run_wqscan(database: Db, *args: str, env: dict[str, str], timeout: float
               ) -> subprocess.CompletedProcess:
    """Run `python -m wqscan` on `database` to completion (no stdin, output captured)."""
    return subprocess.run(argv(database, *args), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def finish(database: Db, env: dict[str, str]) -> dict:
    """Run `wqscan reconcile --json` to completion and return the watch's report."""
    r = run_wqscan(database, "reconcile", "--json", env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (report,) = json.loads(r.stdout)["watches"]
    assert report["ok"], report
    return report


def setup_watch(tmp_path: Path, env: dict[str, str], layout: str, database: Db
                ) -> tuple[str, dict[str, bytes]]:
    files = make_big_tree(tmp_path / "tree", DIRS, FILES_PER_DIR)
    root = os.path.realpath(tmp_path / "tree")
    if layout == "wqm":
        build_wqm_db(database.target.db, extras=True)
    r = run_wqscan(database, "add", root, "--collection", "crash", env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, files


def assert_quiet_rescan(database: Db, env: dict[str, str], q: Queue) -> None:
    """A further reconcile finds nothing and leaves the queue exactly as it was."""
    before = q.rows()
    report = finish(database, env)
    assert (report["ingest"], report["update"], report["delete"], report["deferred"]) \
        == (0, 0, 0, 0), report
    assert q.rows() == before


@LAYOUTS
def test_first_scan_killed_repeatedly(tmp_path, env, layout, database):
    """A first scan SIGKILLed before any commit, after 1 and 2 batches, inside the write
    transaction of a later batch, and inside another after 3 batches ends with one ingest
    per file (in either queue layout, and in PostgreSQL)."""
    root, files = setup_watch(tmp_path, env, layout, database)
    q = Queue(database, layout)
    try:
        moments = [
            lambda p: holds_tree(p.pid, root) and q.count() == 0,
            lambda p: q.count() > 0,
            lambda p: q.count() > 5000,
            lambda p: q.count() > 5000 and q.writing(),
            lambda p: q.count() > 12000 and q.writing(),
        ]
        seen = []
        for when in moments:
            kill_reconcile(database, env, tmp_path, when)
            q.release()
            seen.append(q.count())
        # every kill left the work unfinished, and the queue only ever grew
        assert seen == sorted(seen) and seen[-1] < len(files), seen
        assert seen[1] > 0 and seen[2] > 5000 and seen[4] > 12000, seen
        report = finish(database, env)
        assert q.backend() == backend(env)
        assert report["ingest"] == len(files) - seen[-1], report

        rows = q.rows()
        assert len(rows) == len(files)
        assert {r[1] for r in rows} == set(files)
        for _qid, path, status, op, meta in rows:
            assert (status, op) == ("pending", "ingest"), (path, status, op)
            assert meta["content_hash"] == h(files[path]), path
            assert meta["relative_path"] == os.path.relpath(path, root)
        assert_quiet_rescan(database, env, q)
    finally:
        q.close()


@LAYOUTS
def test_update_scan_killed_midway(tmp_path, env, layout, database):
    """After a drained first scan, 5,000 modified and 1,000 deleted files, a rescan
    SIGKILLed mid-walk and between its batches ends with one update or delete per file
    (in either queue layout, and in PostgreSQL)."""
    root, files = setup_watch(tmp_path, env, layout, database)
    q = Queue(database, layout)
    try:
        assert finish(database, env)["ingest"] == len(files)
        empty_queue(database)
        assert q.count() == 0

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
            write_file(p, data, OLD_NS + 10**12 + n)
            new[p] = data
        for p in deleted:
            os.unlink(p)

        kill_reconcile(database, env, tmp_path,
                       lambda p: holds_tree(p.pid, root) and q.count() == 0)
        kill_reconcile(database, env, tmp_path, lambda p: q.count() > 0)
        midway = q.count()
        assert 0 < midway < len(modified) + len(deleted)
        report = finish(database, env)
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
                assert meta["content_hash"] == h(new[path]), path
                assert meta["previous_hash"] == h(files[path]), path
            else:
                assert op == "delete", (path, op)
                assert meta["content_hash"] == h(files[path]), path
        assert_quiet_rescan(database, env, q)
    finally:
        q.close()
