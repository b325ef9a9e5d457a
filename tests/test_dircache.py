"""The directory cache (scan/listings.py): both twins write the same entries and take each
other's; an entry is trusted only while the directory's own stat data, the .gitignore
files above it and the watch's rules are as they were, and never for a directory changed
within the racy window; entries of directories gone are forgotten.

A directory's ctime cannot be set. To have directories older than the racy window
without waiting two seconds, most scans here begin `AHEAD` from now (`start_ns`), which
leaves the racy rule nothing to refuse; such a test then waits, after each scan, for the
filesystem's clock to move past the scan (`_next_tick`: milliseconds), as the rule does
in use. `test_a_directory_changed_within_the_racy_window_is_not_cached` proves the rule
itself, at the real time.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import ModuleType

import pytest
from helpers.memhooks import CacheHooks
from helpers.db import scan, watch
from helpers.trees import OLD_NS, write
from helpers.twins import load_twin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wqscan.scan.fsinfo import dircache_off
from wqscan.scan.listings import (KIND_DIR, KIND_FILE, Listing, decode_listing,
    encode_listing)
from wqscan.scan.records import RACY_NS, ScanParams, ScanTotals
from wqscan.service.status import watch_status
from wqscan.watches import remove_watch

AHEAD = RACY_NS + 1_000_000_000
TWINS = ("c", "py")


def _next_tick(root: Path) -> None:
    """Wait until the filesystem stamps a change later than now: a change made after this
    cannot carry the stat data a directory had when it was listed."""
    probe = root.parent / "tick-probe"
    now = time.time_ns()
    while True:
        probe.write_bytes(b"")
        if os.stat(probe).st_ctime_ns > now:
            return


def walk(twin: ModuleType, root: Path, hooks: CacheHooks, start_ns: int | None = None,
         **settings_: object) -> ScanTotals:
    """One walk with the cache on, committed into `hooks`; by default it begins AHEAD."""
    hooks.reset(settings_.get("scope", ()))  # type: ignore[arg-type]
    start = time.time_ns() + AHEAD if start_ns is None else start_ns
    totals = twin.walk(ScanParams(root=str(root), start_ns=start, dircache=True,
                                  **settings_), hooks)  # type: ignore[arg-type]
    hooks.commit()
    _next_tick(root)
    return totals


def _tree(root: Path) -> None:
    """Files and subdirectories, a .gitignore at two levels, a project root, entries the
    filters leave out (a symlink, a fifo, ignored names), names whose keys straddle a
    directory's in byte order ("a-b" < "a.b" < "a/" < "a0"), names not ASCII."""
    for rel in ("a.txt", "a.log", "b/c.txt", "b/d/e.txt", "b/d/e.log", "b/keep.tmp",
                "b/a-b/f", "b/a.b", "b/a/f", "b/a0", "é.txt", "日本語/文書.md",
                "g/.git/HEAD", "g/src/m.py", "z-b/y", "z.b/x", "z/w"):
        write(root / rel, f"<{rel}>")
    write(root / ".gitignore", "*.log\n")
    write(root / "b" / ".gitignore", "!e.log\n*.tmp\n")
    os.symlink("a.txt", root / "link")
    os.mkfifo(root / "fifo")


def _keys(hooks: CacheHooks) -> list[str]:
    return sorted(hooks.cache, key=str.encode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    _tree(r)
    return r


@pytest.mark.parametrize("writer", TWINS)
@pytest.mark.parametrize("reader", TWINS)
def test_both_twins_write_the_same_entries_and_take_each_others(root, writer, reader):
    w, r = load_twin(writer), load_twin(reader)
    first = CacheHooks()
    totals = walk(w, root, first, threads=4)
    other = CacheHooks()
    walk(r, root, other, threads=4)
    assert other.cache == first.cache  # byte for byte
    assert _keys(first) == ["", "b/", "b/a-b/", "b/a/", "b/d/", "g/", "g/.git/", "g/src/",
                            "z-b/", "z.b/", "z/", "日本語/"]
    again = CacheHooks()
    again.snap, again.cache = dict(first.snap), dict(first.cache)
    second = walk(r, root, again, threads=4)
    assert again.listed == [] and again.results == []  # every entry held
    assert (second.files, second.dirs, second.filtered) == \
        (totals.files, totals.dirs, totals.filtered)
    assert again.repos == first.repos == ["g"]


def _doctor(hooks: CacheHooks, key: str, **change: object) -> None:
    """Rewrite one entry with some fields changed."""
    old = decode_listing(hooks.cache[key])
    assert old is not None
    hooks.cache[key] = encode_listing(*old._replace(**change))


@pytest.mark.parametrize("twin", TWINS)
def test_an_entry_that_holds_is_taken_instead_of_the_directory(root, twin):
    """The walk believes the entry, not the directory: a name taken out of the entry is
    not seen (its file is deleted), which only a walk that did not list could do."""
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    old = decode_listing(hooks.cache["b/"])
    _doctor(hooks, "b/", names=[n for n in old.names if n[0] != "c.txt"])
    walk(mod, root, hooks)
    assert hooks.ops() == {"b/c.txt": "delete"}
    _doctor(hooks, "b/", stat=(old.stat[0] + 1, *old.stat[1:]))  # stat data moved
    walk(mod, root, hooks)
    assert hooks.ops() == {"b/c.txt": "ingest"}
    assert [k for k, _ in hooks.listed] == ["b/"] and hooks.cache["b/"] == \
        encode_listing(*old)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("field", ["mtime", "ctime", "inode", "size", "fingerprint"])
def test_an_entry_is_not_taken_when_a_field_differs(root, twin, field):
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    old = decode_listing(hooks.cache[""])
    stat = list(old.stat)
    if field == "fingerprint":
        _doctor(hooks, "", names=[], fingerprint=old.fingerprint ^ 1)
    else:
        stat[["mtime", "ctime", "inode", "size"].index(field)] += 1
        _doctor(hooks, "", names=[], stat=tuple(stat))
    walk(mod, root, hooks)
    assert hooks.results == [] and hooks.listed == [("", encode_listing(*old))]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", ["bad version", "truncated", "slash in a name", "dot-dot",
                                  "out of order", "empty name", "bad kind", "long name"])
def test_a_malformed_entry_is_listed_anew(root, twin, case):
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    good = hooks.cache["b/"]
    old = decode_listing(good)
    names = {"slash in a name": [("d/e.txt", KIND_FILE)], "dot-dot": [("..", KIND_DIR)],
             "out of order": list(reversed(old.names)), "empty name": [("", KIND_FILE)],
             "bad kind": [("c.txt", 7)], "long name": [("d" * 4000, KIND_DIR)]}.get(case)
    if names is not None:
        hooks.cache["b/"] = encode_listing(*old._replace(names=names))
    else:
        hooks.cache["b/"] = b"\x02" + good[1:] if case == "bad version" else good[:-2]
    walk(mod, root, hooks)
    assert hooks.results == [] and hooks.warnings == []
    assert hooks.cache["b/"] == good


@pytest.mark.parametrize("twin", TWINS)
def test_a_gitignore_edited_in_place_above_invalidates_the_entries_below(root, twin):
    """An edit in place leaves the directories' own stat data as they were: the
    fingerprint of the rules is what changes, for that directory and every one below."""
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    before = dict(hooks.cache)
    gi = root / ".gitignore"
    dir_stat = os.stat(root).st_mtime_ns
    with open(gi, "r+b") as f:  # in place: the directory is not touched
        f.write(b"*.tmp\n")
    assert os.stat(root).st_mtime_ns == dir_stat
    walk(mod, root, hooks)
    assert hooks.ops() == {".gitignore": "update", "a.log": "ingest"}
    assert {k for k, _ in hooks.listed} == set(before)  # chained from the root down
    (root / "b" / ".gitignore").write_bytes(b"!keep.tmp\n")  # b and its subtree only
    assert os.stat(root / "b").st_mtime_ns == decode_listing(hooks.cache["b/"]).stat[0]
    walk(mod, root, hooks)
    assert {k for k, _ in hooks.listed} == {"b/", "b/a-b/", "b/a/", "b/d/"}
    assert hooks.ops() == {"b/.gitignore": "update", "b/keep.tmp": "ingest"}


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("change", [{"ignore": ("*.txt",)}, {"include": ("*.py",)},
                                    {"use_gitignore": False}, {"minimal": True}])
def test_a_change_of_the_watchs_rules_invalidates_every_entry(root, twin, change):
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    keys = _keys(hooks)
    fresh = CacheHooks()
    expected = walk(mod, root, fresh, **change)  # no cache: what the rules give
    walk(mod, root, hooks, **change)
    assert sorted({k for k, _ in hooks.listed}, key=str.encode) == keys
    assert hooks.snap == fresh.snap and hooks.cache == fresh.cache
    assert walk(mod, root, hooks, **change).filtered == expected.filtered


@pytest.mark.parametrize("twin", TWINS)
def test_a_directory_changed_within_the_racy_window_is_not_cached(root, twin):
    """At the real time, every directory just made is too recent: none is cached, and an
    entry it had is forgotten; begun AHEAD, the same walk caches them all."""
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks, start_ns=time.time_ns())
    assert hooks.cache == {} and hooks.listed == []
    walk(mod, root, hooks)
    assert len(hooks.cache) == 12
    (root / "b" / "new.txt").write_bytes(b"new")  # b/ changes now...
    os.utime(root / "b", ns=(OLD_NS, OLD_NS))  # ...and its mtime is set back: the ctime tells
    walk(mod, root, hooks, start_ns=time.time_ns())
    assert hooks.ops() == {"b/new.txt": "ingest"}
    assert hooks.listed == [("b/", None)] and "b/" not in hooks.cache


@pytest.mark.parametrize("twin", TWINS)
def test_entries_of_directories_gone_or_not_visited_are_forgotten(root, twin):
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    shutil.rmtree(root / "b" / "d")
    walk(mod, root, hooks)
    assert hooks.ops() == {"b/d/e.txt": "delete", "b/d/e.log": "delete"}
    assert "b/d/" not in hooks.cache and "b/" in hooks.cache
    walk(mod, root, hooks, max_depth=1)  # z/ and the rest are no longer visited
    assert _keys(hooks) == [""]


@pytest.mark.parametrize("twin", TWINS)
def test_a_scoped_walk_uses_and_keeps_the_entries_of_its_subtree(root, twin):
    mod, hooks = load_twin(twin), CacheHooks()
    walk(mod, root, hooks)
    whole = dict(hooks.cache)
    hooks.cache = {k: v for k, v in whole.items() if k.startswith("b/")}  # what the store
    walk(mod, root, hooks, scope=("b",))  # gives a scoped walk
    assert hooks.listed == [] and hooks.results == []


@pytest.mark.parametrize("twin", TWINS)
def test_what_is_not_cached(root, twin, tmp_path):
    """A directory holding a name that is not UTF-8 (its warning must repeat), and any
    walk that follows symlinks."""
    mod, hooks = load_twin(twin), CacheHooks()
    bad = os.path.join(os.fsencode(root / "z"), b"bad-\xff")
    open(bad, "wb").close()
    walk(mod, root, hooks)
    assert "z/" not in hooks.cache and len(hooks.warnings) == 1
    walk(mod, root, hooks)
    assert len(hooks.warnings) == 1
    follows = CacheHooks()
    walk(mod, root, follows, follow_symlinks=True)
    assert follows.read_cache == 0 and follows.listed == []


# -- the model: directory operations between scans -------------------------------------

NAMES = ("a", "a.b", "a0", "é")
OPS = st.lists(st.tuples(st.sampled_from(("file", "mkdir", "rm", "rename", "swap")),
                         st.integers(0, 10**6), st.sampled_from(NAMES),
                         st.binary(max_size=4)), min_size=1, max_size=6)


def _dirs(root: Path) -> list[Path]:
    out = [root]
    for d, subs, _ in os.walk(root):
        subs.sort()
        out.extend(Path(d) / s for s in subs)
    return out


def _apply(root: Path, op: str, i: int, name: str, data: bytes) -> None:
    """One directory operation on the tree (several land within one timestamp tick)."""
    dirs = _dirs(root)
    d = dirs[i % len(dirs)]
    target = d / name
    kids = sorted(d.iterdir())
    if op == "file" and not target.is_dir():
        write(target, data, OLD_NS)
    elif op == "mkdir" and not target.exists() and len(d.relative_to(root).parts) < 2:
        target.mkdir()
    elif op == "rm" and kids:
        k = kids[i % len(kids)]
        shutil.rmtree(k) if k.is_dir() else k.unlink()
    elif op == "rename" and kids and not target.exists():
        os.rename(kids[i % len(kids)], target)
    elif op == "swap" and target.is_file():  # a file becomes a directory of the same name
        target.unlink()
        target.mkdir()


def _tree_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _snap_files(twin: ModuleType, hooks: CacheHooks) -> set[str]:
    return {k + e.name for k, blob in hooks.snap.items() for e in twin.decode_entries(blob)}


@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(OPS, st.booleans()), min_size=1, max_size=5))
def test_model_directory_operations_between_cached_scans(tmp_path_factory, twin, steps):
    """Random directory operations, each batch within a tick or two, between walks that
    take what they can from the cache: after each walk the snapshot holds exactly the
    tree's files. A step's flag makes its walk begin at the real time instead, right
    after the operations (everything racy)."""
    mod = load_twin(twin)
    base = tmp_path_factory.mktemp("model")
    root = base / "tree"
    root.mkdir()
    (root / "a").mkdir()
    write(root / "a" / "f", b"f")
    hooks = CacheHooks()
    walk(mod, root, hooks)
    for ops, now in steps:
        for op in ops:
            _apply(root, *op)
        walk(mod, root, hooks, start_ns=time.time_ns() if now else None)
        assert _snap_files(mod, hooks) == _tree_files(root)
        assert hooks.warnings == []
        for key, blob in hooks.cache.items():  # every entry is true of its directory
            entry = decode_listing(blob)
            assert entry is not None and key.endswith("/") or key == ""
            listed = sorted((p.name, KIND_DIR if p.is_dir() else KIND_FILE)
                            for p in (root / key).iterdir())
            assert sorted(entry.names) == listed, key
    shutil.rmtree(base)


def test_listing_codec_round_trip():
    entry = Listing((1, 2, 3, 4), 2**64 - 1, 3, 7, [("a", KIND_FILE), ("é", KIND_DIR)])
    assert decode_listing(encode_listing(*entry)) == entry


# -- through reconcile and the store ------------------------------------------------------

def test_reconcile_keeps_the_cache_in_the_store(dbstore):
    """A tree installed long ago (the standard library's json package: older than the
    racy window, and never written here) is cached by its first scan, taken whole by the
    next, shown in `status`, and forgotten with its watch; a dry run writes no entry."""
    tree = Path(json.__file__).parent
    assert os.stat(tree).st_ctime_ns < time.time_ns() - 2 * RACY_NS
    dry = watch(dbstore, tree, "dry")
    scan(dbstore, dry, dry_run=True)
    assert list(dbstore.listings(dry)) == []
    remove_watch(dbstore, dry)
    wid = watch(dbstore, tree)
    first = scan(dbstore, wid)
    assert first.ok and first.ingest > 0, first.reason
    cached = dict(dbstore.listings(wid))
    entry = decode_listing(cached[""])
    assert entry is not None
    assert [n for n, _ in entry.names] == sorted(
        (p.name for p in tree.iterdir() if p.name != "__pycache__"), key=str.encode)
    again = scan(dbstore, wid)
    assert (again.ingest, again.update, again.delete, again.totals.files) == \
        (0, 0, 0, first.totals.files)
    assert dict(dbstore.listings(wid)) == cached
    assert watch_status(dbstore, wid)["directory_cache"] == "on"
    assert [k for k, _ in dbstore.listings(wid, ("nowhere",))] == []
    remove_watch(dbstore, wid)
    assert list(dbstore.listings(wid)) == []


def test_the_cache_is_on_for_local_filesystems_and_nfs_only():
    for on in ("ext4", "tmpfs", "overlay", "xfs", "nfs", "nfs4", None):
        assert dircache_off(on, False) is None, on
    for off in ("fuse.sshfs", "fuse", "cifs", "smb3", "9p", "virtiofs"):
        assert off in (dircache_off(off, False) or ""), off
    assert "symlinks" in (dircache_off("ext4", True) or "")
