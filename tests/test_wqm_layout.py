"""The workspace-qdrant-mcp layout (docs/workspace-qdrant-mcp.md): a state database built the
way that project builds it, its watch rows scanned as they are, queue writes that follow
its consumer (one row per path, coalescing by upsert, no rewrite of an unchanged
operation), and a consumer written to its published semantics draining the queue."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import pytest
from consumer_log import tree_hashes
from helpers.db import COALESCING, scan, watch
from helpers.foreign import WqmConsumer, build_wqm_db, py310_fromisoformat, wqm_watch
from helpers.gitrepo import git
from helpers.trees import OLD_NS, h, write

from wqscan import cli
from wqscan.errors import UsageError
from wqscan.queue.consumer import QueueClient
from wqscan.queue.writes import RowMaker, enqueue
from wqscan.reconcile import batches, reconcile
from wqscan.scan.records import Change
from wqscan.store import WQM, Store
from wqscan.watches import add_watch, get_watch

THEIR_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
OLD_THEIRS = "2020-01-02 03:04:05"


def rows(db: Path | Store) -> dict[str, dict]:
    """Every ingestion_queue row by path, metadata decoded."""
    conn = db.conn if isinstance(db, Store) else apsw.Connection(str(db))
    cur = conn.execute("SELECT * FROM ingestion_queue")
    out = {}
    for r in cur:
        row = dict(zip([d[0] for d in cur.get_description()], r))
        if row.get("metadata"):
            row["metadata"] = json.loads(row["metadata"])
        out[row["file_absolute_path"]] = row
    return out


@pytest.fixture
def wqm_db(tmp_path) -> Path:
    """A state database as that project's state manager and queue schema leave it."""
    db = tmp_path / "state.db"
    build_wqm_db(db, extras=True)
    return db


def notes_tree(root: Path) -> None:
    write(root / "a.md", b"alpha")
    write(root / "b.txt", b"bravo")
    write(root / "skip.bin", b"\0\1")
    write(root / "sub" / "c.md", b"charlie")
    write(root / "sub" / "deep" / "d.md", b"delta")


# -- first scan, watches as that project wrote them ---------------------------------------

def test_first_scan_and_consumer_drain(twin, wqm_db, root):
    """A watch row that project wrote is scanned as it is; one row per file in that
    project's format; its consumer takes every row and its view equals the tree; a rescan
    then queues nothing."""
    notes_tree(root)
    wqm_watch(wqm_db, "w1", root, "_notes", patterns=["*.md", "*.txt"])
    with Store.open(str(wqm_db)) as store:
        assert store.layout.name == WQM
        rep = scan(store)
        assert rep.ok and rep.ingest == 4, rep.reason
        got = rows(store)
    base = os.path.realpath(root)
    assert sorted(got) == sorted(f"{base}/{p}" for p in ("a.md", "b.txt", "sub/c.md",
                                                          "sub/deep/d.md"))
    for path, row in got.items():
        assert row["collection_name"] == "_notes" and row["operation"] == "ingest"
        assert row["priority"] == 5 and row["retry_count"] == 0
        assert row["tenant_id"].startswith("path_") and row["branch"] == "main"
        assert THEIR_TIME.match(row["queued_timestamp"]), row
        assert row["error_message_id"] is None and row["retry_from"] is None
        assert row["note"] == "theirs"  # the default of a column wqscan does not know
        meta = row["metadata"]
        assert meta["watch_id"] == "w1" and meta["source"] == "wqscan"
        assert meta["relative_path"] == os.path.relpath(path, base)
        assert meta["content_hash"] == tree_hashes(root)[path]
    consumer = WqmConsumer(wqm_db)
    try:
        assert consumer.drain() == 4
        assert consumer.view == tree_hashes(root, (".md", ".txt"))
    finally:
        consumer.close()
    with Store.open(str(wqm_db)) as store:
        rep = scan(store)
        assert (rep.ingest, rep.update, rep.delete) == (0, 0, 0)
        assert rows(store) == {}
        watch_row = store.watch_row("w1")
    assert THEIR_TIME.match(watch_row["last_scan"]), watch_row


@pytest.mark.parametrize("settings, expected", [
    ({"recursive": False}, {"a.md"}),
    ({"depth": 0}, {"a.md"}),
    ({"depth": 1}, {"a.md", "sub/c.md"}),
    ({"depth": -1}, {"a.md", "sub/c.md", "sub/deep/d.md"}),
    ({"depth": 10, "ignores": ["sub/deep/"]}, {"a.md", "sub/c.md"}),
    ({"auto_ingest": False}, set()),
], ids=["not-recursive", "depth-0", "depth-1", "unlimited", "ignore", "no-auto-ingest"])
def test_their_watch_settings(twin, wqm_db, root, settings, expected):
    """recursive, recursive_depth (-1 unlimited, N levels below the root), ignore_patterns
    and auto_ingest of a row that project wrote mean what they mean there."""
    notes_tree(root)
    wqm_watch(wqm_db, "w1", root, "_notes", patterns=["*.md"], **settings)
    with Store.open(str(wqm_db)) as store:
        rep = scan(store)
        assert rep.ok, rep.reason
        assert {os.path.relpath(p, os.path.realpath(root)) for p in rows(store)} == expected
        assert store.snapshot_files("w1") == len(expected) or not settings.get(
            "auto_ingest", True)


def test_their_debounce_is_settle_and_enabled_is_honoured(twin, wqm_db, root):
    """debounce_seconds is the settle time; a disabled row is left out of a plain
    reconcile (and scanned when named)."""
    write(root / "old.md", b"old")
    fresh = root / "fresh.md"
    fresh.write_bytes(b"new")  # mtime now: within a 3600 s settle time
    wqm_watch(wqm_db, "slow", root, "_a", debounce=3600)
    wqm_watch(wqm_db, "off", root / "..", "_b", enabled=False)
    with Store.open(str(wqm_db)) as store:
        (rep,) = reconcile(store)
        assert rep.watch_id == "slow" and rep.ingest == 1 and rep.totals.deferred == 1
        assert list(rows(store)) == [os.path.realpath(root / "old.md")]


# -- queue writes: the coalescing table on the path's row ----------------------------------

def _row_for(store: Store, root: Path, op: str, content: bytes, priority: int = 5) -> list:
    """The queue row wqscan would write for an operation on root/a.md."""
    maker = RowMaker(get_watch(store, watch(store, root, "_notes", watch_id="mine")))
    change = Change(op, "a.md", len(content), OLD_NS, 1, bytes.fromhex(h(content)),
                    bytes.fromhex(h(b"before")) if op == "update" else None)
    return [maker.row(change, "tenant-new", "branch-new", priority)]


@pytest.mark.parametrize("old, new, result", COALESCING)
def test_coalescing_on_the_paths_row(wqm_db, root, old, new, result):
    """The coalescing table applied to the row that is there, by an upsert that keeps the row's
    other columns; ingest + delete removes it; a row whose operation stays the same is not
    written at all (the consumer may be reading it)."""
    path = os.path.realpath(root / "a.md")
    old_meta = {"content_hash": h(b"before")}  # what the consumer holds after a delete
    if old == "update":
        old_meta["previous_hash"] = h(b"oldest")  # ... and before the update it has not seen
    conn = apsw.Connection(str(wqm_db))
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO messages (error_type, error_message) VALUES ('E', 'boom')")
    conn.execute("INSERT INTO ingestion_queue (file_absolute_path, collection_name, tenant_id, "
                 "branch, operation, priority, queued_timestamp, retry_count, error_message_id, "
                 "metadata) VALUES (?, '_old', 't-old', 'b-old', ?, 7, ?, 2, 1, ?)",
                 (path, old, OLD_THEIRS, json.dumps(old_meta)))
    conn.close()
    with Store.open(str(wqm_db)) as store:
        with store.write():
            batch = _row_for(store, root, new, b"after", priority=3)
            written = enqueue(store, batch).changed
        got = rows(store)
        audit = store.conn.execute("SELECT count(*) FROM audit WHERE what = 'update'"
                                   ).fetchall()[0][0]
    if result is None:
        assert got == {} and written == 1
        return
    (row,) = got.values()
    assert row["operation"] == result
    kept = (row["queued_timestamp"], row["retry_count"], row["error_message_id"], row["note"])
    assert kept == (OLD_THEIRS, 2, 1, "theirs")
    if result == old:
        assert (written, audit) == (0, 0)
        assert (row["collection_name"], row["tenant_id"], row["priority"]) == ("_old", "t-old", 7)
        assert row["metadata"] == old_meta
    else:
        assert (written, audit) == (1, 1)
        assert (row["collection_name"], row["tenant_id"], row["branch"], row["priority"]) == \
            ("_notes", "tenant-new", "branch-new", 7)
        meta = row["metadata"]
        assert meta["content_hash"] == h(b"after") and meta["source"] == "wqscan"
        if result == "update":  # the hash the consumer last saw
            assert meta["previous_hash"] == old_meta.get("previous_hash", h(b"before"))


def test_rescan_with_waiting_rows_beside_an_insert_trigger(twin, wqm_db, root):
    """A trigger another program hangs on the queue (here: each insert logged in its audit
    table) adds to SQLite's count of changes, so wqscan does not count rows by it: in a
    batch whose new file is inserted (and logged) while a delete meets its file's waiting
    ingest, the ingest is still cancelled."""
    conn = apsw.Connection(str(wqm_db))
    conn.execute("CREATE TRIGGER queue_logged AFTER INSERT ON ingestion_queue BEGIN "
                 "INSERT INTO audit (what, path) VALUES ('insert', NEW.file_absolute_path); "
                 "END")
    conn.close()
    for name in ("a.md", "b.md"):
        write(root / name, name.encode())
    wqm_watch(wqm_db, "w1", root, "_notes")
    base = os.path.realpath(root)
    with Store.open(str(wqm_db)) as store:
        assert store.layout.queue_triggers
        assert scan(store).ingest == 2
        (root / "b.md").unlink()
        write(root / "d.md", b"d")
        rep = scan(store)
        assert (rep.ingest, rep.delete, rep.written) == (1, 1, 2)
        got = rows(store)
        logged = store.conn.execute("SELECT path FROM audit WHERE what = 'insert'").fetchall()
    assert {p: r["operation"] for p, r in got.items()} == {
        f"{base}/a.md": "ingest", f"{base}/d.md": "ingest"}
    assert sorted(p for (p,) in logged) == [f"{base}/a.md", f"{base}/b.md", f"{base}/d.md"]


def test_deletes_of_more_waiting_rows_than_one_lookup_holds(twin, tmp_path, root):
    """1,200 files of one directory, still waiting to be ingested, are deleted: their rows
    are looked up in several parts and every one of them is cancelled."""
    db = tmp_path / "state.db"
    build_wqm_db(db)
    for i in range(1200):
        write(root / "gone" / f"f{i:04d}.md", f"gone {i}")
    write(root / "gone" / "last.md", "stays")
    for i in range(1300):
        write(root / "kept" / f"f{i:04d}.md", f"kept {i}")
    wqm_watch(db, "w1", root, "_notes")
    with Store.open(str(db)) as store:
        assert scan(store).ingest == 2501
        for i in range(1200):
            (root / "gone" / f"f{i:04d}.md").unlink()
        rep = scan(store)
        assert (rep.delete, rep.written) == (1200, 1200)
        got = rows(store)
    assert len(got) == 1301
    assert not any("/gone/f" in p for p in got)


def test_rescan_with_waiting_rows(twin, tmp_path, root):
    """Without triggers of its own on the queue, a batch in which some paths already have a
    row is undone and written again knowing which rows went in: the new file is inserted,
    the others coalesced."""
    db = tmp_path / "state.db"
    build_wqm_db(db)
    for name in ("a.md", "b.md", "c.md"):
        write(root / name, name.encode())
    wqm_watch(db, "w1", root, "_notes")
    base = os.path.realpath(root)
    with Store.open(str(db)) as store:
        assert not store.layout.queue_triggers
        assert scan(store).ingest == 3
        write(root / "a.md", b"a, changed", OLD_NS + 9)
        (root / "b.md").unlink()
        write(root / "d.md", b"d")
        rep = scan(store)
        assert (rep.ingest, rep.update, rep.delete, rep.written) == (1, 1, 1, 2)
        got = rows(store)
    assert {p: r["operation"] for p, r in got.items()} == {
        f"{base}/a.md": "ingest", f"{base}/c.md": "ingest", f"{base}/d.md": "ingest"}
    assert got[f"{base}/a.md"]["metadata"]["content_hash"] == h(b"a.md")  # not rewritten


def test_rows_of_others_stay_as_they_are(twin, wqm_db, root):
    """Rows other programs enqueued (other paths, or paths wqscan has no change for) are
    left byte for byte; a scan that finds a change for one of them coalesces into it."""
    write(root / "a.md", b"alpha")
    write(root / "b.md", b"bravo")
    wid_root = os.path.realpath(root)
    wqm_watch(wqm_db, "w1", root, "_notes")
    with Store.open(str(wqm_db)) as store:
        assert scan(store).ingest == 2
    consumer = WqmConsumer(wqm_db)
    consumer.drain()
    consumer.conn.execute(
        "INSERT INTO ingestion_queue (file_absolute_path, collection_name, operation, priority, "
        "queued_timestamp) VALUES ('/elsewhere/x.pdf', '_lib', 'ingest', 9, ?), (?, '_notes', "
        "'update', 4, ?)", (OLD_THEIRS, f"{wid_root}/b.md", OLD_THEIRS))
    consumer.close()
    before = rows(wqm_db)
    write(root / "a.md", b"alpha 2", OLD_NS + 5)
    with Store.open(str(wqm_db)) as store:
        rep = scan(store)
        assert (rep.update, rep.delete, rep.written) == (1, 0, 1)
        after = rows(store)
    assert after["/elsewhere/x.pdf"] == before["/elsewhere/x.pdf"]
    assert after[f"{wid_root}/b.md"] == before[f"{wid_root}/b.md"]
    assert after[f"{wid_root}/a.md"]["operation"] == "update"


def test_moves_deletes_and_consumer_view(twin, wqm_db, root):
    """A rename is a delete plus an ingest that carries moved_from; a delete carries the last
    hash at delete priority; the consumer's view follows the tree."""
    write(root / "keep.md", b"keep")
    write(root / "old.md", b"moving content")
    write(root / "gone.md", b"gone")
    wqm_watch(wqm_db, "w1", root, "_notes")
    base = os.path.realpath(root)
    consumer = WqmConsumer(wqm_db)
    with Store.open(str(wqm_db)) as store:
        scan(store)
        consumer.drain()
        os.rename(root / "old.md", root / "new.md")
        (root / "gone.md").unlink()
        rep = scan(store)
        assert (rep.ingest, rep.delete) == (1, 2), rep.reason
        got = rows(store)
    assert got[f"{base}/new.md"]["metadata"]["moved_from"] == f"{base}/old.md"
    gone = got[f"{base}/gone.md"]
    assert (gone["operation"], gone["priority"]) == ("delete", 8)
    assert gone["metadata"]["content_hash"] == h(b"gone")
    assert consumer.drain() == 3
    assert consumer.view == tree_hashes(root)
    consumer.close()


def test_a_move_whose_ingest_was_committed_before_its_delete_came(twin, wqm_db, root,
                                                                  monkeypatch):
    """With 10 operations per transaction, the ingests of `mv alpha Alpha` are committed
    before their deletes are met; each delete then adds moved_from to its waiting row."""
    monkeypatch.setattr(batches, "CHUNK_CHANGES", 10)
    for i in range(30):
        write(root / "alpha" / f"d{i // 5}" / f"f{i:02}.txt", f"file {i}")
    wqm_watch(wqm_db, "w1", root, "_notes")
    with Store.open(str(wqm_db)) as store:
        scan(store)
        consumer = WqmConsumer(wqm_db)
        consumer.drain()
        consumer.close()
        os.rename(root / "alpha", root / "Alpha")
        rep = scan(store)
        assert (rep.ingest, rep.delete) == (30, 30), rep.reason
        got = rows(store)
    moved = {path: row["metadata"].get("moved_from") for path, row in got.items()
             if row["operation"] == "ingest"}
    assert len(moved) == 30
    assert all(was == path.replace("/Alpha/", "/alpha/") for path, was in moved.items())


def topic_repo(repo: Path, more: bool = False) -> Path:
    """A repository of 12 documents on main, and a branch `topic` that changes 4 of them
    (and with `more`, deletes one and adds one); main checked out."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(12):
        write(repo / f"doc{i}.md", f"main {i}")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "main")
    git(repo, "checkout", "-q", "-b", "topic")
    for i in range(0, 12, 3):
        write(repo / f"doc{i}.md", f"topic {i} changed", OLD_NS + 7)
    if more:
        (repo / "doc1.md").unlink()
        write(repo / "extra.md", "topic only")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "topic")
    git(repo, "checkout", "-q", "main")
    return repo


@contextmanager
def on_topic(db: Path, repo: Path) -> Iterator[tuple[Store, WqmConsumer]]:
    """`repo` (main checked out, 12 files) watched in that project's layout, scanned and
    drained by its consumer, then `topic` checked out; yields the open store and the
    consumer (closed at the end)."""
    wqm_watch(db, "repo", repo, "_code", ignores=[".git"])
    consumer = WqmConsumer(db)
    try:
        with Store.open(str(db)) as store:
            assert scan(store).ingest == 12
            consumer.drain()
            git(repo, "checkout", "-q", "topic")
            yield store, consumer
    finally:
        consumer.close()


def test_checkout_reconciled_and_consumed(twin, wqm_db, tmp_path):
    """A repository watched in that project's layout: after `git checkout` of another
    branch, a reconcile and a drain leave the consumer's view equal to the work tree, with
    the new branch on what was queued."""
    repo = topic_repo(tmp_path / "repo", more=True)
    with on_topic(wqm_db, repo) as (store, consumer):
        rep = scan(store)
        assert (rep.ingest, rep.update, rep.delete) == (1, 4, 1), rep.reason
        assert {r["branch"] for r in rows(store).values()
                if r["operation"] != "delete"} == {"topic"}
        consumer.drain()
        assert consumer.view == {p: d for p, d in tree_hashes(repo).items()
                                 if "/.git/" not in p}


@pytest.mark.parametrize("metadata", [True, False], ids=["metadata", "no-metadata"])
def test_checkout_there_and_back(twin, tmp_path, metadata):
    """`git checkout topic; reconcile; git checkout main; reconcile` with the consumer on
    main: that project's consumer indexes each file as it is when it takes the row, so the
    previous_hash wqscan recorded (with or without a metadata column) is not known to be
    what it holds, and the rows stay: it reads those files again and its view is the
    tree's (docs/workspace-qdrant-mcp.md)."""
    db = tmp_path / "state.db"
    build_wqm_db(db, metadata=metadata)
    repo = topic_repo(tmp_path / "repo")
    for i in range(0, 12, 3):
        os.utime(repo / f"doc{i}.md", ns=(OLD_NS + 9, OLD_NS + 9))
    with on_topic(db, repo) as (store, consumer):
        assert scan(store).update == 4
        git(repo, "checkout", "-q", "main")
        for i in range(0, 12, 3):
            os.utime(repo / f"doc{i}.md", ns=(OLD_NS + 11, OLD_NS + 11))
        assert scan(store).update == 4
        left = rows(store)
        assert len(left) == 4, left
        consumer.drain()
        assert consumer.view == {p: d for p, d in tree_hashes(repo).items()
                                 if "/.git/" not in p}


def test_queue_schema_layout_without_metadata(twin, tmp_path, root):
    """The queue schema's own ingestion_queue (no metadata column, errors linked to
    messages by a foreign key) is written without metadata and consumed alike."""
    db = tmp_path / "state.db"
    build_wqm_db(db, metadata=False)
    write(root / "a.md", b"alpha")
    wqm_watch(db, "w1", root, "_notes")
    with Store.open(str(db)) as store:
        assert "metadata" not in store.layout.queue_columns
        assert scan(store).ingest == 1
    consumer = WqmConsumer(db)
    (row,) = consumer.take(10)
    consumer.error(row["file_absolute_path"], "parser crashed")
    assert consumer.drain() == 1 and consumer.errors == 1
    assert consumer.view == tree_hashes(root)
    consumer.close()


def test_coalescing_in_the_layout_without_metadata(twin, tmp_path, root):
    """Rows still waiting when the next scan comes, in the table without a metadata
    column: a changed file's ingest stays one ingest, a deleted file's ingest goes (never
    consumed), a new file is queued beside them; a file deleted and back before its
    delete was read leaves one update."""
    db = tmp_path / "state.db"
    build_wqm_db(db, metadata=False)
    write(root / "a.md", b"alpha")
    write(root / "b.md", b"beta")
    wqm_watch(db, "w1", root, "_notes")
    with Store.open(str(db)) as store:
        assert scan(store).ingest == 2
        write(root / "a.md", b"alpha, changed", OLD_NS + 7)
        (root / "b.md").unlink()
        write(root / "c.md", b"gamma")
        rep = scan(store)
        assert (rep.ingest, rep.update, rep.delete) == (1, 1, 1), rep.reason
        got = {os.path.basename(p): r["operation"] for p, r in rows(store).items()}
        assert got == {"a.md": "ingest", "c.md": "ingest"}
        consumer = WqmConsumer(db)
        assert consumer.drain() == 2
        consumer.close()
        (root / "c.md").unlink()
        assert scan(store).delete == 1
        write(root / "c.md", b"gamma, again", OLD_NS + 9)  # back before the delete was read
        assert scan(store).ingest == 1
        got = {os.path.basename(p): r["operation"] for p, r in rows(store).items()}
    assert got == {"c.md": "update"}


# -- wqscan's own watches in that layout ---------------------------------------------------

def test_added_watch_is_theirs_to_read(wqm_db, root, capsys):
    """`wqscan add` writes a row that project's state manager can list: its time format,
    recursive_depth in its terms (-1 unlimited, N-1 for --max-depth N); wqscan-only
    settings go to wq_watch_settings, not into new columns."""
    columns = [r[1] for r in apsw.Connection(str(wqm_db)).execute(
        "PRAGMA table_info(watch_folders)")]
    assert cli.main(["--db", str(wqm_db), "add", str(root), "--collection", "_n", "--id", "a",
                     "--interval", "30", "--priority", "*.md=7"]) == 0
    assert cli.main(["--db", str(wqm_db), "add", str(root), "--collection", "_n", "--id", "b",
                     "--max-depth", "3", "--no-recursive", "--settle", "0"]) == 2  # same tree
    assert cli.main(["--db", str(wqm_db), "add", str(root / ".."), "--collection", "_other"]) \
        == 2  # overlaps a watch of another collection: one row per path
    err = capsys.readouterr().err
    assert "one collection only" in err
    conn = apsw.Connection(str(wqm_db))
    assert [r[1] for r in conn.execute("PRAGMA table_info(watch_folders)")] == columns
    cur = conn.execute("SELECT * FROM watch_folders WHERE watch_id = 'a'")
    row = dict(zip([d[0] for d in cur.get_description()], cur.fetchone()))
    for col in ("created_at", "updated_at"):
        assert THEIR_TIME.match(row[col]) and py310_fromisoformat(row[col])
    assert (row["recursive_depth"], row["debounce_seconds"], row["owner"]) == (-1, 2.0, "ops")
    assert json.loads(row["patterns"]) == [] and json.loads(row["ignore_patterns"])
    settings = json.loads(conn.execute("SELECT settings FROM wq_watch_settings WHERE "
                                       "watch_id = 'a'").fetchall()[0][0])
    assert settings["poll_interval_seconds"] == 30
    assert json.loads(settings["priority_rules"]) == [["*.md", 7]]
    conn.close()
    with Store.open(str(wqm_db)) as store:
        w = get_watch(store, "a")
        assert (w.interval, w.priority_rules, w.max_depth) == (30, (("*.md", 7),),
                                                                           None)


def test_max_depth_round_trip(wqm_db, tmp_path):
    """--max-depth N is stored as that project's depth N-1 and read back as N."""
    (tmp_path / "d").mkdir()
    with Store.open(str(wqm_db)) as store:
        w = add_watch(store, str(tmp_path / "d"), "_n", max_depth=3)
        assert w.max_depth == 3
        assert store.conn.execute("SELECT recursive_depth FROM watch_folders").fetchall() == \
            [(2,)]


# -- the consumer side -----------------------------------------------------------------------

def test_queue_list_and_stats_filters_in_that_layout(twin, wqm_db, tmp_path, capsys):
    """Every row of that layout is pending and due: `queue list` by status, collection and
    limit, in its consumer's order (priority, then queue time), and `queue stats` with no
    backoff and no leases."""
    db = str(wqm_db)
    for name, collection in (("notes", "_notes"), ("code", "_code")):
        write(tmp_path / name / "a.md", b"alpha")
        wqm_watch(wqm_db, name, tmp_path / name, collection)
    assert cli.main(["--db", db, "reconcile", "-q"]) == 0
    capsys.readouterr()

    def listed(*argv: str, left_out: int = 0) -> list[str]:
        assert cli.main(["--db", db, "queue", "list", "--json", *argv]) == 0
        out, err = capsys.readouterr()
        shown = [r["collection_name"] for r in json.loads(out)]
        assert err == (f"wqscan: {len(shown)} rows shown, {left_out} more left out (--limit N, "
                       "or --limit 0 for all)\n" if left_out else ""), argv
        return shown

    both = listed()
    assert sorted(both) == ["_code", "_notes"]
    assert listed("--status", "pending") == listed("--limit", "0") == both
    assert listed("--limit", "1", left_out=1) == both[:1]
    assert listed("--status", "pending", "--limit", "1", left_out=1) == both[:1]
    assert listed("--status", "failed") == listed("--status", "in_progress") == []
    assert listed("--status", "failed", "--limit", "0") == []
    assert listed("--collection", "_code") == ["_code"]
    assert listed("--collection", "_code", "--limit", "1") == ["_code"]
    assert listed("--collection", "_code", "--limit", "0") == ["_code"]
    assert listed("--collection", "_other") == []
    assert cli.main(["--db", db, "queue", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    oldest = min(r["queued_timestamp"] for r in rows(wqm_db).values())
    assert (stats["due"], stats["scheduled_later"], stats["expired_leases"],
            stats["oldest_pending"]) == (2, 0, 0, oldest)


def test_queue_commands_in_that_layout(twin, wqm_db, root, capsys):
    """`queue list` and `queue stats` work; the claiming commands and QueueClient refuse
    with one line saying that project's daemon consumes this layout; `status`, `show` and
    `--version` name the layout."""
    write(root / "a.md", b"alpha")
    db = str(wqm_db)
    wqm_watch(wqm_db, "w1", root, "_notes")
    assert cli.main(["--db", db, "reconcile", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["--db", db, "queue", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["file_absolute_path"] == os.path.realpath(root / "a.md")
    assert cli.main(["--db", db, "queue", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["by_operation"]["pending"] == {"ingest": 1} and stats["due"] == 1
    for argv in (["claim", "1"], ["complete", "x"], ["fail", "x", "--error", "e"],
                 ["retry"], ["purge", "--status", "done"]):
        assert cli.main(["--db", db, "queue", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1, err
        assert "workspace-qdrant-mcp layout" in err and "daemon" in err
    with pytest.raises(UsageError, match=re.escape(f"database {db} has the "
                                                   "workspace-qdrant-mcp layout, which")):
        QueueClient(db)
    assert cli.main(["--db", db, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == WQM
    assert cli.main(["--db", db, "show", "w1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == WQM
    assert cli.main(["--db", db, "--version"]) == 0
    assert f"database: sqlite {db} (workspace-qdrant-mcp layout)" in capsys.readouterr().out
    assert len(rows(wqm_db)) == 1


def test_init_creates_that_layout(twin, tmp_path, root, capsys):
    """`init --layout workspace-qdrant-mcp` creates that project's queue-side tables, indexes,
    views and trigger (no application_id, no user_version); its consumer then drains what
    wqscan queued; the layout cannot be switched afterwards."""
    db = str(tmp_path / "new.db")
    assert cli.main(["--db", db, "init", "--layout", "workspace-qdrant-mcp"]) == 0
    assert "workspace-qdrant-mcp layout" in capsys.readouterr().out
    conn = apsw.Connection(db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"ingestion_queue", "watch_folders", "messages", "collection_metadata",
            "queue_statistics", "error_summary", "collection_queue_summary",
            "update_collection_metadata_timestamp", "idx_ingestion_queue_priority_time",
            "idx_watch_folders_path"} <= names
    assert (conn.pragma("application_id"), conn.pragma("user_version")) == (0, 0)
    conn.close()
    assert cli.main(["--db", db, "init", "--layout", "workspace-qdrant-mcp"]) == 0
    assert cli.main(["--db", db, "init", "--layout", "wqscan"]) == 2
    assert "applies to a new database only" in capsys.readouterr().err
    write(root / "a.md", b"alpha")
    assert cli.main(["--db", db, "add", str(root), "--collection", "_n", "--settle", "0"]) == 0
    assert cli.main(["--db", db, "reconcile", "-q"]) == 0
    consumer = WqmConsumer(db)
    consumer.conn.execute("INSERT INTO collection_metadata (collection_name, collection_type) "
                          "VALUES ('_n', 'watched-dynamic')")
    assert consumer.drain() == 1 and consumer.view == tree_hashes(root)
    for view in ("queue_statistics", "error_summary", "collection_queue_summary"):
        consumer.conn.execute(f"SELECT * FROM {view}").fetchall()
    consumer.close()
