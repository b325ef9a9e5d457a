"""Stateful model test: random edits of a real tree, scans, and a consumer that applies the
queue to its own view; in the end the view equals the tree, hash for hash."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from typing import Callable

import pytest
import xxhash
from consumer_log import tree_hashes
from helpers.db import drain, ops, queue, scan, watch
from helpers.foreign import WqmConsumer, build_wqm_db
from helpers.trees import OLD_NS, write
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, precondition, rule,
    run_state_machine_as_test)

from wqscan.reconcile import WatchReport, reconcile
from wqscan.store import Store, Target
from wqscan.watches import add_watch

#: Shared by files and directories so that a name can change kind; their keys straddle
#: "a/" in byte order ("a.b" < "a/" < "a0"), and one is not ASCII.
NAMES = ("a", "a.b", "a0", "é")
MAX_DEPTH = 2  # directories are created at most this deep below the root
#: Far in the past: settle never defers, and no entry is ever racy.
START_NS = 1_600_000_000_000_000_000
TICK_NS = 1_000_000_007  # distinct, increasing mtimes with a nanosecond part
MODES = (0o600, 0o644, 0o640, 0o755, 0o444)

IDX = st.integers(min_value=0, max_value=10**6)
CONTENT = st.binary(max_size=12)
NAME = st.sampled_from(NAMES)
#: (directory index, name, content) of files to create
FILE_SETS = st.lists(st.tuples(IDX, NAME, st.binary(min_size=1, max_size=12)), min_size=1,
                 max_size=6)


def has_files(self: "TreeMachine") -> bool:
    return bool(self._files())


def has_subdirs(self: "TreeMachine") -> bool:
    return len(self._dirs()) > 1


def _stat_key(st_: os.stat_result) -> tuple[int, int, int, int]:
    return st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_ino


class TreeMachine(RuleBasedStateMachine):
    """A tree edited at random between scans of one watch (settle 0, check_stat full), its
    queue in a fresh database: an SQLite file of its own, or the PostgreSQL schema
    `pg_schema()` gives (dropped by `drop_pg_schema` when the example ends)."""

    def __init__(self, pg_schema: Callable[[], Target] | None = None,
                 drop_pg_schema: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="wqscan-model-"))
        self.root = os.path.join(self.tmp, "tree")
        os.mkdir(self.root)
        self.db = os.path.join(self.tmp, "wq.db")
        self._create_db()
        self.target = pg_schema() if pg_schema is not None else Target(self.db)
        self.drop_pg_schema = drop_pg_schema
        self.store = Store.open(self.target)
        self.wid = add_watch(self.store, self.root, "model", settle=0,
                             check_stat="full").watch_id
        self.view: dict[str, str] = {}  # the consumer's idea of the tree
        self.seen: dict[str, tuple] = {}  # stat key and hash of each file at the last scan
        self.clock = START_NS

    # -- helpers ----------------------------------------------------------------------

    def _create_db(self) -> None:
        """The database before wqscan opens it: none, so wqscan creates its own."""

    def _tick(self) -> int:
        self.clock += TICK_NS
        return self.clock

    def _dirs(self) -> list[str]:
        """Every directory (absolute), the root first."""
        out = []
        for d, dirs, _files in os.walk(self.root):
            dirs.sort()
            out.append(d)
        return out

    def _files(self) -> list[str]:
        return sorted(tree_hashes(self.root))

    def _depth(self, path: str) -> int:
        rel = os.path.relpath(path, self.root)
        return 0 if rel == "." else rel.count("/") + 1

    def _write(self, path: str, data: bytes, mtime_ns: int, in_place: bool = True) -> None:
        """Write `data` to `path` (in place, or as a new inode renamed over it)."""
        target = path if in_place else os.path.join(self.tmp, "new")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if not in_place:
            os.rename(target, path)
        os.utime(path, ns=(mtime_ns, mtime_ns))

    def _pending(self) -> list[tuple[str, str, str, dict]]:
        """(queue_id, path, operation, metadata) of the pending rows, by queue time and id
        (read through the store: the same on either engine)."""
        rows = sorted(self.store.queue.rows(status="pending"),
                      key=lambda r: (r["queued_timestamp"], r["queue_id"]))
        return [(r["queue_id"], r["file_absolute_path"], r["operation"],
                 json.loads(r["metadata"])) for r in rows]

    def _check_queue(self) -> None:
        rows = self.store.queue.rows()
        per_file = Counter((r["file_absolute_path"], r["collection_name"]) for r in rows
                           if r["status"] == "pending")
        dup = [(path, n) for (path, _), n in per_file.items() if n > 1]
        assert not dup, f"two pending rows for one file: {dup}"
        other = Counter(r["status"] for r in rows if r["status"] != "pending")
        assert not other, f"rows the scanner should never write: {dict(other)}"

    def _scan(self) -> WatchReport:
        """Reconcile the watch; it must succeed (an emptied root needs --allow-mass-delete)."""
        empty = not os.listdir(self.root)
        before = self._pending()
        (report,) = reconcile(self.store, [self.wid])
        if empty and self.store.snapshot_files(self.wid):
            assert not report.ok and "empty" in (report.reason or ""), report
            assert self._pending() == before, "a refused scan wrote to the queue"
            (report,) = reconcile(self.store, [self.wid], allow_mass_delete=True)
        assert report.ok, report.reason
        assert not report.warnings, report.warnings
        self._check_queue()
        self.seen = {p: (_stat_key(os.stat(p)), h) for p, h in tree_hashes(self.root).items()}
        return report

    def _quiet_rescan(self) -> None:
        """A scan right after a scan finds nothing and, no entry being racy, reads no file."""
        again = self._scan()
        assert (again.ingest, again.update, again.delete, again.totals.hashed) == (0, 0, 0, 0), \
            again

    def _consume(self) -> None:
        """Apply every pending row to the view, then acknowledge it (delete the row)."""
        with self.store.write():
            for qid, path, op, meta in self._pending():
                if op == "ingest":
                    assert path not in self.view, f"ingest of {path}, which the consumer has"
                    self.view[path] = meta["content_hash"]
                elif op == "update":
                    assert path in self.view, f"update of {path}, which the consumer lacks"
                    assert meta.get("previous_hash") == self.view[path], (path, meta)
                    self.view[path] = meta["content_hash"]
                else:
                    assert op == "delete", op
                    assert path in self.view, f"delete of {path}, which the consumer lacks"
                    del self.view[path]
                assert meta["relative_path"] == os.path.relpath(path, self.root)
                self.store.queue.remove([qid])

    # -- tree edits ---------------------------------------------------------------------

    @initialize(dirs=st.lists(st.tuples(IDX, NAME), max_size=4), files=FILE_SETS)
    def populate(self, dirs: list[tuple[int, str]], files: list[tuple[int, str, bytes]]) -> None:
        """A first tree: a few directories, a few files."""
        for d, name in dirs:
            self.mkdir(d, name)
        self.create_files(files)

    @rule(files=FILE_SETS)
    def create_files(self, files: list[tuple[int, str, bytes]]) -> None:
        """Create (or overwrite) files in existing directories."""
        for d, name, content in files:
            dirs = self._dirs()
            path = os.path.join(dirs[d % len(dirs)], name)
            if not os.path.isdir(path):
                self._write(path, content, self._tick())

    def _rewrite(self, f: int, data: bytes | None, same_mtime: bool, in_place: bool) -> None:
        """Rewrite file number `f` with `data` (None: its own bytes, each plus one)."""
        files = self._files()
        path = files[f % len(files)]
        before = os.stat(path)
        if data is None:
            with open(path, "rb") as fh:
                data = bytes((b + 1) % 256 for b in fh.read())
        mtime = before.st_mtime_ns if same_mtime else self._tick()
        self._write(path, data, mtime, in_place)
        recorded = self.seen.get(path)
        if recorded is not None and recorded[0] == _stat_key(os.stat(path)) \
                and recorded[1] != xxhash.xxh3_128_hexdigest(data):
            # Every stat field is as the last scan recorded it (a kernel with coarse ctime,
            # an inode number reused): by the scan rule "unchanged stat data means no read"
            # the change may go unseen, so make it visible through a new inode.
            self._write(path, data, mtime, in_place=False)

    @precondition(has_files)
    @rule(f=IDX, content=CONTENT, identical=st.booleans(), in_place=st.booleans())
    def modify(self, f: int, content: bytes, identical: bool, in_place: bool) -> None:
        """Rewrite a file with new content (perhaps of the same size), or with the very same
        bytes, under a new mtime; in place or as a new inode."""
        if identical:
            files = self._files()
            with open(files[f % len(files)], "rb") as fh:
                content = fh.read()
        self._rewrite(f, content, False, in_place)

    @precondition(has_files)
    @rule(f=IDX, same_mtime=st.booleans(), in_place=st.booleans())
    def rewrite_same_size(self, f: int, same_mtime: bool, in_place: bool) -> None:
        """Rewrite a file with other bytes of the same size, keeping its mtime or not."""
        self._rewrite(f, None, same_mtime, in_place)

    @precondition(has_files)
    @rule(f=IDX)
    def touch(self, f: int) -> None:
        """Give a file a new mtime only."""
        files = self._files()
        t = self._tick()
        os.utime(files[f % len(files)], ns=(t, t))

    @precondition(has_files)
    @rule(f=IDX, mode=st.sampled_from(MODES))
    def chmod(self, f: int, mode: int) -> None:
        """Change a file's mode (it stays readable by its owner)."""
        files = self._files()
        os.chmod(files[f % len(files)], mode)

    @precondition(has_files)
    @rule(f=IDX)
    def delete(self, f: int) -> None:
        """Delete a file."""
        files = self._files()
        os.unlink(files[f % len(files)])

    @precondition(has_files)
    @rule(f=IDX, d=IDX, name=NAME)
    def rename_file(self, f: int, d: int, name: str) -> None:
        """Move a file within or across directories, replacing a file of that name."""
        files, dirs = self._files(), self._dirs()
        src = files[f % len(files)]
        dst = os.path.join(dirs[d % len(dirs)], name)
        if dst != src and not os.path.isdir(dst):
            os.rename(src, dst)

    @precondition(has_subdirs)
    @rule(d=IDX, to=IDX, name=NAME)
    def rename_dir(self, d: int, to: int, name: str) -> None:
        """Move a directory (with its subtree) to a free name elsewhere."""
        dirs = self._dirs()
        src = dirs[1:][d % (len(dirs) - 1)]
        parent = dirs[to % len(dirs)]
        dst = os.path.join(parent, name)
        height = max(self._depth(x) for x in dirs if x == src or x.startswith(src + "/")) \
            - self._depth(src)
        if os.path.lexists(dst) or parent == src or parent.startswith(src + "/") \
                or self._depth(parent) + 1 + height > MAX_DEPTH:
            return
        os.rename(src, dst)

    @rule(d=IDX, name=NAME)
    def mkdir(self, d: int, name: str) -> None:
        """Create an empty directory."""
        dirs = [x for x in self._dirs() if self._depth(x) < MAX_DEPTH]
        path = os.path.join(dirs[d % len(dirs)], name)
        if not os.path.lexists(path):
            os.mkdir(path)

    @precondition(has_subdirs)
    @rule(d=IDX)
    def rmtree(self, d: int) -> None:
        """Remove a directory and everything below it."""
        dirs = self._dirs()[1:]
        shutil.rmtree(dirs[d % len(dirs)])

    # -- scans and the consumer ---------------------------------------------------------

    @rule(consume=st.booleans(), twice=st.booleans())
    def scan(self, consume: bool, twice: bool) -> None:
        """Reconcile, perhaps a second time (which finds nothing), perhaps then consume."""
        self._scan()
        if twice:
            self._quiet_rescan()
        if consume:
            self._consume()

    @precondition(lambda self: bool(self._pending()))
    @rule()
    def consume(self) -> None:
        """The consumer applies and acknowledges everything pending."""
        self._consume()

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # a failed step is reported as it is
                self._scan()
                self._consume()
                self._check_view()
                self._quiet_rescan()
                assert not self._pending()
        finally:
            self._close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _check_view(self) -> None:
        """After a last scan and drain, the consumer's view is the tree."""
        assert self.view == tree_hashes(self.root)

    def _close(self) -> None:
        self.store.close()
        if self.drop_pg_schema is not None:
            self.drop_pg_schema(self.target.pg_schema)


class WqmTreeMachine(TreeMachine):
    """The same, in workspace-qdrant-mcp's state database: one row per path, and a consumer
    that follows that project's semantics (rows in its order, each file read as it is when
    the row is applied, delete by path, errors into messages and retry_count)."""

    def _create_db(self) -> None:
        build_wqm_db(self.db, extras=True)
        self.ahead: dict[str, str] = {}  # path -> hash the consumer read, the scans never saw
        # A consumer that gives a row up after max_retries failures (a file that vanished
        # before it was read, say) loses it for good when the file comes back unchanged:
        # that is its policy, not a change wqscan can see. This one never gives up.
        self.consumer = WqmConsumer(self.db, max_retries=2**31)

    def _pending(self) -> list[tuple[str, str, str, dict]]:
        return [(p, p, o, json.loads(m)) for p, o, m in self.store.conn.execute(
            "SELECT file_absolute_path, operation, metadata FROM ingestion_queue "
            "ORDER BY priority DESC, queued_timestamp, file_absolute_path")]

    def _check_queue(self) -> None:
        for path, _, _, meta in self._pending():  # the path is the key: one row each
            assert meta["relative_path"] == os.path.relpath(path, self.root)

    def _consume(self) -> None:
        """Drain the queue; a row whose file is gone stays until a scan settles it. A file
        the consumer read in a version the last scan did not see is noted: it holds what
        the queue does not know it holds."""
        applied = len(self.consumer.applied)
        self.consumer.drain()
        self.view = self.consumer.view
        for op, path in self.consumer.applied[applied:]:
            read = self.view.get(path)
            if op != "delete" and read is not None and read != self.seen.get(path, ("", ""))[1]:
                self.ahead[path] = read
            else:
                self.ahead.pop(path, None)

    def _check_view(self) -> None:
        """The view is the tree, but for the window of that project's consumer
        (docs/workspace-qdrant-mcp.md): a file it read in a version newer than its row that
        then went back to the version the scans recorded, which no scan can tell from no
        change at all, stays as it was read."""
        tree = tree_hashes(self.root)
        for path in set(self.view) | set(tree):
            if self.view.get(path) != tree.get(path):
                assert self.ahead.get(path) == self.view.get(path) is not None \
                    and tree.get(path) == self.seen.get(path, ("", ""))[1], \
                    (path, self.view.get(path), tree.get(path))

    def _close(self) -> None:
        self.consumer.close()
        self.store.close()


SETTINGS = settings(max_examples=200, stateful_step_count=50, deadline=None, database=None,
                    derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.slow
@pytest.mark.parametrize("machine,database", [(TreeMachine, "sqlite"), (TreeMachine, "pg"),
                                              (WqmTreeMachine, "sqlite")],
                         ids=["wqscan-sqlite", "wqscan-pg", "wqm-sqlite"], indirect=["database"])
def test_consumer_view_matches_tree(twin, machine, database):
    """Random edits, scans and consumption never fail, never queue two rows for a file, and
    leave the consumer's view equal to the tree (in both queue layouts; the wqscan layout
    also in PostgreSQL, a fresh schema per example). The workspace-qdrant-mcp layout is that
    project's SQLite file only."""
    if database.kind == "sqlite":
        run_state_machine_as_test(machine, settings=SETTINGS)  # a file per example
        return
    import psycopg
    from psycopg import sql

    url, base = database.target.db, database.target.pg_schema
    made: list[str] = []
    numbers = itertools.count()

    def fresh() -> Target:
        made.append(f"{base}_{next(numbers)}")
        return Target(url, made[-1])

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as admin:
        def drop(name: str) -> None:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(name)))

        try:
            run_state_machine_as_test(lambda: machine(fresh, drop), settings=SETTINGS)
        finally:
            for name in made:  # those of examples whose teardown did not get to it
                drop(name)
        left = admin.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                             (base + "\\_%",)).fetchall()
        assert made and not left, left


def test_update_delete_ingest_keeps_consumer_hash(twin, store, root):
    """update, then delete, then re-create of a file between two consumptions: the final
    update's previous_hash is the hash the consumer last saw."""
    write(root / "keep", b"k")  # the root never becomes empty
    a = write(root / "a", b"v0")
    wid = watch(store, root, check_stat="full")
    scan(store, wid)
    assert ops(store) == {"a": "ingest", "keep": "ingest"}
    drain(store)  # the consumer now holds a = h(v0)
    write(a, b"v1", OLD_NS + 1)
    scan(store, wid)
    a.unlink()
    scan(store, wid)
    assert ops(store) == {"a": "delete"}
    write(a, b"v2 longer", OLD_NS + 2)
    scan(store, wid)
    (row,) = queue(store)
    assert row["operation"] == "update"
    assert row["metadata"]["content_hash"] == xxhash.xxh3_128_hexdigest(b"v2 longer")
    assert row["metadata"]["previous_hash"] == xxhash.xxh3_128_hexdigest(b"v0")
