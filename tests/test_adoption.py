"""Never destructive: in a database wqscan did not create, every command leaves
every object of its owner as it was (tables with extra columns, foreign keys, views and
triggers on ingestion_queue and watch_folders), adds only wq_ objects, and leaves the
header alone; a command that fails changes nothing at all."""
from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest
from helpers.foreign import build_spec_db, build_wqm_db
from helpers.gitrepo import git
from helpers.trees import write

from wqscan import cli

pytestmark = pytest.mark.scanner_free

LAYOUTS = {"wqm": lambda db, **kw: build_wqm_db(db, extras=True, **kw),
           "spec": lambda db, **kw: build_spec_db(db, extras=True, **kw)}


def objects(db: Path) -> dict[str, tuple]:
    """Every schema object by name: (type, table, sql)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return {name: (kind, table, sql) for kind, name, table, sql in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master")}
    finally:
        conn.close()


def header(db: Path) -> tuple[int, int]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.pragma("application_id"), conn.pragma("user_version")
    finally:
        conn.close()


def views_query(db: Path) -> None:
    """Every view of the database still runs."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'"
                                    ).fetchall():
            conn.execute(f'SELECT * FROM "{name}"').fetchall()
    finally:
        conn.close()


def ours(name: str) -> bool:
    return name.startswith(("wq_", "sqlite_autoindex_wq_"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_command_leaves_their_objects(layout, tmp_path, capsys):
    """init, add, list, show, status, reconcile (dry run and real), run --once, queue list
    and stats, metrics, disable, enable, a YAML configuration, hook install and remove
    --emit-deletes: after each, the owner's objects are identical, every view queries, the
    header is unchanged, and whatever was added is wqscan's."""
    db = tmp_path / "theirs.db"
    LAYOUTS[layout](db)
    first, head = objects(db), header(db)
    tree = tmp_path / "tree"
    write(tree / "a.md", b"alpha")
    write(tree / "sub" / "b.md", b"bravo")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    config = tmp_path / "wqscan.yaml"
    config.write_text(f"watches:\n  - id: fromyaml\n    path: {repo}\n    collection: _yaml\n")
    steps = [
        ["init"], ["list"], ["status"],
        ["add", str(tree), "--collection", "_c", "--id", "mine", "--settle", "0",
         "--interval", "5", "--max-depth", "4"],
        ["show", "mine"], ["reconcile", "--dry-run"], ["reconcile"], ["run", "--once"],
        ["queue", "list"], ["queue", "stats"], ["metrics"], ["disable", "mine"],
        ["enable", "mine"], ["--config", str(config), "list"], ["hook", "install", str(repo)],
        ["status", "--json"], ["remove", "mine", "--emit-deletes"],
    ]
    for argv in steps:
        rc = cli.main(["--db", str(db), *argv])
        out, err = capsys.readouterr()
        assert rc == 0, (argv, out, err)
        now = objects(db)
        assert {n: o for n, o in now.items() if n in first} == first, argv
        assert all(ours(n) for n in now if n not in first), (argv, set(now) - set(first))
        assert header(db) == head, argv
        views_query(db)
    assert {n for n in objects(db) if n not in first} >= {"wq_meta", "wq_snapshot",
                                                          "wq_watch_settings"}


def failing_commands(tmp: Path) -> list[list[str]]:
    missing = str(tmp / "missing")
    return [
        ["add", missing, "--collection", "_c"],
        ["add", str(tmp), "--collection", "_c", "--pattern", "[z-a]"],
        ["reconcile", "no-such-watch"],
        ["remove", "no-such-watch"],
        ["show", "no-such-watch"],
        ["enable", "no-such-watch"],
        ["reconcile", "--path", missing],
        ["init", "--layout", "wqscan"],
        ["queue", "claim", "1"],
    ]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_failing_commands_change_nothing(layout, tmp_path, capsys):
    """Commands that fail (exit 2) leave the database byte for byte as it was, and no file
    beside it (rollback journal mode, so that the file alone holds the database)."""
    db = tmp_path / "theirs.db"
    LAYOUTS[layout](db, journal="delete")
    data = db.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    for argv in failing_commands(tmp_path):
        if layout == "spec" and argv[:2] in (["init", "--layout"], ["queue", "claim"]):
            continue  # both work on a wqscan-layout database
        rc = cli.main(["--db", str(db), *argv])
        out, err = capsys.readouterr()
        assert rc == 2, (argv, out, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert db.read_bytes() == data, argv
        assert sorted(os.listdir(tmp_path)) == listing, argv


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("column, message", [
    (", team TEXT NOT NULL", "column team is NOT NULL without a default"),
    (", team TEXT DEFAULT 'x' REFERENCES watch_folders(watch_id)", "FOREIGN KEY constraint"),
], ids=["not-null", "foreign-key"])
def test_add_that_their_table_cannot_take_changes_nothing(layout, column, message, tmp_path,
                                                          capsys):
    """A watch_folders column wqscan cannot fill (NOT NULL without a default, a foreign key
    its default breaks): `add` exits 2 with one line naming the database, which is byte for
    byte as it was (wqscan's own tables, which that first write would have created, are
    rolled back with it)."""
    db = tmp_path / "theirs.db"
    LAYOUTS[layout](db, journal="delete", watch_column=column)
    (tmp_path / "tree").mkdir()
    data = db.read_bytes()
    rc = cli.main(["--db", str(db), "add", str(tmp_path / "tree"), "--collection", "_c"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and message in err and str(db) in err, err
    assert db.read_bytes() == data


def test_claims_on_an_adopted_wqscan_layout(tmp_path, capsys):
    """On a database another tool built from the documented tables, a row its own INSERT
    wrote can be claimed and completed from the shell before wqscan wrote anything else
    there."""
    db = tmp_path / "theirs.db"
    build_spec_db(db, extras=True)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO ingestion_queue (queue_id, file_absolute_path, collection_name, "
                 "operation, queued_timestamp, scheduled_at) VALUES ('q1', '/d/a', 'docs', "
                 "'ingest', '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z')")
    conn.close()
    first = objects(db)
    assert cli.main(["--db", str(db), "queue", "claim", "5", "--owner", "me"]) == 0
    assert capsys.readouterr().out == "q1\tingest\t/d/a\n"
    assert cli.main(["--db", str(db), "queue", "complete", "q1", "--owner", "me"]) == 0
    now = objects(db)
    assert {n: o for n, o in now.items() if n in first} == first
    assert all(ours(n) for n in now if n not in first)
