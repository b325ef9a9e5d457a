"""The edges of the scan rules, on both twins: the settle time to the nanosecond and mtimes
in the future under a fixed clock, and the root checked before the walk and again before
each commit (emptied, or swapped for another directory, between the walk and the commit).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest
from helpers.db import ops, queue_dump, scan, scanned, watch
from helpers.trees import OLD_NS, write

from wqscan.cli import main
from wqscan.errors import WatchFailed
from wqscan.reconcile.root import Root
from wqscan.store import Store

SECOND = 1_000_000_000
NOW_NS = OLD_NS + 30 * 86_400 * SECOND  # the scan's fixed clock: a month after OLD_NS


@pytest.fixture
def clock(monkeypatch) -> Callable[[int], None]:
    """Fixes the time every scan starts at (and the store's timestamps with it)."""
    def at(ns: int) -> None:
        monkeypatch.setattr(time, "time_ns", lambda: ns)

    at(NOW_NS)
    return at


def snapshot(store: Store, wid: str) -> list[tuple]:
    return [tuple(r) for r in store.snapshot_rows(wid)]


# -- settle and the future ---------------------------------------------------------------

def test_settle_boundary_to_the_nanosecond(twin, store, root, clock):
    """A file modified exactly `settle` seconds before the scan began has settled; one
    modified a nanosecond later has not (deferred, nothing queued for it)."""
    write(root / "at_edge.txt", "edge", mtime_ns=NOW_NS - 5 * SECOND)
    write(root / "inside.txt", "in", mtime_ns=NOW_NS - 5 * SECOND + 1)
    watch(store, root, settle=5)
    r = scan(store)
    assert r.ok and r.totals.deferred == 1
    assert ops(store) == {"at_edge.txt": "ingest"}
    clock(NOW_NS + 1)
    r = scan(store)
    assert r.ok and r.totals.deferred == 0
    assert ops(store) == {"at_edge.txt": "ingest", "inside.txt": "ingest"}


def test_a_future_mtime_stays_deferred_until_its_time_has_passed(twin, store, root, clock):
    """A file stamped an hour ahead (a skewed client's clock) is deferred by every scan
    until that hour and the settle time have passed, then ingested once."""
    future = NOW_NS + 3600 * SECOND
    write(root / "ahead.txt", "ahead", mtime_ns=future)
    write(root / "now.txt", "now")
    watch(store, root, settle=2)
    for at in (NOW_NS, future - SECOND, future, future + 2 * SECOND - 1):
        clock(at)
        r = scan(store)
        assert r.ok and r.totals.deferred == 1, at
        assert ops(store) == {"now.txt": "ingest"}, at
    clock(future + 2 * SECOND)
    r = scan(store)
    assert r.ok and r.totals.deferred == 0
    assert ops(store) == {"now.txt": "ingest", "ahead.txt": "ingest"}


# -- the root, before the walk ------------------------------------------------------------

def emptied_tree(store: Store, root: Path, files: int) -> str:
    """A scanned tree of `files` files, then emptied as an unmounted share leaves its
    mountpoint; returns the watch id."""
    for i in range(files):
        write(root / f"d{i % 10}" / f"f{i}.txt", str(i))
    wid = scanned(store, root)
    for child in root.iterdir():
        shutil.rmtree(child)
    return wid


def test_an_emptied_root_is_reported_before_the_guard(twin, store, root):
    """150 files gone with their root emptied: the scan reports the empty root (the share
    is away), not the mass-delete guard, and writes nothing."""
    wid = emptied_tree(store, root, 150)
    before = snapshot(store, wid)
    r = scan(store)
    assert not r.ok
    assert r.reason == (f"root {root} is empty while the snapshot holds 150 files "
                        "(unmounted share?); nothing written")
    assert queue_dump(store) == [] and snapshot(store, wid) == before


def test_dry_run_of_an_emptied_root_lists_no_delete(twin, tmp_path, root, capsys):
    """`reconcile --dry-run` of an emptied root fails the watch as the real scan would,
    rather than reporting ok and listing every file as a delete."""
    db = tmp_path / "wq.db"
    with Store.open(str(db)) as store:
        emptied_tree(store, root, 3)
    assert main(["--db", str(db), "reconcile", "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert "delete" not in out
    assert f"root {root} is empty while the snapshot holds 3 files" in err


# -- the root, before each commit -----------------------------------------------------------

def mid_scan(store: Store, root: Path, act: Callable[[], None]) -> tuple[str, object]:
    """A scanned tree (a.txt, b/b.txt), then a rescan that finds a new file at the root and
    a name that is not UTF-8 in z/, the last directory it visits: the warning about that
    name, given after the new file was hashed, runs `act`. Returns (watch id, report)."""
    write(root / "a.txt", "a")
    write(root / "b" / "b.txt", "b")
    wid = scanned(store, root)
    write(root / "new.txt", "new")
    (root / "z").mkdir()
    with open(os.path.join(os.fsencode(root / "z"), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    os.utime(os.path.join(os.fsencode(root / "z"), b"bad\xff.txt"), ns=(OLD_NS, OLD_NS))
    acted = []

    def on_warning(watch_id: str, path: str, message: str) -> None:
        if not acted:
            acted.append(path)
            act()

    r = scan(store, wid, on_warning=on_warning)
    assert acted, "the scan gave no warning about the name"
    return wid, r


def test_a_root_emptied_before_the_commit_writes_nothing(twin, store, root):
    """The root emptied between the walk and the commit: the watch fails, and new.txt, gone
    by then, is not queued as an ingest."""
    def empty() -> None:
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    _, r = mid_scan(store, root, empty)
    assert not r.ok
    assert r.reason == f"root {root} became empty during the scan; nothing more written"
    assert queue_dump(store) == []


def test_a_root_swapped_before_the_commit_writes_nothing(twin, store, root, tmp_path):
    """The root replaced by another directory of the same files between the walk and the
    commit (a share remounted elsewhere): the watch fails and nothing is written."""
    def swap() -> None:
        os.rename(root, tmp_path / "was-root")
        shutil.copytree(tmp_path / "was-root", root)

    _, r = mid_scan(store, root, swap)
    assert not r.ok
    assert r.reason == (f"root {root} changed during the scan (unmounted or replaced); "
                        "nothing more written")
    assert queue_dump(store) == []


def test_io_errors_are_counted_and_the_first_is_named(tmp_path) -> None:
    """What the walk reports as I/O errors (tests/integration/test_io_errors.py makes
    real ones on a FUSE mount): the scan fails before its next commit, counting them all
    and naming the first."""
    root = Root(str(tmp_path), allow_empty=False)
    root.open()
    root.before_commit()
    root.io_error("a/x.txt: Input/output error")
    root.io_error("b/y.txt: Input/output error")
    with pytest.raises(WatchFailed) as e:
        root.before_commit()
    assert str(e.value) == ("the filesystem answered 2 I/O error(s) (first: a/x.txt: "
                            "Input/output error; a dead server or a failing disk?); nothing "
                            "more written, no entry deleted")
