"""The worked consumer in examples/ run end to end: add a watch, reconcile, consume,
change files, reconcile, consume; its full-text index matches the tree. The queue is an
SQLite file or a PostgreSQL schema (fixture `database`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from helpers.db import Db, queue
from helpers.ondisk import read_rows
from helpers.trees import OLD_NS, write

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


def test_fts_consumer_keeps_the_index_equal_to_the_tree(tmp_path: Path, database: Db) -> None:
    db, index, root = database, tmp_path / "index.db", tmp_path / "notes"
    write(root / "fruit.md", "apples and pears\n")
    write(root / "veg.md", "carrots\n")
    write(root / "deep" / "a.txt", "alpha\n")
    wq = ["-m", "wqscan", *db.argv, "-q"]
    run(*wq, "add", str(root), "--collection", "notes", "--settle", "0")
    run(*wq, "reconcile")
    assert run(str(EXAMPLE), *db.argv, "--index", str(index)).strip() == \
        "ingest 3, update 0, delete 0, failed 0"
    assert indexed(index) == tree_text(root)
    assert run(str(EXAMPLE), "--index", str(index), "--search", "apples").split() == \
        [str(root / "fruit.md")]

    write(root / "fruit.md", "plums\n", OLD_NS + 10**9)
    (root / "veg.md").unlink()
    write(root / "soup.md", "leeks\n")
    (root / "deep" / "a.txt").rename(root / "deep" / "b.txt")
    run(*wq, "reconcile")
    assert run(str(EXAMPLE), *db.argv, "--index", str(index)).strip() == \
        "ingest 2, update 1, delete 2, failed 0"
    assert indexed(index) == tree_text(root)
    no_match = run(str(EXAMPLE), "--index", str(index), "--search", "apples OR carrots")
    assert no_match == ""  # no line at all
    assert queue(db, None) == []


def test_a_file_gone_before_it_is_consumed_is_dropped(tmp_path: Path, database: Db) -> None:
    db, index, root = database, tmp_path / "index.db", tmp_path / "notes"
    write(root / "keep.md", "kept\n")
    write(root / "gone.md", "short-lived\n")
    wq = ["-m", "wqscan", *db.argv, "-q"]
    run(*wq, "add", str(root), "--collection", "notes", "--settle", "0")
    run(*wq, "reconcile")
    (root / "gone.md").unlink()  # queued as an ingest, deleted before the consumer runs
    run(str(EXAMPLE), *db.argv, "--index", str(index))
    assert indexed(index) == {str(root / "keep.md"): "kept\n"}
    run(*wq, "reconcile")  # the scan queues the delete; consuming it changes nothing
    assert run(str(EXAMPLE), *db.argv, "--index", str(index)).strip() == \
        "ingest 0, update 0, delete 1, failed 0"
    assert indexed(index) == tree_text(root)


def test_mistakes_are_one_line_and_create_nothing(tmp_path: Path) -> None:
    """A missing database, or a search of a missing index, is one line on stderr and exit
    2, creating no index; --db defaults to $WQSCAN_DB as wqscan's own does. SQLite only:
    the mistake is a file path that names no file."""
    index = tmp_path / "index.db"
    for argv in (["--db", str(tmp_path / "typo.db"), "--index", str(index)],
                 ["--index", str(index), "--search", "apples"]):
        done = subprocess.run([sys.executable, str(EXAMPLE), *argv], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("fts_consumer: error: "), done.stderr
        assert not index.exists()
    db, root = tmp_path / "wq.db", tmp_path / "notes"
    write(root / "fruit.md", "apples\n")
    run("-m", "wqscan", "--db", str(db), "-q", "add", str(root), "--collection", "n",
        "--settle", "0")
    run("-m", "wqscan", "--db", str(db), "-q", "reconcile")
    done = subprocess.run([sys.executable, str(EXAMPLE), "--index", str(index)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WQSCAN_DB": str(db)})
    assert (done.returncode, done.stdout.strip()) == (0, "ingest 1, update 0, delete 0, failed 0")


def test_a_file_changed_after_its_scan_is_failed_not_indexed(tmp_path: Path, database: Db) -> None:
    """A file rewritten between the scan and the consumer is not the content its row names:
    the example fails the row (retried later) instead of indexing a version the queue does
    not know it holds, and the next scan's change is merged into that row."""
    db, index, root = database, tmp_path / "index.db", tmp_path / "notes"
    write(root / "fruit.md", "apples\n")
    wq = ["-m", "wqscan", *db.argv, "-q"]
    run(*wq, "add", str(root), "--collection", "notes", "--settle", "0")
    run(*wq, "reconcile")
    write(root / "fruit.md", "plums, and more\n", OLD_NS + 10**9)
    assert run(str(EXAMPLE), *db.argv, "--index", str(index)).strip() == \
        "ingest 0, update 0, delete 0, failed 1"
    assert indexed(index) == {}
    (row,) = queue(db, None)
    assert (row["status"], row["retry_count"]) == ("pending", 1)
    assert "changed since it was queued" in row["error_message"]
    run(*wq, "reconcile")
    (row,) = queue(db, None)
    assert row["operation"] == "ingest" and row["metadata"]["content_hash"] == \
        xxhash.xxh3_128_hexdigest(b"plums, and more\n")
