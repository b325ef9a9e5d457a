"""`wqscan set ID ...`: every add option changed in place, the snapshot kept,
so the next scan queues exactly the files that enter or leave the scope."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.db import drain, ops, scan, watch
from helpers.trees import write

from wqscan import cli
from wqscan.watches import get_watch


@pytest.fixture
def tree(root: Path) -> Path:
    for name in ("a.md", "b.txt", "docs/c.md", "docs/d.txt", "drafts/e.md"):
        write(root / name, name)
    return root


def run(capsys, store, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["--db", store.path, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_patterns_and_ignores_queue_what_enters_or_leaves(twin, store, tree, capsys):
    """Narrowing queues deletes of the files that left, widening ingests of those that came
    in; files in scope before and after are not queued again."""
    wid = watch(store, tree)
    assert scan(store, wid).ingest == 5
    drain(store)
    assert run(capsys, store, "set", wid, "--pattern", "*.md", "--ignore", "drafts/")[0] == 0
    scan(store, wid)
    assert ops(store) == {"b.txt": "delete", "docs/d.txt": "delete", "drafts/e.md": "delete"}
    drain(store)
    assert run(capsys, store, "set", wid, "--all-files", "--no-ignores")[0] == 0
    scan(store, wid)
    assert ops(store) == {"b.txt": "ingest", "docs/d.txt": "ingest", "drafts/e.md": "ingest"}
    drain(store)
    assert run(capsys, store, "set", wid, "--max-depth", "1")[0] == 0
    scan(store, wid)
    assert ops(store) == {"docs/c.md": "delete", "docs/d.txt": "delete", "drafts/e.md": "delete"}
    drain(store)
    assert scan(store, wid).ingest == 0


def test_every_option_is_stored(store, tree, capsys):
    wid = watch(store, tree, check_stat="full", threads=3, timeout=50)
    rc, out, err = run(capsys, store, "set", wid, "--interval", "30", "--settle", "1.5",
                       "--priority", "*.md=7", "--max-file-size", "1000", "--no-gitignore",
                       "--follow-symlinks", "--check-stat", "minimal", "--threads", "auto",
                       "--timeout", "default", "--no-enabled", "--no-recursive",
                       "--no-default-ignores", "--metadata", '{"team": "x"}',
                       "--no-auto-ingest", "--json")
    assert rc == 0, err
    w = get_watch(store, wid)
    assert json.loads(out)["poll_interval_seconds"] == 30
    assert (w.interval, w.settle, w.priority_rules, w.max_file_size,
            w.use_gitignore, w.follow_symlinks, w.check_stat, w.threads,
            w.timeout, w.enabled, w.recursive, w.ignores, w.metadata,
            w.auto_ingest) == (30, 1.5, (("*.md", 7),), 1000, False, True, "minimal", None,
                               None, False, False, (), {"team": "x"}, False)
    assert run(capsys, store, "set", wid, "--max-file-size", "none", "--default-ignores",
               "--enabled")[0] == 0
    w = get_watch(store, wid)
    assert w.max_file_size is None and w.enabled and ".git" in w.ignores


def test_a_new_collection_moves_every_file(twin, store, tree, capsys):
    """Changing the collection queues a delete of every file into the old one, and the next
    scan ingests them all into the new one."""
    wid = watch(store, tree)
    scan(store, wid)
    drain(store)
    assert run(capsys, store, "set", wid, "--collection", "new")[0] == 0
    rows = store.conn.execute("SELECT collection_name, operation, count(*) FROM "
                              "ingestion_queue GROUP BY 1, 2").fetchall()
    assert rows == [("c", "delete", 5)]
    drain(store)
    assert scan(store, wid).ingest == 5
    assert store.conn.execute("SELECT DISTINCT collection_name FROM ingestion_queue"
                              ).fetchall() == [("new",)]


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to change"),
    (["--pattern", "[z-a]"], "pattern"),
    (["--interval", "0"], "--interval"),
    (["--threads", "many"], "--threads"),
    (["--pattern", "*.md", "--all-files"], "not both"),
    (["--metadata", "[1]"], "--metadata"),
])
def test_bad_changes_are_refused_and_change_nothing(store, tree, capsys, argv, message):
    wid = watch(store, tree)
    before = store.watch_row(wid)
    rc, out, err = run(capsys, store, "set", wid, *argv)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert store.watch_row(wid) == before


def test_a_watch_the_yaml_file_defines_is_changed_there(store, tree, tmp_path, capsys):
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"watches:\n  - id: y\n    path: {tree}\n    collection: c\n")
    assert run(capsys, store, "--config", str(cfg), "list")[0] == 0
    rc, out, err = run(capsys, store, "set", "y", "--interval", "5")
    assert rc == 2 and f"defined by {cfg}" in err and "edit it there" in err
