"""pytest-benchmark cases for whole reconciles through each scanner twin (ids c/py).

Run: pytest benchmarks/ --benchmark-columns=median,iqr --benchmark-group-by=func
"""
from __future__ import annotations

import os
import shutil
import time

import pytest
from helpers.memhooks import CacheHooks

from wqscan.reconcile import reconcile
from wqscan.scan.records import RACY_NS, ScanParams
from wqscan.store import Store
from wqscan.watches import add_watch


def _fresh(tmp_path, tree_dir: str) -> Store:
    db = str(tmp_path / f"b{len(os.listdir(tmp_path))}.db")
    store = Store.open(db)
    add_watch(store, tree_dir, "bench", settle=0)
    return store


def test_first_scan(benchmark, twin, tmp_path, tree_dir):
    """Empty database: hash every file, write every snapshot and queue row."""
    def setup():
        return (_fresh(tmp_path, tree_dir),), {}

    def run(store):
        assert reconcile(store)[0].ok

    benchmark.pedantic(run, setup=setup, rounds=3)


def test_no_change(benchmark, twin, tmp_path, tree_dir):
    """Rescan of an unchanged tree."""
    store = _fresh(tmp_path, tree_dir)
    reconcile(store)
    reconcile(store)  # settles the racy entries of the first scan
    report = benchmark(lambda: reconcile(store)[0])
    assert report.ok and report.totals.hashed == 0


@pytest.mark.parametrize("cache", ["on", "off"])
def test_no_change_walk_directory_cache(benchmark, twin, tree_dir, cache):
    """A no-change walk (the scanner alone, in memory) with the directory cache on or off.
    The walks begin past the racy window, as if the tree had been left alone for 2 s:
    with the cache on, every directory is taken from its entry."""
    params = ScanParams(root=tree_dir, start_ns=time.time_ns() + 2 * RACY_NS,
                        dircache=cache == "on", threads=2)
    hooks = CacheHooks()
    twin.walk(params, hooks)
    hooks.commit()

    def run() -> None:
        hooks.reset()
        twin.walk(params, hooks)
        assert hooks.results == [] and hooks.listed == []

    benchmark(run)
    assert len(hooks.cache) == (0 if cache == "off" else len(list(os.walk(tree_dir))))


@pytest.fixture
def changed_copy(tmp_path, tree_dir):
    """A private copy of the tree, so the 1% change can be undone between rounds."""
    copy = str(tmp_path / "copy")
    shutil.copytree(tree_dir, copy)
    return copy


def test_one_percent_changed(benchmark, twin, tmp_path, changed_copy):
    """Rescan after 1% of the files were rewritten and 1% only touched."""
    store = _fresh(tmp_path, changed_copy)
    reconcile(store)
    reconcile(store)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(changed_copy) for f in fs
                   if f.endswith(".txt"))
    step = 100
    generation = [0]

    def setup():
        generation[0] += 1
        g = generation[0]
        ns = 1_700_000_100 * 10**9 + g
        for i, path in enumerate(files[::step]):
            if i % 2:
                os.utime(path, ns=(ns, ns))
            else:
                with open(path, "ab") as f:
                    f.write(b"%d" % g)
                os.utime(path, ns=(ns, ns))
        return (store,), {}

    def run(store):
        assert reconcile(store)[0].ok

    benchmark.pedantic(run, setup=setup, rounds=5)
