"""The scan rules (docs/usage.md, "What counts as a change"; crash safety aside) and the filters,
on both twins.

Every test works on real directories and a real SQLite file (the mass-delete guard's also
on a PostgreSQL schema, fixture `database`); times are set with os.utime(ns=...), never
waited for.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path

import pytest
from helpers.db import drain, ops, queue, queue_dump, scan, scanned, watch
from helpers.trees import OLD_NS, h, write

from wqscan.errors import UsageError
from wqscan.queue.consumer import QueueClient
from wqscan.reconcile import batches, commit, moves, reconcile
from wqscan.store import Store

NOBODY = 65534
#: Another fixed old mtime, so that "touch" gives a different but still settled time.
OLDER_NS = OLD_NS - 86_400 * 1_000_000_000


def rows_by_path(store: Store) -> dict[str, dict]:
    """Pending rows keyed by relative path."""
    return {r["metadata"]["relative_path"]: r for r in queue(store)}


def snapshot(store: Store, wid: str) -> list[tuple[str, bytes]]:
    """Every snapshot row of a watch, to prove that a failed scan changed nothing."""
    return [tuple(r) for r in store.snapshot_rows(wid)]


# -- rules 1 and 2: ingest and delete -------------------------------------------------------


def test_new_file_is_ingested(twin, store, root):
    """Rule 1: a file in scope that the snapshot lacks gives an ingest with its metadata."""
    write(root / "a.txt", "alpha")
    write(root / "sub" / "b.txt", "beta")
    wid = watch(store, root)
    r = scan(store)
    assert r.ok and r.ingest == 2
    assert ops(store) == {"a.txt": "ingest", "sub/b.txt": "ingest"}
    row = rows_by_path(store)["sub/b.txt"]
    assert row["file_absolute_path"] == str(root / "sub" / "b.txt")
    meta = row["metadata"]
    assert meta["content_hash"] == h("beta")
    assert meta["size"] == 4 and meta["mtime_ns"] == OLD_NS
    assert meta["watch_id"] == wid and meta["source"] == "wqscan"
    assert row["priority"] == 5


def test_deleted_file_gives_delete_with_last_hash(twin, store, root):
    """Rule 2: a file gone from disk gives a delete carrying its last known hash."""
    write(root / "a.txt", "alpha")
    write(root / "b.txt", "beta")
    scanned(store, root)
    (root / "a.txt").unlink()
    r = scan(store)
    assert r.ok and r.delete == 1
    assert ops(store) == {"a.txt": "delete"}
    row = rows_by_path(store)["a.txt"]
    assert row["metadata"]["content_hash"] == h("alpha")
    assert row["priority"] == 8
    drain(store)
    assert scan(store).ok and ops(store) == {}


def test_file_ignored_by_new_gitignore_is_deleted(twin, store, root):
    """Rule 2: a file that a newly added .gitignore excludes gives a delete."""
    write(root / "a.log", "log")
    write(root / "a.txt", "text")
    scanned(store, root)
    write(root / ".gitignore", "*.log\n")
    scan(store)
    assert ops(store) == {"a.log": "delete", ".gitignore": "ingest"}


def test_file_ignored_by_changed_ignore_patterns_is_deleted(twin, store, root):
    """Rule 2: editing the watch's ignore_patterns turns matching files into deletes."""
    write(root / "a.tmp", "tmp")
    write(root / "d" / "b.txt", "b")
    write(root / "keep.txt", "keep")
    wid = scanned(store, root)
    with store.write():
        store.update_watch(wid, {"ignore_patterns": json.dumps(["*.tmp", "d/"])})
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a.tmp": "delete", "d/b.txt": "delete"}


def test_file_grown_past_max_file_size_is_deleted(twin, store, root):
    """Rule 2: a file that grows past max_file_size gives a delete; the limit is inclusive."""
    write(root / "grows.txt", b"12345")
    write(root / "exact.txt", b"x" * 10)
    write(root / "big.txt", b"x" * 11)
    watch(store, root, max_file_size=10)
    r = scan(store)
    assert ops(store) == {"grows.txt": "ingest", "exact.txt": "ingest"}
    assert r.totals.filtered == 1
    drain(store)
    write(root / "grows.txt", b"x" * 20)
    scan(store)
    assert ops(store) == {"grows.txt": "delete"}


def test_file_turned_into_directory(twin, store, root):
    """Rule 2: a file replaced by a directory is deleted and the files inside are ingested."""
    write(root / "a", "was a file")
    scanned(store, root)
    (root / "a").unlink()
    write(root / "a" / "x.txt", "x")
    write(root / "a" / "y" / "z.txt", "z")
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a": "delete", "a/x.txt": "ingest", "a/y/z.txt": "ingest"}
    drain(store)
    assert scan(store).ok and ops(store) == {}


def test_directory_turned_into_file(twin, store, root):
    """Rule 2: a directory replaced by a file deletes every file below it and ingests the file."""
    write(root / "a" / "x.txt", "x")
    write(root / "a" / "y" / "z.txt", "z")
    write(root / "ab.txt", "neighbour")  # shares the prefix, must not be touched
    wid = scanned(store, root)
    shutil.rmtree(root / "a")
    write(root / "a", "now a file")
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a": "ingest", "a/x.txt": "delete", "a/y/z.txt": "delete"}
    assert store.snapshot_files(wid) == 2
    drain(store)
    assert scan(store).ok and ops(store) == {}


# -- rule 3: what counts as a change ---------------------------------------------------------


def test_content_change_gives_update_with_previous_hash(twin, store, root):
    """Rule 3: changed content gives an update whose previous_hash is the old content hash."""
    write(root / "a.txt", "old content")
    scanned(store, root)
    write(root / "a.txt", "new content!", mtime_ns=OLD_NS + 1_000_000_000)
    r = scan(store)
    assert r.update == 1 and r.totals.hashed == 1
    meta = rows_by_path(store)["a.txt"]["metadata"]
    assert rows_by_path(store)["a.txt"]["operation"] == "update"
    assert meta["previous_hash"] == h("old content")
    assert meta["content_hash"] == h("new content!")
    assert meta["size"] == len("new content!")


def test_no_change_rescan_reads_no_file(twin, store, root):
    """Rule 3: unchanged stat data means no file is opened: nothing hashed, nothing queued."""
    for i in range(5):
        write(root / f"d{i % 2}" / f"f{i}.txt", f"content {i}")
    watch(store, root)
    first = scan(store)
    assert first.totals.hashed == 5 and first.totals.bytes_hashed == 5 * len("content 0")
    drain(store)
    r = scan(store)
    assert r.ok and r.totals.files == 5
    assert r.totals.hashed == 0 and r.totals.bytes_hashed == 0
    assert ops(store) == {}


def test_touch_gives_no_operation(twin, store, root):
    """Rule 3: a new mtime with the same content is hashed once, queues nothing, and is recorded."""
    write(root / "a.txt", "same")
    scanned(store, root)
    os.utime(root / "a.txt", ns=(OLDER_NS, OLDER_NS))
    r = scan(store)
    assert r.totals.hashed == 1 and ops(store) == {}
    r = scan(store)
    assert r.totals.hashed == 0, "the snapshot was not refreshed after the touch"


def test_a_touched_directory_before_a_changed_one_in_one_transaction(twin, store, root):
    """A directory whose only change is a touch (a new snapshot row, no operation) and
    the removal of an empty subdirectory, met before one whose file changed, in the same
    transaction: the snapshot takes both and the change is queued."""
    write(root / "a" / "f.txt", "same")
    (root / "a" / "empty").mkdir()
    write(root / "b" / "g.txt", "before")
    wid = scanned(store, root)
    os.utime(root / "a" / "f.txt", ns=(OLDER_NS, OLDER_NS))
    (root / "a" / "empty").rmdir()
    write(root / "b" / "g.txt", "after, changed")
    r = scan(store, wid)
    assert r.ok and (r.update, r.totals.hashed) == (1, 2)
    assert ops(store) == {"b/g.txt": "update"}
    assert scan(store, wid).totals.hashed == 0, "the touch was not recorded"


def test_chmod_gives_no_operation(twin, store, root):
    """Rule 3: a chmod (ctime changes) queues nothing and refreshes the snapshot."""
    write(root / "a.txt", "same")
    scanned(store, root, check_stat="full")
    os.chmod(root / "a.txt", 0o600)
    r = scan(store)
    assert r.totals.hashed == 1 and ops(store) == {}
    assert scan(store).totals.hashed == 0


def test_identical_rewrite_gives_no_operation(twin, store, root):
    """Rule 3: rewriting the same bytes with a new mtime queues nothing."""
    write(root / "a.txt", "same bytes")
    scanned(store, root)
    write(root / "a.txt", "same bytes", mtime_ns=OLD_NS + 5_000_000_000)
    r = scan(store)
    assert r.ok and r.totals.hashed == 1 and r.update == 0
    assert ops(store) == {}


def test_size_change_with_same_mtime_gives_update(twin, store, root):
    """Rule 3: a size change alone (mtime kept, check_stat minimal) is detected as an update."""
    write(root / "a.txt", "abc")
    scanned(store, root, check_stat="minimal")
    write(root / "a.txt", "abcd")  # same OLD_NS mtime, same inode
    r = scan(store)
    assert r.update == 1
    assert ops(store) == {"a.txt": "update"}
    assert rows_by_path(store)["a.txt"]["metadata"]["previous_hash"] == h("abc")


# -- rule 4: racy entries ------------------------------------------------------------------


def _rewrite_in_place(path: Path, content: bytes, mtime_ns: int) -> None:
    """Overwrite the bytes of `path` (same inode) and put its mtime back to `mtime_ns`."""
    ino = path.stat().st_ino
    with open(path, "r+b") as f:
        f.write(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert path.stat().st_ino == ino


@pytest.mark.parametrize("check_stat", ["minimal", "full"])
def test_racy_entry_is_rehashed(twin, store, root, check_stat):
    """Rule 4: a same-size rewrite in the timestamp the entry was recorded with is still seen."""
    now = time.time_ns()
    write(root / "a.txt", b"AAAA", mtime_ns=now)
    watch(store, root, check_stat=check_stat)
    r = scan(store)
    assert r.ingest == 1
    drain(store)
    _rewrite_in_place(root / "a.txt", b"BBBB", now)
    r = scan(store)
    assert r.totals.hashed == 1
    assert ops(store) == {"a.txt": "update"}
    assert rows_by_path(store)["a.txt"]["metadata"]["previous_hash"] == h(b"AAAA")
    assert rows_by_path(store)["a.txt"]["metadata"]["content_hash"] == h(b"BBBB")


def test_racy_entry_without_change_gives_nothing(twin, store, root):
    """Rule 4: re-hashing an unchanged racy entry reads it but queues nothing."""
    now = time.time_ns()
    write(root / "a.txt", b"AAAA", mtime_ns=now)
    write(root / "old.txt", b"old")
    scanned(store, root, check_stat="minimal")
    r = scan(store)
    assert r.totals.hashed == 1  # only the racy one
    assert ops(store) == {}


def test_minimal_does_not_reread_non_racy_same_size_and_mtime(twin, store, root):
    """Rule 4 contrast: an old-mtime entry rewritten with equal size and mtime is not re-read
    under check_stat=minimal (intended: minimal trusts size+mtime; the change is missed)."""
    write(root / "a.txt", b"AAAA")  # OLD_NS: far outside the racy window
    scanned(store, root, check_stat="minimal")
    _rewrite_in_place(root / "a.txt", b"BBBB", OLD_NS)
    r = scan(store)
    assert r.totals.hashed == 0
    assert ops(store) == {}


def test_full_detects_same_size_and_mtime_rewrite_through_ctime(twin, store, root):
    """Rule 3/4 contrast: with check_stat=full the ctime change of that rewrite forces a hash."""
    write(root / "a.txt", b"AAAA")
    scanned(store, root, check_stat="full")
    _rewrite_in_place(root / "a.txt", b"BBBB", OLD_NS)
    r = scan(store)
    assert r.totals.hashed == 1
    assert ops(store) == {"a.txt": "update"}


# -- rule 5: settle ------------------------------------------------------------------------


def test_settle_defers_a_fresh_file(twin, store, root):
    """Rule 5: a file newer than the settle time is deferred, then ingested once it is old."""
    now = time.time_ns()
    write(root / "fresh.txt", "fresh", mtime_ns=now)
    write(root / "old.txt", "old")
    wid = watch(store, root, settle=5)
    r = scan(store)
    assert r.ok and r.totals.deferred == 1
    assert ops(store) == {"old.txt": "ingest"}
    assert store.snapshot_files(wid) == 1
    os.utime(root / "fresh.txt", ns=(OLD_NS, OLD_NS))
    r = scan(store)
    assert r.totals.deferred == 0
    assert ops(store) == {"old.txt": "ingest", "fresh.txt": "ingest"}


def test_until_settled_waits_for_fresh_files_not_for_a_file_being_written(twin, store, root):
    """`until_settled` scans again once the settle time has passed: files written just
    before (a checkout's) are queued by the same call; a file another process keeps
    writing is never queued half-written; the wait is bounded."""
    import threading

    now = time.time_ns()
    for i in range(3):
        write(root / f"fresh{i}.txt", f"fresh {i}", mtime_ns=now)
    growing = root / "growing.log"
    growing.write_bytes(b"")
    stop = threading.Event()

    def writer() -> None:
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"line\n")
                f.flush()
                time.sleep(0.05)

    wid = watch(store, root, settle=0.6)
    t = threading.Thread(target=writer)
    t.start()
    try:
        t0 = time.monotonic()
        (r,) = reconcile(store, [wid], until_settled=3.0)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
    assert r.ok and r.ingest == 3 and r.totals.deferred == 1
    assert ops(store) == {f"fresh{i}.txt": "ingest" for i in range(3)}
    assert 0.6 <= took < 3.0 + 2  # at most the bound, plus the last scan


def test_settle_keeps_old_entry_of_a_changing_file(twin, store, root):
    """Rule 5: a changed file still settling keeps its snapshot entry: no delete, no update yet."""
    write(root / "a.txt", "version 1")
    wid = scanned(store, root, settle=5)
    write(root / "a.txt", "version 2, longer", mtime_ns=time.time_ns())
    r = scan(store)
    assert r.ok and r.totals.deferred == 1
    assert r.update == 0 and r.delete == 0
    assert ops(store) == {}
    assert store.snapshot_files(wid) == 1
    os.utime(root / "a.txt", ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    r = scan(store)
    assert ops(store) == {"a.txt": "update"}
    assert rows_by_path(store)["a.txt"]["metadata"]["previous_hash"] == h("version 1")


# -- rule 7: local failures and special files ------------------------------------------------


def test_fifo_and_socket_are_never_opened(twin, store, root):
    """Rule 7: a FIFO (which would block an open) and a socket are filtered, never queued."""
    write(root / "a.txt", "a")
    os.mkfifo(root / "pipe")
    sock_path = root / "sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_path))
    finally:
        s.close()
    watch(store, root)
    r = scan(store)
    assert r.ok
    assert r.totals.filtered == 2 and r.totals.hashed == 1
    assert ops(store) == {"a.txt": "ingest"}


def test_non_utf8_name_is_skipped_with_warning(twin, store, root):
    """Rule 7: a name that is not valid UTF-8 is skipped and reported; the rest proceeds."""
    write(root / "good.txt", "good")
    bad = os.path.join(os.fsencode(root), b"bad\xff.txt")
    fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"bad")
    os.close(fd)
    os.utime(bad, ns=(OLD_NS, OLD_NS))
    baddir = os.path.join(os.fsencode(root), b"dir\xfe")
    os.mkdir(baddir)
    with open(os.path.join(baddir, b"inner.txt"), "wb") as f:
        f.write(b"inner")
    wid = watch(store, root)
    r = scan(store)
    assert r.ok
    assert r.totals.errors >= 2
    assert any("UTF-8" in w for w in r.warnings)
    assert ops(store) == {"good.txt": "ingest"}
    assert store.snapshot_files(wid) == 1
    drain(store)
    r = scan(store)
    assert r.ok and ops(store) == {}


# Running a scan as an unprivileged user (root reads everything, so EACCES needs this).


@pytest.fixture
def world():
    """A world-writable directory outside pytest's private tmp tree (which nobody can enter)."""
    d = Path(tempfile.mkdtemp(prefix="wqscan-rules-"))
    os.chmod(d, 0o777)
    yield d
    for dirpath, dirnames, _ in os.walk(d):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
    shutil.rmtree(d)


def _open_db_files(world: Path) -> None:
    """Let another user write the database (and its WAL files) in `world`."""
    for p in world.iterdir():
        if p.is_file():
            os.chmod(p, 0o666)


def _scan_unprivileged(world: Path, db: Path, **kw) -> dict:
    """One reconcile of the database `db` by uid/gid 65534 in a forked child; its report."""
    out = world / "report.json"
    err = world / "error.txt"
    if os.geteuid() != 0:  # already unprivileged: chmod 000 bites as it is
        s = Store.open(str(db))
        try:
            r = reconcile(s, **kw)[0]
        finally:
            s.close()
        return {**r.to_json(), "hashed": r.totals.hashed}
    _open_db_files(world)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = Store.open(str(db))
            try:
                r = reconcile(s, **kw)[0]
            finally:
                s.close()
            out.write_text(json.dumps({**r.to_json(), "hashed": r.totals.hashed}))
            code = 0
        except BaseException:
            try:
                err.write_text(traceback.format_exc())
            except BaseException:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, err.read_text() if err.exists() else f"child exited {code}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", [0o000, 0o444], ids=["no-access", "not-searchable"])
def test_unreadable_directory_keeps_its_snapshot(twin, world, mode):
    """Rule 7: an unreadable subdirectory is reported and counted; its files are not deleted,
    the rest of the tree proceeds, and nothing spurious follows once it is readable again."""
    tree = world / "tree"
    write(tree / "ok.txt", "ok")
    write(tree / "locked" / "a.txt", "a")
    write(tree / "locked" / "deep" / "b.txt", "b")
    db = world / "wq.db"
    s = Store.open(str(db))
    wid = watch(s, tree)
    assert scan(s).ingest == 3
    drain(s)
    s.close()
    os.chmod(tree / "locked", mode)
    write(tree / "ok.txt", "ok, changed")
    write(tree / "new.txt", "new")
    rep = _scan_unprivileged(world, db)
    assert rep["ok"], rep
    assert rep["errors"] >= 1
    assert rep["delete"] == 0
    assert any(w.startswith("locked") for w in rep["warnings"]), rep["warnings"]
    s = Store.open(str(db))
    try:
        assert ops(s) == {"ok.txt": "update", "new.txt": "ingest"}
        assert s.snapshot_files(wid) == 4
        drain(s)
        os.chmod(tree / "locked", 0o755)
        r = scan(s)
        assert r.ok and r.totals.errors == 0
        assert ops(s) == {}
    finally:
        s.close()


def test_unreadable_file_keeps_its_snapshot_entry(twin, world):
    """Rule 7: a file that cannot be read keeps its old entry (no delete, no update), is
    reported and counted, and its change is found once it is readable again."""
    tree = world / "tree"
    write(tree / "ok.txt", "ok")
    write(tree / "secret.txt", "secret v1")
    db = world / "wq.db"
    s = Store.open(str(db))
    wid = watch(s, tree, check_stat="full")
    scan(s)
    drain(s)
    s.close()
    write(tree / "secret.txt", "secret v2", mtime_ns=OLD_NS + 10**9)
    os.chmod(tree / "secret.txt", 0o000)
    write(tree / "new.txt", "new")
    write(tree / "new-locked.txt", "new but unreadable")
    os.chmod(tree / "new-locked.txt", 0o000)
    rep = _scan_unprivileged(world, db)
    assert rep["ok"], rep
    assert rep["errors"] >= 2
    assert rep["delete"] == 0 and rep["update"] == 0
    assert any(w.startswith("secret.txt") for w in rep["warnings"]), rep["warnings"]
    s = Store.open(str(db))
    try:
        assert ops(s) == {"new.txt": "ingest"}
        assert s.snapshot_files(wid) == 3
        drain(s)
        os.chmod(tree / "secret.txt", 0o644)
        os.chmod(tree / "new-locked.txt", 0o644)
        scan(s)
        assert ops(s) == {"secret.txt": "update", "new-locked.txt": "ingest"}
        assert rows_by_path(s)["secret.txt"]["metadata"]["previous_hash"] == h("secret v1")
    finally:
        s.close()


def test_unreadable_root_fails_the_watch(twin, world):
    """Rule 8: a root that cannot be read fails the watch and writes nothing."""
    tree = world / "tree"
    write(tree / "a.txt", "a")
    db = world / "wq.db"
    s = Store.open(str(db))
    wid = watch(s, tree)
    scan(s)
    before_snap = snapshot(s, wid)
    before_queue = queue_dump(s)
    s.close()
    os.chmod(tree, 0o000)
    rep = _scan_unprivileged(world, db)
    assert not rep["ok"] and rep["reason"] == f"root {tree} is not readable", rep
    s = Store.open(str(db))
    try:
        assert queue_dump(s) == before_queue
        assert snapshot(s, wid) == before_snap
    finally:
        s.close()


# -- rule 8: the root and the mass-delete guard ----------------------------------------------


def _tree_of(root: Path, n: int, prefix: str = "f") -> None:
    for i in range(n):
        write(root / f"d{i % 7}" / f"{prefix}{i:04d}.txt", f"{prefix} {i}")


def _delete(root: Path, n: int, prefix: str = "f") -> None:
    for i in range(n):
        (root / f"d{i % 7}" / f"{prefix}{i:04d}.txt").unlink()


@pytest.mark.parametrize("replaced_by", ["nothing", "file"], ids=["missing", "a-file"])
def test_missing_root_or_root_that_is_a_file_fails_and_writes_nothing(twin, store, root,
                                                                      replaced_by):
    """Rule 8: a missing root, or one replaced by a regular file, fails the watch; the queue
    and snapshot stay as they were."""
    write(root / "a.txt", "a")
    wid = watch(store, root)
    scan(store)
    before_q, before_s = queue_dump(store), snapshot(store, wid)
    real = os.path.realpath(root)
    shutil.rmtree(root)
    if replaced_by == "file":
        write(root, "I am a file now")
    r = scan(store)
    assert not r.ok
    assert r.reason == {"nothing": f"root {real} unavailable: No such file or directory",
                        "file": f"root {real} is not a directory"}[replaced_by]
    assert queue_dump(store) == before_q
    assert snapshot(store, wid) == before_s


def test_emptied_root_fails_and_restore_is_quiet(twin, store, root):
    """Rule 8: an empty root with a non-empty snapshot (unmounted share) writes nothing, and
    restoring the files afterwards produces no spurious operation."""
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    wid = scanned(store, root)
    before_s = snapshot(store, wid)
    shutil.rmtree(root / "sub")
    (root / "a.txt").unlink()
    assert not os.listdir(root)
    r = scan(store)
    assert not r.ok and "empty" in r.reason
    assert queue_dump(store) == []
    assert snapshot(store, wid) == before_s
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    r = scan(store)
    assert r.ok
    assert ops(store) == {}


def test_emptied_root_passes_with_allow_mass_delete(twin, dbstore, root):
    """Rule 8: allow_mass_delete lets an emptied root delete its files (on either store),
    where the guard alone stops the scan."""
    write(root / "a.txt", "a")
    scanned(dbstore, root)
    (root / "a.txt").unlink()
    r = scan(dbstore)
    assert not r.ok and "empty" in r.reason
    assert queue_dump(dbstore) == []
    r = scan(dbstore, allow_mass_delete=True)
    assert r.ok
    assert ops(dbstore) == {"a.txt": "delete"}


def test_mass_delete_guard_trips_and_writes_nothing(twin, dbstore, root, holding):
    """Rule 8: deleting 100 of 200 files (>= 50% and >= 100) fails and writes nothing, not even
    the ingest found in the same scan; the snapshot is unchanged (on either store)."""
    store = dbstore
    _tree_of(root, 200)
    wid = watch(store, root)
    assert scan(store).ingest == 200
    drain(store)
    before_s = snapshot(store, wid)
    _delete(root, 100)
    write(root / "brand-new.txt", "new")
    r = scan(store)
    assert not r.ok and "mass-delete" in r.reason
    assert queue_dump(store) == []
    assert snapshot(store, wid) == before_s
    assert store.snapshot_files(wid) == 200
    r = scan(store, allow_mass_delete=True)
    assert r.ok
    got = ops(store)
    assert len(got) == 101
    assert got["brand-new.txt"] == "ingest"
    assert sum(1 for o in got.values() if o == "delete") == 100


def test_mass_delete_guard_below_half_passes(twin, dbstore, root, holding):
    """Rule 8: 100 deletions out of 201 files (under 50%) are written normally (on either
    store)."""
    _tree_of(root, 201)
    scanned(dbstore, root)
    _delete(root, 100)
    r = scan(dbstore)
    assert r.ok and r.delete == 100
    assert list(ops(dbstore).values()).count("delete") == 100


@pytest.mark.parametrize("check_stat", ["full", "minimal"])
def test_a_big_rename_is_moves_not_deletes(twin, store, root, check_stat, holding):
    """`mv projects/alpha projects/Alpha` (300 of 334 files): every delete pairs with an
    ingest of the same content (and inode, unless minimal), so the guard lets it through
    and each ingest carries moved_from; the same 300 files deleted outright
    still trip it."""
    for i in range(300):
        write(root / "projects" / "alpha" / f"d{i % 7}" / f"f{i}.txt", f"file {i}")
    for i in range(34):
        write(root / "projects" / "beta" / f"g{i}.txt", f"other {i}")
    wid = watch(store, root, check_stat=check_stat)
    assert scan(store, wid).ingest == 334
    drain(store)
    os.rename(root / "projects" / "alpha", root / "projects" / "Alpha")
    r = scan(store, wid)
    assert r.ok, r.reason
    assert (r.ingest, r.delete) == (300, 300)
    rows = queue(store)
    ingests = [q for q in rows if q["operation"] == "ingest"]
    assert len(ingests) == 300 and all(
        q["metadata"]["moved_from"] == q["file_absolute_path"].replace("/Alpha/", "/alpha/")
        for q in ingests)
    drain(store)
    shutil.rmtree(root / "projects" / "Alpha")
    r = scan(store, wid)
    assert not r.ok and "mass-delete guard: the scan would delete 300 of 334" in r.reason


def test_a_scan_in_several_transactions_reports_all_it_wrote(twin, dbstore, root,
                                                             monkeypatch):
    """With 10 operations per transaction, a scan that creates 30 rows and then one that
    removes 20 of them each report every row they wrote, over all their transactions."""
    monkeypatch.setattr(batches, "CHUNK_CHANGES", 10)
    for i in range(30):
        write(root / f"d{i // 10}" / f"f{i:02}.txt", f"file {i}")
    wid = watch(dbstore, root)
    r = scan(dbstore, wid)
    assert (r.ingest, r.written) == (30, 30)
    shutil.rmtree(root / "d0")
    shutil.rmtree(root / "d2")
    r = scan(dbstore, wid)
    assert (r.delete, r.written) == (20, 20)
    assert len(queue(dbstore)) == 10


@pytest.mark.parametrize("claimed", [0, 5])
def test_a_move_whose_ingest_was_committed_before_its_delete_came(twin, dbstore, root,
                                                                  monkeypatch, claimed):
    """With 10 operations per transaction, the ingests of `mv alpha Alpha` (met first:
    `Alpha` sorts before `alpha`) are committed before their deletes are met; each delete
    then adds moved_from to its ingest if it is still waiting in the queue (compact JSON,
    as every row), and leaves one a consumer claimed meanwhile as it was. The consumer's
    commit between two of the scan's transactions does not stop the scan's next one (on
    SQLite it did, while the scan read its snapshot on the connection it writes with)."""
    monkeypatch.setattr(batches, "CHUNK_CHANGES", 10)
    for i in range(30):
        write(root / "alpha" / f"d{i // 5}" / f"f{i:02}.txt", f"file {i}")
    wid = scanned(dbstore, root)
    os.rename(root / "alpha", root / "Alpha")
    taken: list[str] = []
    write_batch = commit.Committer._write

    def consumer_between_transactions(self, batch, rows, late):
        if late and not taken and claimed:
            with QueueClient(dbstore.target) as consumer:
                taken.extend(r.queue_id for r in consumer.claim(claimed))
        return write_batch(self, batch, rows, late)

    monkeypatch.setattr(commit.Committer, "_write", consumer_between_transactions)
    r = scan(dbstore, wid)
    assert r.ok, r.reason
    assert (r.ingest, r.delete, len(taken)) == (30, 30, claimed)
    ingests = [q for q in dbstore.queue.rows() if q["operation"] == "ingest"]
    assert len(ingests) == 30
    for q in ingests:
        meta = json.loads(q["metadata"])
        assert q["metadata"] == json.dumps(meta, separators=(",", ":"))
        assert meta["relative_path"].startswith("Alpha/")
        if q["queue_id"] in taken:
            assert "moved_from" not in meta
        else:
            assert meta["moved_from"] == q["file_absolute_path"].replace("/Alpha/", "/alpha/")


def test_a_rename_beside_a_mass_delete_counts_only_the_deletes(twin, store, root):
    """`mv alpha Alpha` (100 files) while 200 other files of 334 are deleted: the moves are
    not deletes, so the guard counts 200, and says so in one line."""
    for i in range(100):
        write(root / "alpha" / f"m{i:03d}.txt", f"moving {i}")
    _tree_of(root, 234)
    wid = scanned(store, root)
    os.rename(root / "alpha", root / "Alpha")
    _delete(root, 200)
    r = scan(store, wid)
    assert not r.ok
    assert r.reason == ("mass-delete guard: the scan would delete 200 of 334 files; nothing "
                        "written (--allow-mass-delete to accept)")
    assert ops(store) == {}


def test_moves_remembered_are_bounded(twin, store, root, monkeypatch):
    """A scan remembers at most MOVE_MEMORY unpaired files for pairing as moves: of a
    rename of 300 files with room for 50, the guard still counts 300 moves (it pairs from
    what it holds), and the 50 ingests remembered last carry moved_from; the others are
    queued as plain ingests and deletes."""
    monkeypatch.setattr(moves, "MOVE_MEMORY", 50)
    for i in range(300):
        write(root / "projects" / "alpha" / f"f{i:03}.txt", f"file {i}")
    wid = scanned(store, root)
    os.rename(root / "projects" / "alpha", root / "projects" / "Alpha")
    r = scan(store, wid)
    assert r.ok, r.reason
    assert (r.ingest, r.delete) == (300, 300)
    moved = sorted(q["file_absolute_path"] for q in queue(store)
                   if q["operation"] == "ingest" and "moved_from" in q["metadata"])
    assert moved == [str(root / "projects" / "Alpha" / f"f{i:03}.txt") for i in range(250, 300)]


def test_mass_delete_guard_needs_at_least_100(twin, dbstore, root):
    """Rule 8: deleting 99 of 150 files (66%, but fewer than 100) passes (on either store)."""
    _tree_of(root, 150)
    scanned(dbstore, root)
    _delete(root, 99)
    r = scan(dbstore)
    assert r.ok and r.delete == 99
    assert len(ops(dbstore)) == 99


# -- rule 9: symlinks ------------------------------------------------------------------------


def test_symlinks_not_followed_by_default(twin, store, root):
    """Rule 9: without follow_symlinks, links to files and directories are filtered."""
    write(root / "a.txt", "a")
    write(root / "real" / "b.txt", "b")
    os.symlink("a.txt", root / "link.txt")
    os.symlink("real", root / "linkdir")
    watch(store, root)
    r = scan(store)
    assert r.ok
    assert r.totals.filtered == 2
    assert ops(store) == {"a.txt": "ingest", "real/b.txt": "ingest"}


def test_follow_symlink_to_file_inside(twin, store, root):
    """Rule 9: a followed link to a file inside the root is queued at the link's path and
    follows its target's changes."""
    write(root / "a.txt", "target")
    os.symlink("a.txt", root / "link.txt")
    watch(store, root, follow_symlinks=True)
    scan(store)
    assert ops(store) == {"a.txt": "ingest", "link.txt": "ingest"}
    row = rows_by_path(store)["link.txt"]
    assert row["file_absolute_path"] == str(root / "link.txt")
    assert row["metadata"]["content_hash"] == h("target")
    drain(store)
    assert scan(store).totals.hashed == 0
    write(root / "a.txt", "target changed", mtime_ns=OLD_NS + 10**9)
    scan(store)
    assert ops(store) == {"a.txt": "update", "link.txt": "update"}


def test_follow_symlink_to_directory_inside(twin, store, root):
    """Rule 9: files under a followed directory link appear at the link path and the real path."""
    write(root / "real" / "f.txt", "f")
    write(root / "real" / "sub" / "g.txt", "g")
    os.symlink("real", root / "alias")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok
    assert ops(store) == {"real/f.txt": "ingest", "real/sub/g.txt": "ingest",
                          "alias/f.txt": "ingest", "alias/sub/g.txt": "ingest"}
    drain(store)
    assert scan(store).totals.hashed == 0 and ops(store) == {}


def test_follow_symlink_leading_outside_is_skipped(twin, store, root, tmp_path):
    """Rule 9: links whose real path leaves the root are skipped with a warning."""
    outside = tmp_path / "outside"
    write(outside / "x.txt", "x")
    write(root / "a.txt", "a")
    os.symlink(outside, root / "outdir")
    os.symlink(outside / "x.txt", root / "outfile.txt")
    os.symlink("../outside", root / "relout")
    sibling = root.parent / (root.name + "2")  # shares the root's path as a string prefix
    write(sibling / "s.txt", "s")
    os.symlink(sibling, root / "prefixdir")
    os.symlink(sibling / "s.txt", root / "prefixfile.txt")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a.txt": "ingest"}
    for name in ("outdir", "outfile.txt", "relout", "prefixdir", "prefixfile.txt"):
        assert any(w.startswith(name) and "outside" in w for w in r.warnings), (name, r.warnings)


def test_follow_symlink_to_ancestor_is_not_descended(twin, store, root):
    """Rule 9: a link to one of its own ancestors is not descended; the scan terminates."""
    write(root / "a" / "f.txt", "f")
    write(root / "top.txt", "t")
    os.symlink("..", root / "a" / "loop")
    os.symlink(".", root / "self")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a/f.txt": "ingest", "top.txt": "ingest"}
    assert r.totals.dirs == 2


def test_follow_symlink_mutual_loop_terminates(twin, store, root):
    """Rule 9: two directories linking to each other are walked a bounded number of times."""
    write(root / "x" / "fx.txt", "x")
    write(root / "y" / "fy.txt", "y")
    os.symlink("../y", root / "x" / "toy")
    os.symlink("../x", root / "y" / "tox")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok, r.reason
    assert ops(store) == {"x/fx.txt": "ingest", "y/fy.txt": "ingest",
                          "x/toy/fy.txt": "ingest", "y/tox/fx.txt": "ingest"}


def test_dangling_symlink_is_ignored(twin, store, root):
    """Rule 9: a dangling link is neither queued nor an error for the watch."""
    write(root / "a.txt", "a")
    os.symlink("missing.txt", root / "dangling.txt")
    os.symlink("nodir/deeper", root / "danglingdir")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a.txt": "ingest"}


# -- rule 10: scoped scans -------------------------------------------------------------------


def _scoped_tree(root: Path) -> None:
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    write(root / "sub" / "c.txt", "c")
    write(root / "other" / "d.txt", "d")


def test_scoped_scan_reports_only_its_subtree(twin, store, root):
    """Rule 10: a --path scan reports changes under the path only; a full scan finds the rest."""
    _scoped_tree(root)
    scanned(store, root)
    (root / "a.txt").unlink()
    (root / "other" / "d.txt").unlink()
    write(root / "other" / "e.txt", "e")
    write(root / "sub" / "b.txt", "b changed", mtime_ns=OLD_NS + 10**9)
    write(root / "sub" / "new.txt", "new")
    r = scan(store, path=str(root / "sub"))
    assert r.ok
    assert ops(store) == {"sub/b.txt": "update", "sub/new.txt": "ingest"}
    drain(store)
    r = scan(store, path=str(root / "sub"))
    assert ops(store) == {}
    r = scan(store)
    assert ops(store) == {"a.txt": "delete", "other/d.txt": "delete", "other/e.txt": "ingest"}


def test_scoped_scan_of_a_single_file(twin, store, root):
    """Rule 10: a --path naming one file looks at that file only."""
    _scoped_tree(root)
    scanned(store, root)
    write(root / "sub" / "b.txt", "b changed", mtime_ns=OLD_NS + 10**9)
    write(root / "sub" / "c.txt", "c changed", mtime_ns=OLD_NS + 10**9)
    write(root / "sub" / "new.txt", "new")
    r = scan(store, path=str(root / "sub" / "b.txt"))
    assert r.ok
    assert ops(store) == {"sub/b.txt": "update"}
    (root / "sub" / "b.txt").unlink()
    drain(store)
    scan(store, path=str(root / "sub" / "b.txt"))
    assert ops(store) == {"sub/b.txt": "delete"}
    drain(store)
    scan(store)
    assert ops(store) == {"sub/c.txt": "update", "sub/new.txt": "ingest"}


def test_scoped_scan_of_a_deleted_directory(twin, store, root):
    """Rule 10: --path naming a removed directory deletes its files and nothing else."""
    _scoped_tree(root)
    write(root / "p" / "q" / "x.txt", "x")
    write(root / "p" / "q" / "r" / "y.txt", "y")
    write(root / "p" / "keep.txt", "k")
    wid = scanned(store, root)
    shutil.rmtree(root / "sub")
    (root / "a.txt").unlink()
    r = scan(store, path=str(root / "sub"))
    assert r.ok
    assert ops(store) == {"sub/b.txt": "delete", "sub/c.txt": "delete"}
    drain(store)
    # two levels: p/ is gone too, yet only p/q/ is in scope
    shutil.rmtree(root / "p")
    r = scan(store, path=str(root / "p" / "q"))
    assert r.ok
    assert ops(store) == {"p/q/x.txt": "delete", "p/q/r/y.txt": "delete"}
    drain(store)
    assert store.snapshot_files(wid, "p/") == 1
    scan(store)
    assert ops(store) == {"a.txt": "delete", "p/keep.txt": "delete"}


def test_scoped_path_outside_every_watch_is_usage_error(twin, store, root, tmp_path):
    """Rule 10: a --path that no watch contains is a UsageError, before anything is scanned."""
    write(root / "a.txt", "a")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    watch(store, root)
    with pytest.raises(UsageError):
        reconcile(store, path=str(elsewhere))
    with pytest.raises(UsageError):
        reconcile(store, path=str(root) + "-sibling")
    assert queue_dump(store) == []


# -- filters ---------------------------------------------------------------------------------


def test_include_patterns(twin, store, root):
    """Filters: include patterns keep matching files at any depth and drop the others."""
    write(root / "a.md", "a")
    write(root / "b.txt", "b")
    write(root / "docs" / "deep" / "c.md", "c")
    write(root / "docs" / "d.rst", "d")
    watch(store, root, patterns=["*.md"])
    r = scan(store)
    assert ops(store) == {"a.md": "ingest", "docs/deep/c.md": "ingest"}
    assert r.totals.filtered == 2


def test_ignore_pattern_prunes_directory(twin, store, root):
    """Filters: an ignore pattern matching a directory prunes it: its subtree is never listed."""
    write(root / "a.txt", "a")
    write(root / "build" / "x" / "y.txt", "y")
    write(root / "build" / "z.txt", "z")
    write(root / "src" / "m.txt", "m")
    write(root / "src" / "build" / "n.txt", "n")
    watch(store, root, ignores=["build/"])
    r = scan(store)
    assert ops(store) == {"a.txt": "ingest", "src/m.txt": "ingest"}
    assert r.totals.dirs == 2  # the root and src/: no build/ directory was listed
    assert r.totals.filtered == 2


def test_anchored_ignore_pattern(twin, store, root):
    """Filters: a pattern with a slash is anchored at the watch root."""
    write(root / "build" / "x.txt", "x")
    write(root / "src" / "build" / "y.txt", "y")
    watch(store, root, ignores=["/build"])
    scan(store)
    assert ops(store) == {"src/build/y.txt": "ingest"}


def test_default_ignores(twin, store, root):
    """Filters: the default list drops .git (directory or file), node_modules/ and friends."""
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / ".git" / "objects" / "x", "obj")
    write(root / "wt" / ".git", "gitdir: /nowhere\n")
    write(root / "wt" / "code.py", "print()")
    write(root / "node_modules" / "pkg" / "index.js", "js")
    write(root / "other" / "node_modules", "a file named node_modules")
    write(root / "__pycache__" / "m.pyc", "pyc")
    write(root / ".DS_Store", "ds")
    write(root / "a.swp", "swp")
    write(root / "b.txt~", "backup")
    write(root / ".#lock", "lock")
    write(root / ".hg" / "store", "hg")
    write(root / ".svn" / "entries", "svn")
    write(root / "keep.txt", "keep")
    watch(store, root)
    r = scan(store)
    assert r.ok
    assert ops(store) == {"keep.txt": "ingest", "wt/code.py": "ingest",
                          "other/node_modules": "ingest"}
    assert r.totals.dirs == 3  # root, wt/, other/


def test_no_default_ignores(twin, store, root):
    """Filters: default_ignores=False scans what the defaults would drop."""
    write(root / "node_modules" / "index.js", "js")
    write(root / "a.swp", "swp")
    watch(store, root, default_ignores=False)
    scan(store)
    assert ops(store) == {"node_modules/index.js": "ingest", "a.swp": "ingest"}


def test_gitignore_root_subdir_and_negation(twin, store, root):
    """Filters: .gitignore files apply to their own subtree, deeper ones win, `!` re-includes."""
    write(root / ".gitignore", "*.log\nbuild/\n/top.txt\n")
    write(root / "sub" / ".gitignore", "!keep.log\nsecret.txt\n/local.txt\n")
    for p in ("a.log", "a.txt", "top.txt", "secret.txt", "local.txt",
              "sub/x.log", "sub/keep.log", "sub/secret.txt", "sub/top.txt", "sub/local.txt",
              "sub/deeper/local.txt", "sub/deeper/secret.txt", "sub/deeper/keep.log",
              "other/keep.log", "build/b.txt", "sub/build/c.txt"):
        write(root / p, p)
    watch(store, root)
    scan(store)
    assert ops(store) == {
        ".gitignore": "ingest", "sub/.gitignore": "ingest",
        "a.txt": "ingest", "secret.txt": "ingest", "local.txt": "ingest",
        "sub/keep.log": "ingest", "sub/top.txt": "ingest",
        "sub/deeper/local.txt": "ingest", "sub/deeper/keep.log": "ingest",
    }


def test_gitignore_in_same_file_negation(twin, store, root):
    """Filters: a negation after a broader pattern in the same .gitignore re-includes a file."""
    write(root / ".gitignore", "*.log\n!keep.log\n")
    write(root / "x.log", "x")
    write(root / "keep.log", "k")
    watch(store, root)
    scan(store)
    assert ops(store) == {".gitignore": "ingest", "keep.log": "ingest"}


def test_gitignore_above_root_is_not_read(twin, store, root):
    """Filters: a .gitignore above the watch root has no effect."""
    write(root.parent / ".gitignore", "*.txt\n")
    write(root / "a.txt", "a")
    watch(store, root)
    scan(store)
    assert ops(store) == {"a.txt": "ingest"}


def test_use_gitignore_false(twin, store, root):
    """Filters: use_gitignore=False ignores .gitignore files entirely."""
    write(root / ".gitignore", "*.log\n")
    write(root / "sub" / ".gitignore", "*\n")
    write(root / "a.log", "a")
    write(root / "sub" / "b.txt", "b")
    watch(store, root, use_gitignore=False)
    scan(store)
    assert ops(store) == {".gitignore": "ingest", "sub/.gitignore": "ingest",
                          "a.log": "ingest", "sub/b.txt": "ingest"}


def _depth_tree(root: Path) -> None:
    write(root / "a.txt", "a")
    write(root / "d1" / "b.txt", "b")
    write(root / "d1" / "d2" / "c.txt", "c")
    write(root / "d1" / "d2" / "d3" / "e.txt", "e")


def _paths_of(store: Store, wid: str) -> set[str]:
    return {r["metadata"]["relative_path"] for r in queue(store) if r["watch_id"] == wid}


def test_max_depth_1_equals_non_recursive(twin, store, root):
    """Filters: max_depth=1 and recursive=False both keep only the root's direct children."""
    _depth_tree(root)
    w1 = watch(store, root, "c1", watch_id="depth1", max_depth=1)
    w2 = watch(store, root, "c2", watch_id="flat", recursive=False)
    r1 = scan(store, w1)
    r2 = scan(store, w2)
    assert _paths_of(store, w1) == _paths_of(store, w2) == {"a.txt"}
    assert r1.totals.dirs == r2.totals.dirs == 1


def test_max_depth_2(twin, store, root):
    """Filters: max_depth=2 keeps the root's files and those one directory down, no deeper."""
    _depth_tree(root)
    watch(store, root, max_depth=2)
    r = scan(store)
    assert ops(store) == {"a.txt": "ingest", "d1/b.txt": "ingest"}
    assert r.totals.dirs == 2


# -- check_stat ------------------------------------------------------------------------------


def _replace_by_copy(path: Path) -> None:
    """Replace `path` by an identical copy: new inode and ctime, same bytes and mtime."""
    ino = path.stat().st_ino
    tmp = path.with_name(path.name + ".tmpcopy")
    tmp.write_bytes(path.read_bytes())
    os.utime(tmp, ns=(path.stat().st_mtime_ns,) * 2)
    os.replace(tmp, path)
    assert path.stat().st_ino != ino


@pytest.mark.parametrize("check_stat,hashed", [("full", 1), ("minimal", 0)],
                         ids=["full", "minimal"])
def test_check_stat_and_an_identical_copy_under_a_new_inode(twin, store, root, check_stat,
                                                            hashed):
    """check_stat: an identical copy under a new inode queues nothing; `full` hashes it
    once, `minimal` (inode and ctime ignored) does not even hash it."""
    write(root / "a.txt", "payload")
    scanned(store, root, check_stat=check_stat)
    _replace_by_copy(root / "a.txt")
    r = scan(store)
    assert r.totals.hashed == hashed and ops(store) == {}
    assert scan(store).totals.hashed == 0


# -- further cases across the rules ----------------------------------------------------------


def test_names_sorting_around_the_slash(twin, store, root):
    """Rules 1-3: names that sort just before or after "/" (a-b, a.b, a0, "a b", é) merge with
    the snapshot exactly: a rescan is silent and removing dir a/ deletes only its files."""
    names = ["a/x.txt", "a/y/z.txt", "a-b/x.txt", "a.b/x.txt", "a0/x.txt", "a b/x.txt",
             "a-", "a.txt", "a!", "a1", "é/x.txt", "é.txt", "z~z/x", "A/x.txt"]
    for n in names:
        write(root / n, n)
    watch(store, root, default_ignores=False)
    r = scan(store)
    assert r.ingest == len(names)
    drain(store)
    r = scan(store)
    assert r.ok and r.totals.hashed == 0 and ops(store) == {}
    shutil.rmtree(root / "a")
    r = scan(store)
    assert ops(store) == {"a/x.txt": "delete", "a/y/z.txt": "delete"}
    drain(store)
    assert scan(store).totals.hashed == 0 and ops(store) == {}


def test_directory_removed_and_recreated(twin, store, root):
    """Rules 1-2: a removed subtree gives deletes for all its files; recreated, ingests again."""
    write(root / "d" / "a.txt", "a")
    write(root / "d" / "e" / "b.txt", "b")
    wid = scanned(store, root)
    shutil.rmtree(root / "d")
    write(root / "keep.txt", "k")
    scan(store)
    assert ops(store) == {"d/a.txt": "delete", "d/e/b.txt": "delete", "keep.txt": "ingest"}
    assert store.snapshot_files(wid) == 1
    drain(store)
    write(root / "d" / "e" / "b.txt", "b")
    scan(store)
    assert ops(store) == {"d/e/b.txt": "ingest"}


def test_changed_include_patterns_delete_files_out_of_scope(twin, store, root):
    """Rule 2: narrowing the include patterns turns files that no longer match into deletes."""
    write(root / "a.md", "a")
    write(root / "b.txt", "b")
    wid = scanned(store, root)
    with store.write():
        store.update_watch(wid, {"patterns": json.dumps(["*.md"])})
    scan(store)
    assert ops(store) == {"b.txt": "delete"}


def test_reduced_max_depth_deletes_deeper_files(twin, store, root):
    """Rule 2: lowering the depth limit deletes the files now too deep."""
    _depth_tree(root)
    wid = scanned(store, root)
    with store.write():
        store.update_watch(wid, {"recursive_depth": 2})
    r = scan(store)
    assert r.ok
    assert ops(store) == {"d1/d2/c.txt": "delete", "d1/d2/d3/e.txt": "delete"}
    assert store.snapshot_files(wid) == 2


def test_scoped_mass_delete_guard_counts_the_scoped_part(twin, store, root):
    """Rules 8/10: with --path the 50% share is of the scoped snapshot: 100 of the 200 files
    under sub/ trips the guard although the watch holds 400 files."""
    _tree_of(root / "sub", 200)
    _tree_of(root / "rest", 200)
    wid = scanned(store, root)
    before = snapshot(store, wid)
    _delete(root / "sub", 100)
    r = scan(store, path=str(root / "sub"))
    assert not r.ok and "mass-delete" in r.reason
    assert queue_dump(store) == [] and snapshot(store, wid) == before
    r = scan(store, path=str(root / "sub"), allow_mass_delete=True)
    assert r.ok and len(ops(store)) == 100


def test_scoped_scan_applies_gitignore_of_the_root(twin, store, root):
    """Rule 10 with filters: a .gitignore above the scoped path (inside the root) still applies."""
    write(root / "a.log", "a")
    write(root / "sub" / "x.log", "x")
    write(root / "sub" / "y.txt", "y")
    scanned(store, root)
    write(root / ".gitignore", "*.log\n")
    scan(store, path=str(root / "sub"))
    assert ops(store) == {"sub/x.log": "delete"}


def test_gitignore_in_subdirectory_prunes_a_directory(twin, store, root):
    """Filters: a directory named in a subdirectory's .gitignore is pruned, not walked."""
    write(root / "sub" / ".gitignore", "cache\n")
    write(root / "sub" / "cache" / "deep" / "f.txt", "f")
    write(root / "sub" / "g.txt", "g")
    write(root / "cache" / "h.txt", "h")  # above sub/: not concerned
    watch(store, root)
    r = scan(store)
    assert ops(store) == {"sub/.gitignore": "ingest", "sub/g.txt": "ingest",
                          "cache/h.txt": "ingest"}
    assert r.totals.dirs == 3  # root, sub/, cache/


def test_follow_symlink_whose_target_vanishes_is_deleted(twin, store, root):
    """Rules 2/9: when a followed link's target is removed, the link's path gets a delete."""
    write(root / "a.txt", "a")
    write(root / "real" / "f.txt", "f")
    os.symlink("a.txt", root / "link.txt")
    os.symlink("real", root / "alias")
    scanned(store, root, follow_symlinks=True)
    (root / "a.txt").unlink()
    shutil.rmtree(root / "real")
    r = scan(store)
    assert r.ok
    assert ops(store) == {"a.txt": "delete", "link.txt": "delete",
                          "real/f.txt": "delete", "alias/f.txt": "delete"}


def test_follow_symlink_to_fifo_is_not_opened(twin, store, root):
    """Rules 7/9: a followed link to a FIFO is skipped, never opened (the scan finishes)."""
    write(root / "a.txt", "a")
    os.mkfifo(root / "pipe")
    os.symlink("pipe", root / "pipelink")
    watch(store, root, follow_symlinks=True)
    r = scan(store)
    assert r.ok and r.totals.filtered == 2
    assert ops(store) == {"a.txt": "ingest"}


def test_large_and_empty_files_are_hashed_whole(twin, store, root):
    """Rule 3: files larger than one read chunk and empty files get the XXH3-128 of all bytes."""
    big = bytes(range(256)) * (10 * 1024) + b"tail"  # 2.5 MiB + 4: several 1 MiB reads
    write(root / "big.bin", big)
    write(root / "empty", b"")
    watch(store, root)
    r = scan(store)
    assert r.totals.hashed == 2 and r.totals.bytes_hashed == len(big)
    rows = rows_by_path(store)
    assert rows["big.bin"]["metadata"]["content_hash"] == h(big)
    assert rows["empty"]["metadata"]["content_hash"] == h(b"")
    drain(store)
    changed = big[:-4] + b"TAIL"
    write(root / "big.bin", changed, mtime_ns=OLD_NS + 10**9)
    scan(store)
    assert ops(store) == {"big.bin": "update"}
    assert rows_by_path(store)["big.bin"]["metadata"]["content_hash"] == h(changed)


@pytest.mark.parametrize("patterns, expected", [
    (["docs/"], {"docs/b.txt", "docs/sub/c.md", "x/docs/d.txt"}),
    (["/docs/"], {"docs/b.txt", "docs/sub/c.md"}),
    (["/*.md"], {"a.md"}),
    (["*.md", "*.txt"], {"a.md", "docs/b.txt", "docs/sub/c.md", "x/docs/d.txt", "x/e.md"}),
])
def test_include_pattern_forms(twin, store, root, patterns, expected):
    """Filters: include patterns use gitignore syntax: directory, anchored and several globs."""
    for p in ("a.md", "docs/b.txt", "docs/sub/c.md", "x/docs/d.txt", "x/e.md"):
        write(root / p, p)
    watch(store, root, patterns=patterns)
    scan(store)
    assert set(ops(store)) == expected


def test_a_dry_run_lists_what_the_scan_then_queues(twin, store, root):
    """`reconcile --dry-run` shows each operation as the scan after it writes the row:
    operation, path, priority, tenant, branch, relative path, content hash and the
    moved_from of a move."""
    for i in range(6):
        write(root / "d" / f"f{i}.txt", f"version 0 of {i}")
    scanned(store, root)
    write(root / "d" / "f0.txt", "version 1 of 0, longer", OLD_NS + 10**9)
    os.unlink(root / "d" / "f1.txt")
    os.renames(root / "d" / "f2.txt", root / "e" / "g2.txt")
    write(root / "n.txt", "new")
    dry = scan(store, dry_run=True)
    assert dry.ok and ops(store) == {}
    assert scan(store).ok
    queued = [{"operation": q["operation"], "path": q["file_absolute_path"],
               "priority": q["priority"], "tenant_id": q["tenant_id"], "branch": q["branch"],
               "relative_path": q["metadata"]["relative_path"],
               "content_hash": q["metadata"]["content_hash"],
               **({"moved_from": q["metadata"]["moved_from"]}
                  if "moved_from" in q["metadata"] else {})} for q in queue(store)]
    assert sorted(dry.operations, key=lambda o: o["path"]) == queued
    assert {o["operation"] for o in queued} == {"ingest", "update", "delete"}
    assert [o["moved_from"] for o in queued if "moved_from" in o] == [str(root / "d" / "f2.txt")]
