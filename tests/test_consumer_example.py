"""The worked consumer in examples/ run end to end: add a watch, reconcile, consume,
change files, reconcile, consume; its full-text index matches the tree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import OLD_NS, read_rows, write

pytestmark = pytest.mark.scanner_free

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fts_consumer.py"


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def indexed(index: Path) -> dict[str, str]:
    return dict(read_rows(index, "SELECT path, body FROM docs"))


def tree_text(root: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fts_consumer_keeps_the_index_equal_to_the_tree(tmp_path: Path) -> None:
    db, index, root = tmp_path / "wq.db", tmp_path / "index.db", tmp_path / "notes"
    write(root / "fruit.md", "apples and pears\n")
    write(root / "veg.md", "carrots\n")
    write(root / "deep" / "a.txt", "alpha\n")
    wq = ["-m", "wqscan", "--db", str(db), "-q"]
    run(*wq, "add", str(root), "--collection", "notes", "--settle", "0")
    run(*wq, "reconcile")
    assert run(str(EXAMPLE), "--db", str(db), "--index", str(index)).strip() == \
        "ingest 3, update 0, delete 0, failed 0"
    assert indexed(index) == tree_text(root)
    assert run(str(EXAMPLE), "--index", str(index), "--search", "apples").split() == \
        [str(root / "fruit.md")]

    write(root / "fruit.md", "plums\n", OLD_NS + 10**9)
    (root / "veg.md").unlink()
    write(root / "soup.md", "leeks\n")
    (root / "deep" / "a.txt").rename(root / "deep" / "b.txt")
    run(*wq, "reconcile")
    assert run(str(EXAMPLE), "--db", str(db), "--index", str(index)).strip() == \
        "ingest 2, update 1, delete 2, failed 0"
    assert indexed(index) == tree_text(root)
    no_match = run(str(EXAMPLE), "--index", str(index), "--search", "apples OR carrots")
    assert no_match == ""  # no line at all
    assert read_rows(db, "SELECT count(*) FROM ingestion_queue") == [(0,)]


def test_a_file_gone_before_it_is_consumed_is_dropped(tmp_path: Path) -> None:
    db, index, root = tmp_path / "wq.db", tmp_path / "index.db", tmp_path / "notes"
    write(root / "keep.md", "kept\n")
    write(root / "gone.md", "short-lived\n")
    wq = ["-m", "wqscan", "--db", str(db), "-q"]
    run(*wq, "add", str(root), "--collection", "notes", "--settle", "0")
    run(*wq, "reconcile")
    (root / "gone.md").unlink()  # queued as an ingest, deleted before the consumer runs
    run(str(EXAMPLE), "--db", str(db), "--index", str(index))
    assert indexed(index) == {str(root / "keep.md"): "kept\n"}
    run(*wq, "reconcile")  # the scan queues the delete; consuming it changes nothing
    assert run(str(EXAMPLE), "--db", str(db), "--index", str(index)).strip() == \
        "ingest 0, update 0, delete 1, failed 0"
    assert indexed(index) == tree_text(root)
