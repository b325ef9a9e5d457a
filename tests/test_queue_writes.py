"""How scans write `ingestion_queue`: coalescing, row metadata and priorities
(docs/consuming.md), moves, other statuses, auto_ingest = 0 and remove --emit-deletes; each
test that writes rows on an SQLite file and on a PostgreSQL schema (fixture `dbstore`)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import apsw
import pytest
from helpers.db import COALESCING, drain, ops, queue, scan, scanned, watch
from helpers.trees import OLD_NS, h, write

from wqscan.queue.writes import coalesce, merged, merged_metadata
from wqscan.reconcile import WatchReport, batches
from wqscan.store import Store
from wqscan.watches import remove_watch

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T1 = OLD_NS + 1_000_000_000  # later fixed mtimes, still far older than any settle window
T2 = OLD_NS + 2_000_000_000
OLD_TS = "2020-01-02T03:04:05.678Z"


def real(root) -> str:
    return os.path.realpath(str(root))


def age_pending(store, path: str) -> None:
    """Backdate the pending row's queued_timestamp so that a re-insert cannot pass for a merge."""
    with store.write():
        for row in store.queue.rows(status="pending"):
            if row["file_absolute_path"] == path:
                store.queue.set_fields(row["queue_id"], {"queued_timestamp": OLD_TS})


def only_row(store, status: str | None = "pending") -> dict:
    rows = queue(store, status)
    assert len(rows) == 1, rows
    return rows[0]


def held(store, root: Path) -> tuple[Path, str]:
    """keep.txt and a.txt (v1) watched, scanned and acknowledged: the consumer holds both.
    Returns (a.txt, the watch id)."""
    write(root / "keep.txt", b"keep")
    f = write(root / "a.txt", b"v1")
    return f, scanned(store, root)


def coalesced(store, wid: str, pending_op: str, change) -> tuple[dict, WatchReport, dict]:
    """Backdate the one pending row (of `pending_op`), make `change`, scan: returns (that row,
    the scan's report, the one row left), checked to keep the pending row's id and time."""
    first = only_row(store)
    assert first["operation"] == pending_op
    age_pending(store, first["file_absolute_path"])
    change()
    rep = scan(store, wid)
    assert rep.ok
    row = only_row(store, None)
    assert row["queue_id"] == first["queue_id"] and row["queued_timestamp"] == OLD_TS
    return first, rep, row


def foreign_insert(database, store, sql: str, args: tuple) -> None:
    """A statement of another program on the queue (`?` placeholders): in the store's
    transaction on SQLite, on a connection of its own (psycopg) on PostgreSQL."""
    if database.kind == "sqlite":
        with store.write():
            store.conn.execute(sql, args)
        return
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(database.target.db, autocommit=True, connect_timeout=10) as conn:
        conn.execute(pgsql.SQL("SET search_path TO {}").format(
            pgsql.Identifier(database.target.pg_schema)))
        conn.execute(sql.replace("?", "%s"), args)


def set_rules(store, wid: str, rules: list) -> None:
    with store.write():
        store.update_watch(wid, {"priority_rules": json.dumps(rules)})


# -- coalescing, produced by real scans ----------------------------------------------

def test_ingest_then_update_stays_one_ingest(twin, dbstore, root):
    """A pending ingest followed by a modification stays one ingest row with the new content,
    its metadata compact JSON as every row's."""
    f = write(root / "a.txt", b"v1")
    wid = watch(dbstore, root)
    scan(dbstore, wid)
    _, rep, row = coalesced(dbstore, wid, "ingest", lambda: write(f, b"version 2", T1))
    assert rep.update == 1
    assert row["operation"] == "ingest"
    assert row["metadata"]["content_hash"] == h(b"version 2")
    assert row["metadata"]["size"] == 9 and row["metadata"]["mtime_ns"] == T1
    assert "previous_hash" not in row["metadata"]
    (raw,) = [r["metadata"] for r in dbstore.queue.rows("pending", None)]
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"))


def test_ingest_then_delete_removes_row(twin, dbstore, root):
    """A pending ingest followed by the file's deletion leaves no row at all."""
    write(root / "keep.txt", b"keep")
    f = write(root / "a.txt", b"v1")
    wid = watch(dbstore, root)
    scan(dbstore, wid)
    assert ops(dbstore) == {"a.txt": "ingest", "keep.txt": "ingest"}
    f.unlink()
    rep = scan(dbstore, wid)
    assert rep.ok and rep.delete == 1
    assert ops(dbstore) == {"keep.txt": "ingest"}
    assert [r["metadata"]["relative_path"] for r in queue(dbstore, None)] == ["keep.txt"]


def test_a_delete_meets_its_waiting_ingest_beside_an_insert_trigger(twin, tmp_path, root):
    """A trigger another program hangs on wqscan's queue (each insert logged in its audit
    table) adds to SQLite's count of changes, so wqscan does not count rows by it: in a
    batch whose new file goes in (and is logged) while a delete meets its file's waiting
    ingest, that ingest is still cancelled; a batch that meets none goes in whole."""
    db = tmp_path / "wq.db"
    for name in ("a.md", "b.md"):
        write(root / name, name.encode())
    with Store.open(str(db)) as store:
        wid = watch(store, root)
        assert scan(store, wid).ingest == 2
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE audit (path TEXT); CREATE TRIGGER queue_logged AFTER INSERT ON "
                 "ingestion_queue BEGIN INSERT INTO audit VALUES (NEW.file_absolute_path); END")
    conn.close()
    (root / "b.md").unlink()
    write(root / "d.md", b"d")
    with Store.open(str(db)) as store:
        assert store.layout.queue_triggers
        rep = scan(store, wid)
        assert (rep.ingest, rep.delete, rep.written) == (1, 1, 2)
        assert sorted(os.path.basename(r["file_absolute_path"]) for r in queue(store)) == \
            ["a.md", "d.md"]
        write(root / "e.md", b"e")  # a batch that meets no waiting row: all of it goes in
        rep = scan(store, wid)
        assert (rep.ok, rep.ingest, rep.written) == (True, 1, 1), rep.reason


def test_update_then_update_keeps_previous_hash(twin, dbstore, root):
    """Two updates collapse into one whose previous_hash is the hash the consumer last saw."""
    f = write(root / "a.txt", b"v1")
    wid = scanned(dbstore, root)
    write(f, b"v2 longer", T1)
    scan(dbstore, wid)
    first, rep, row = coalesced(dbstore, wid, "update", lambda: write(f, b"v3 even longer", T2))
    assert first["metadata"]["previous_hash"] == h(b"v1")
    assert rep.update == 1
    assert row["operation"] == "update"
    assert row["metadata"]["previous_hash"] == h(b"v1")
    assert row["metadata"]["content_hash"] == h(b"v3 even longer")


def test_update_then_delete_becomes_delete(twin, dbstore, root):
    """A pending update followed by deletion becomes a delete carrying the last known hash,
    and keeping as previous_hash the hash the consumer holds."""
    f, wid = held(dbstore, root)
    write(f, b"v2 longer", T1)
    scan(dbstore, wid)
    _, rep, row = coalesced(dbstore, wid, "update", f.unlink)
    assert rep.delete == 1
    assert row["operation"] == "delete"
    assert row["priority"] == 8
    assert row["metadata"]["content_hash"] == h(b"v2 longer")
    assert row["metadata"]["previous_hash"] == h(b"v1")


def test_delete_then_recreate_becomes_update(twin, dbstore, root):
    """A pending delete followed by re-creation becomes an update from the deleted content."""
    f, wid = held(dbstore, root)
    f.unlink()
    scan(dbstore, wid)
    _, rep, row = coalesced(dbstore, wid, "delete", lambda: write(f, b"v2 new content", T1))
    assert rep.ingest == 1
    assert row["operation"] == "update"
    assert row["metadata"]["previous_hash"] == h(b"v1")
    assert row["metadata"]["content_hash"] == h(b"v2 new content")
    assert "moved_from" not in row["metadata"]


@pytest.mark.parametrize("pending, change, back_at, counted", [
    ("update", lambda f: write(f, b"v2 longer", T1), T2, "update"),
    ("delete", lambda f: f.unlink(), T1, "ingest"),
], ids=["update", "delete"])
def test_back_to_what_the_consumer_has_removes_the_row(twin, dbstore, root, pending, change,
                                                       back_at, counted):
    """v1 (acknowledged), then a pending update to v2 or a pending delete, then v1 again:
    the merged row would bring the file back to what the consumer has, so it goes away."""
    f, wid = held(dbstore, root)
    change(f)
    scan(dbstore, wid)
    assert ops(dbstore) == {"a.txt": pending}
    write(f, b"v1", back_at)
    rep = scan(dbstore, wid)
    assert rep.ok and getattr(rep, counted) == 1
    assert queue(dbstore, None) == []


def test_foreign_pending_ingest_takes_new_row(twin, database, dbstore, root):
    """A foreign pending ingest met by a scan's ingest keeps its id and takes the new metadata,
    tenant and branch."""
    write(root / "a.txt", b"v1")
    wid = watch(dbstore, root)
    path = real(root) + "/a.txt"
    foreign_insert(
        database, dbstore,
        "INSERT INTO ingestion_queue (file_absolute_path, collection_name, tenant_id, "
        "branch, operation, priority, retry_from, queued_timestamp) "
        "VALUES (?,?,?,?,?,?,?,?)", (path, "c", "t-old", "b-old", "ingest", 3, None, OLD_TS))
    foreign = only_row(dbstore)
    scan(dbstore, wid)
    row = only_row(dbstore, None)
    assert row["operation"] == "ingest"
    assert row["queue_id"] == foreign["queue_id"] and row["queued_timestamp"] == OLD_TS
    assert row["priority"] == 5
    assert row["tenant_id"].startswith("path_") and row["branch"] == "main"
    assert row["watch_id"] == wid
    assert row["metadata"]["content_hash"] == h(b"v1")


@pytest.mark.parametrize("old,new", [(9, 1), (1, 9)], ids=["old-higher", "new-higher"])
def test_merged_priority_is_the_higher_one(twin, dbstore, root, old, new):
    """A merged row keeps the pending priority when the new one is lower, and takes the new
    one when it is higher."""
    f = write(root / "a.md", b"v1")
    wid = watch(dbstore, root, priority_rules=[("*.md", old)])
    scan(dbstore, wid)
    assert only_row(dbstore)["priority"] == old
    set_rules(dbstore, wid, [["*.md", new]])
    write(f, b"v2 longer", T1)
    scan(dbstore, wid)
    row = only_row(dbstore)
    assert (row["operation"], row["priority"]) == ("ingest", 9)


def test_delete_then_recreate_keeps_delete_priority(twin, dbstore, root):
    """Delete (8) followed by an ingest of priority 2 merges into an update of priority 8."""
    write(root / "keep.txt", b"keep")
    f = write(root / "a.md", b"v1")
    wid = scanned(dbstore, root, priority_rules=[("*.md", 2)])
    f.unlink()
    scan(dbstore, wid)
    write(f, b"v2 longer", T1)
    scan(dbstore, wid)
    row = only_row(dbstore)
    assert (row["operation"], row["priority"]) == ("update", 8)


@pytest.mark.parametrize("pending,new,result", COALESCING)
def test_coalesce_table(pending, new, result):
    """wqscan.queue.coalesce follows the coalescing table, 'any other -> x' included."""
    assert coalesce(pending, new) == result


def test_merged_metadata_delete_then_update():
    """delete + update: the update's previous_hash is the pending delete's content_hash."""
    pending = {"content_hash": "aa" * 16, "relative_path": "a"}
    new = {"content_hash": "bb" * 16, "previous_hash": "cc" * 16, "relative_path": "a", "x": 1}
    out = merged_metadata("delete", pending, "update", new)
    assert out == {**new, "previous_hash": "aa" * 16}
    assert new["previous_hash"] == "cc" * 16  # inputs untouched


@pytest.mark.parametrize("pending_op,pending,new_op,new,result", [
    ("update", {"previous_hash": "aa", "content_hash": "bb"}, "update",
     {"previous_hash": "bb", "content_hash": "aa"}, None),
    ("delete", {"content_hash": "aa"}, "ingest", {"content_hash": "aa"}, None),
    ("update", {"previous_hash": "aa", "content_hash": "bb"}, "update",
     {"previous_hash": "bb", "content_hash": "cc"}, "update"),
    ("delete", {"content_hash": "aa"}, "ingest", {"content_hash": "cc"}, "update"),
    ("update", {"content_hash": "bb"}, "update", {"previous_hash": "bb", "content_hash": "aa"},
     "update"),  # a row another program wrote, without previous_hash: kept
])
def test_merged_back_to_what_the_consumer_saw(pending_op, pending, new_op, new, result):
    """A merged update whose content hash is the hash the consumer last saw is no work;
    where previous_hash is only what wqscan saw (a consumer that reads files as they are),
    the row stays."""
    assert merged(pending_op, pending, new_op, new)[0] == result
    assert merged(pending_op, pending, new_op, new, seen_is_consumers=False)[0] == \
        coalesce(pending_op, new_op)


@pytest.mark.parametrize("pending_op,new_op", [
    ("ingest", "ingest"), ("update", "ingest"), ("delete", "delete")])
def test_merged_metadata_other_pairs_take_new(pending_op, new_op):
    """'any other -> x' pairs that do not give an update take the new metadata as is."""
    pending = {"content_hash": "aa" * 16, "previous_hash": "dd" * 16, "old": True}
    new = {"content_hash": "bb" * 16, "size": 3}
    result = coalesce(pending_op, new_op)
    assert merged_metadata(pending_op, pending, result, new) == new


def test_merged_metadata_ingest_then_update_drops_previous_hash():
    """ingest + update stays an ingest, which carries no previous_hash."""
    new = {"content_hash": "bb" * 16, "previous_hash": "aa" * 16}
    out = merged_metadata("ingest", {"content_hash": "aa" * 16}, "ingest", new)
    assert out == {"content_hash": "bb" * 16}


def test_merged_metadata_update_over_an_update_without_previous_hash():
    """A waiting update another program wrote without previous_hash, then wqscan's update:
    the row takes the previous_hash wqscan saw, the best it knows of what the consumer
    has."""
    new = {"content_hash": "cc" * 16, "previous_hash": "bb" * 16}
    assert merged_metadata("update", {"content_hash": "bb" * 16}, "update", new) == new


# -- row metadata --------------------------------------------------------------------

def test_row_columns_and_metadata(twin, dbstore, root):
    """Ingest, update and delete rows carry the columns and metadata docs/consuming.md lists."""
    body = b"hello world"
    f = write(root / "sub" / "a.txt", body)
    write(root / "keep.txt", b"keep")
    wid = watch(dbstore, root, metadata={"owner": "docs-team", "level": 3})
    base = real(root)
    tenant = "path_" + hashlib.md5(base.encode()).hexdigest()[:16]

    def check(row, op, content, mtime):
        before_after = row["metadata"]["detected_at"]
        assert ISO_MS_Z.match(before_after), before_after
        assert lo <= before_after <= hi
        assert row["file_absolute_path"] == base + "/sub/a.txt"
        assert row["collection_name"] == "c"
        assert row["operation"] == op
        assert row["watch_id"] == wid
        assert (row["tenant_id"], row["branch"]) == (tenant, "main")
        m = row["metadata"]
        assert m["watch_id"] == wid and m["relative_path"] == "sub/a.txt"
        assert m["size"] == len(content) and m["mtime_ns"] == mtime
        assert re.fullmatch(r"[0-9a-f]{32}", m["content_hash"])
        assert m["content_hash"] == h(content)
        assert m["source"] == "wqscan"
        assert m["owner"] == "docs-team" and m["level"] == 3
        return m

    def now():
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    lo = now()
    scan(dbstore, wid)
    hi = now()
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    m = check(rows["sub/a.txt"], "ingest", body, OLD_NS)
    assert "previous_hash" not in m and "moved_from" not in m
    for raw in (r["metadata"] for r in dbstore.queue.rows("pending", None)):
        assert raw == json.dumps(json.loads(raw), separators=(",", ":"))  # compact
    drain(dbstore)

    body2 = b"hello again, world"
    write(f, body2, T1)
    lo = now()
    scan(dbstore, wid)
    hi = now()
    m = check(only_row(dbstore), "update", body2, T1)
    assert m["previous_hash"] == h(body)
    drain(dbstore)

    f.unlink()
    lo = now()
    scan(dbstore, wid)
    hi = now()
    m = check(only_row(dbstore), "delete", body2, T1)
    assert "previous_hash" not in m


@pytest.mark.parametrize("name", ["dataX", "data X", "data "])
def test_rows_name_files_under_roots_of_any_name(twin, dbstore, tmp_path, name):
    """The root's own name, whatever characters end it, is the head of every path queued."""
    root = tmp_path / name
    write(root / "a.txt", b"a")
    watch(dbstore, root)
    scan(dbstore)
    assert [r["file_absolute_path"] for r in queue(dbstore)] == [real(root) + "/a.txt"]


# -- priorities --------------------------------------------------------------------------

def test_priorities(twin, dbstore, root):
    """delete 8; ingest/update 5 by default; the first matching priority rule wins."""
    files = {"a.md": 7, "docs/b.md": 7, "docs/c.txt": 2, "d.txt": 5, "docs/sub/e.py": 2}
    for i, rel in enumerate(files):
        write(root / rel, f"content {i}")
    write(root / "zz-keep.txt", b"keep")
    wid = watch(dbstore, root, priority_rules=[("*.md", 7), ("docs/**", 2)])
    scan(dbstore, wid)
    got = {r["metadata"]["relative_path"]: (r["operation"], r["priority"]) for r in queue(dbstore)}
    assert got == {**{k: ("ingest", v) for k, v in files.items()}, "zz-keep.txt": ("ingest", 5)}
    drain(dbstore)
    for i, rel in enumerate(files):
        write(root / rel, f"changed content {i}", T1)
    scan(dbstore, wid)
    got = {r["metadata"]["relative_path"]: (r["operation"], r["priority"]) for r in queue(dbstore)}
    assert got == {k: ("update", v) for k, v in files.items()}
    drain(dbstore)
    for rel in files:
        (root / rel).unlink()
    scan(dbstore, wid)
    got = {r["metadata"]["relative_path"]: (r["operation"], r["priority"]) for r in queue(dbstore)}
    assert got == {k: ("delete", 8) for k in files}


# -- moves -------------------------------------------------------------------------------

@pytest.mark.parametrize("old,new", [
    ("b.txt", "a.txt"),  # new sorts before old
    ("a.txt", "c.txt"),  # new sorts after old
    ("d1/f.txt", "d2/f.txt"),  # across directories, old first
    ("d2/f.txt", "d1/g.txt"),  # across directories, new first
    ("top.txt", "sub/top.txt"),
    ("sub/deep.txt", "deep.txt"),
])
def test_rename_is_ingest_with_moved_from(twin, dbstore, root, old, new):
    """A rename gives an ingest with moved_from = old absolute path and a delete of the old."""
    write(root / old, b"moving content")
    write(root / "other.txt", b"other content")
    write(root / "d1" / "x.txt", b"x1")
    write(root / "d2" / "x.txt", b"x2")
    write(root / "sub" / "x.txt", b"x3")
    wid = scanned(dbstore, root, check_stat="full")
    os.rename(root / old, root / new)
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete, rep.update) == (1, 1, 0)
    base = real(root)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert {k: r["operation"] for k, r in rows.items()} == {new: "ingest", old: "delete"}
    assert rows[new]["metadata"]["moved_from"] == base + "/" + old
    assert rows[new]["file_absolute_path"] == base + "/" + new
    assert rows[new]["metadata"]["content_hash"] == h(b"moving content")
    assert rows[old]["metadata"]["content_hash"] == h(b"moving content")
    assert "moved_from" not in rows[old]["metadata"]


@pytest.mark.parametrize("link", ["m-link", "0-link", "zz-link"])
def test_moved_from_names_the_file_not_a_link_to_it(twin, dbstore, root, link):
    """With --follow-symlinks, a link to a file is an entry of its own identity (the link's
    inode, not its target's): renaming the file beside it (the link left dangling) pairs
    the ingest with the file's delete, wherever the link sorts; renaming the link pairs
    with the link."""
    write(root / "a.txt", b"linked content")
    os.symlink("a.txt", root / link)
    wid = scanned(dbstore, root, follow_symlinks=True)
    os.rename(root / "a.txt", root / "z.txt")
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete) == (1, 2), rep.warnings
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert rows["z.txt"]["metadata"]["moved_from"] == real(root) + "/a.txt"
    drain(dbstore)
    (root / link).unlink()
    os.symlink("z.txt", root / link)  # the link leads to the file again
    assert scan(dbstore, wid).ingest == 1
    drain(dbstore)
    os.rename(root / link, root / "renamed-link")
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete, rep.update) == (1, 1, 0)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert rows["renamed-link"]["metadata"]["moved_from"] == real(root) + "/" + link
    drain(dbstore)
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete, rep.update) == (0, 0, 0)


def test_a_file_with_two_names_moved_and_removed_pairs_once(twin, dbstore, root):
    """A file with two names (hard links) in two directories: one name moved to a third
    directory, the other removed. The scan meets the directories in order: the new name
    pairs with the first delete it meets, once; the later delete stays a plain delete."""
    write(root / "a" / "p.txt", b"linked content")
    (root / "z").mkdir()
    os.link(root / "a" / "p.txt", root / "z" / "r.txt")
    wid = scanned(dbstore, root, check_stat="full")
    (root / "m").mkdir()
    os.rename(root / "a" / "p.txt", root / "m" / "c.txt")
    (root / "z" / "r.txt").unlink()
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete, rep.update) == (1, 2, 0)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert {k: r["operation"] for k, r in rows.items()} == {
        "m/c.txt": "ingest", "a/p.txt": "delete", "z/r.txt": "delete"}
    assert rows["m/c.txt"]["metadata"]["moved_from"] == real(root) + "/a/p.txt"


@pytest.mark.parametrize("per_transaction", [5000, 1], ids=["one-batch", "batch-a-change"])
def test_a_move_onto_a_path_whose_delete_waits_is_an_update_with_moved_from(
        twin, dbstore, root, monkeypatch, per_transaction):
    """A file moved onto a path whose delete is still waiting: the arrival coalesces with
    that delete into an update, which carries moved_from whether the move's two halves are
    committed together or apart (the arrival, met first, in an earlier transaction)."""
    monkeypatch.setattr(batches, "CHUNK_CHANGES", per_transaction)
    write(root / "a" / "p.txt", b"old p")
    write(root / "a" / "keep.txt", b"keep a")
    write(root / "z" / "q.txt", b"moving content")
    write(root / "z" / "keep.txt", b"keep z")
    wid = scanned(dbstore, root, check_stat="full")
    (root / "a" / "p.txt").unlink()
    assert scan(dbstore, wid).delete == 1
    os.rename(root / "z" / "q.txt", root / "a" / "p.txt")
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.delete) == (1, 1)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert {k: r["operation"] for k, r in rows.items()} == {
        "a/p.txt": "update", "z/q.txt": "delete"}
    meta = rows["a/p.txt"]["metadata"]
    assert meta["moved_from"] == real(root) + "/z/q.txt"
    assert (meta["content_hash"], meta["previous_hash"]) == (h(b"moving content"), h(b"old p"))


@pytest.mark.parametrize("mode,paired", [("minimal", True), ("full", False)])
def test_copy_and_delete_pairs_only_when_minimal(twin, dbstore, root, mode, paired):
    """Copy + delete (new inode, same content) pairs as a move with minimal, not with full."""
    src = write(root / "a.txt", b"copied content")
    write(root / "other.txt", b"other")
    wid = scanned(dbstore, root, check_stat=mode)
    dst = write(root / "b.txt", b"copied content")  # created while a.txt exists: new inode
    assert os.stat(dst).st_ino != os.stat(src).st_ino
    src.unlink()
    scan(dbstore, wid)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert {k: r["operation"] for k, r in rows.items()} == {"b.txt": "ingest", "a.txt": "delete"}
    if paired:
        assert rows["b.txt"]["metadata"]["moved_from"] == real(root) + "/a.txt"
    else:
        assert "moved_from" not in rows["b.txt"]["metadata"]


# -- other statuses ----------------------------------------------------------------------

@pytest.mark.parametrize("status", ["in_progress", "done", "failed"])
def test_rows_in_other_statuses_untouched(twin, dbstore, root, status):
    """A row that is not pending is never changed by a scan; a new pending row appears."""
    f = write(root / "a.txt", b"v1")
    g = write(root / "b.txt", b"b1")
    write(root / "c.txt", b"c1")  # its ingest stays pending: the collection has pending rows
    wid = watch(dbstore, root)
    scan(dbstore, wid)
    with dbstore.write():
        for row in dbstore.queue.rows():
            if not row["file_absolute_path"].endswith("/c.txt"):
                dbstore.queue.set_fields(row["queue_id"], {"status": status})
    before = queue(dbstore, status)
    assert len(before) == 2
    write(f, b"v2 longer", T1)
    g.unlink()
    rep = scan(dbstore, wid)
    assert rep.ok
    assert queue(dbstore, status) == before
    pending = {r["metadata"]["relative_path"]: r for r in queue(dbstore)}
    assert {k: r["operation"] for k, r in pending.items()} == {
        "a.txt": "update", "b.txt": "delete", "c.txt": "ingest"}
    assert pending["a.txt"]["metadata"]["previous_hash"] == h(b"v1")
    assert {r["queue_id"] for r in pending.values()}.isdisjoint(r["queue_id"] for r in before)


# -- auto_ingest = 0 ---------------------------------------------------------------------

def test_auto_ingest_off_keeps_snapshot_writes_no_rows(twin, dbstore, root):
    """auto_ingest = 0 keeps the snapshot current but queues nothing."""
    write(root / "a.txt", b"a1")
    gone = write(root / "b.txt", b"b1")
    wid = scanned(dbstore, root)
    with dbstore.write():
        dbstore.update_watch(wid, {"auto_ingest": 0})
    write(root / "a.txt", b"a2 longer", T1)
    gone.unlink()
    write(root / "c.txt", b"c1")
    rep = scan(dbstore, wid)
    assert rep.ok and rep.written == 0
    assert queue(dbstore, None) == []
    with dbstore.write():
        dbstore.update_watch(wid, {"auto_ingest": 1})
    rep = scan(dbstore, wid)
    assert rep.ok and (rep.ingest, rep.update, rep.delete) == (0, 0, 0)
    assert queue(dbstore, None) == []
    write(root / "a.txt", b"a3 much longer", T2)
    scan(dbstore, wid)
    row = only_row(dbstore)
    assert row["operation"] == "update"
    assert row["metadata"]["previous_hash"] == h(b"a2 longer")


# -- remove_watch ------------------------------------------------------------------------

def _snapshot_rows(dbstore, wid: str) -> int:
    return dbstore.conn.execute("SELECT count(*) FROM wq_snapshot WHERE watch_id = ?",
                              (wid,)).fetchall()[0][0]


def test_remove_with_emit_deletes(twin, dbstore, root):
    """remove_watch(emit_deletes=True) queues a delete per snapshot file, coalescing."""
    write(root / "a.txt", b"a1")
    write(root / "b.txt", b"b1")
    write(root / "sub" / "c.txt", b"c1")
    wid = scanned(dbstore, root)
    write(root / "a.txt", b"a2 longer", T1)  # pending update -> delete
    write(root / "sub" / "d.txt", b"d1")  # pending ingest -> removed
    scan(dbstore, wid)
    assert ops(dbstore) == {"a.txt": "update", "sub/d.txt": "ingest"}
    update_id = queue(dbstore)[0]["queue_id"]
    assert _snapshot_rows(dbstore, wid) > 0
    remove_watch(dbstore, wid, emit_deletes=True)
    base = real(root)
    rows = {r["file_absolute_path"]: r for r in queue(dbstore, None)}
    assert {k: (r["operation"], r["status"]) for k, r in rows.items()} == {
        base + "/a.txt": ("delete", "pending"),
        base + "/b.txt": ("delete", "pending"),
        base + "/sub/c.txt": ("delete", "pending")}
    assert rows[base + "/a.txt"]["queue_id"] == update_id
    assert rows[base + "/a.txt"]["metadata"]["content_hash"] == h(b"a2 longer")
    assert rows[base + "/a.txt"]["metadata"]["previous_hash"] == h(b"a1")  # what the consumer holds
    assert rows[base + "/sub/c.txt"]["metadata"]["content_hash"] == h(b"c1")
    for r in rows.values():
        assert r["priority"] == 8 and r["watch_id"] == wid
        assert r["metadata"]["source"] == "wqscan"
    assert dbstore.watch_row(wid) is None
    assert _snapshot_rows(dbstore, wid) == 0


def test_remove_without_emit_deletes(twin, dbstore, root):
    """remove_watch(emit_deletes=False) queues nothing; snapshot and watch are gone."""
    write(root / "a.txt", b"a1")
    write(root / "sub" / "c.txt", b"c1")
    wid = scanned(dbstore, root)
    assert _snapshot_rows(dbstore, wid) > 0
    remove_watch(dbstore, wid, emit_deletes=False)
    assert queue(dbstore, None) == []
    assert dbstore.watch_row(wid) is None
    assert _snapshot_rows(dbstore, wid) == 0


def test_a_first_scan_meets_the_pending_rows_a_removed_watch_left(twin, dbstore, root):
    """A watch removed without deletes leaves its pending rows; the tree watched anew (an
    empty snapshot) meets them: they are merged into (ids kept), a new file gets its row,
    nothing is written twice. On PostgreSQL a scan
    inserts without ON CONFLICT until a file with a pending row refuses it; that
    transaction then runs again, with ON CONFLICT from then on."""
    write(root / "a.txt", b"a1")
    write(root / "b.txt", b"b1")
    wid = watch(dbstore, root)
    scan(dbstore, wid)
    before = {r["file_absolute_path"]: r["queue_id"] for r in queue(dbstore)}
    pg = dbstore.target.is_pg
    assert not pg or dbstore.engine.queue.met_pending is False
    remove_watch(dbstore, wid)
    write(root / "c.txt", b"c1")
    report = scan(dbstore, watch(dbstore, root))
    rows = {r["file_absolute_path"]: r["queue_id"] for r in queue(dbstore)}
    assert rows.keys() == {real(root) + "/a.txt", real(root) + "/b.txt", real(root) + "/c.txt"}
    assert {k: rows[k] for k in before} == before
    assert (report.ingest, report.written) == (3, 3)  # two merged, one inserted
    assert not pg or dbstore.engine.queue.met_pending is True


@pytest.mark.parametrize("twin", ["c"], indirect=True)  # slow tree; pairing is reconcile's
def test_rename_paired_across_commit_batches(twin, dbstore, root):
    """A move whose ingest was committed in an earlier batch than its delete still gets
    moved_from (the pending ingest is annotated afterwards)."""
    from wqscan.reconcile.batches import CHUNK_DIRS

    write(root / "a" / "keep.txt", b"keep a")
    write(root / "z" / "old.txt", b"moving content")
    write(root / "z" / "keep.txt", b"keep z")
    wid = scanned(dbstore, root, check_stat="full")
    os.rename(root / "z" / "old.txt", root / "a" / "new.txt")
    for i in range(CHUNK_DIRS):  # directories emitted between a/ and z/
        d = root / f"m{i:05d}"
        d.mkdir()
        (d / "f.txt").write_bytes(b"filler %d" % i)  # settle is 0: any past mtime will do
    rep = scan(dbstore, wid)
    assert rep.ok and rep.ingest == CHUNK_DIRS + 1 and rep.delete == 1
    base = real(root)
    rows = {r["metadata"]["relative_path"]: r for r in queue(dbstore)
            if not r["metadata"]["relative_path"].startswith("m")}
    assert {k: r["operation"] for k, r in rows.items()} == {
        "a/new.txt": "ingest", "z/old.txt": "delete"}
    assert rows["a/new.txt"]["metadata"]["moved_from"] == base + "/z/old.txt"


# -- watches of one collection over one tree ---------------------------------------------------

def test_overlapping_watches_of_one_collection_refused(dbstore, root, capsys):
    """A watch nested in (or around, or on) another of the same collection is refused with
    one line, exit 2; another collection over the same tree is accepted."""
    from wqscan import cli

    (root / "sub").mkdir()
    watch(dbstore, root, "notes", watch_id="notes")
    for path in (root / "sub", root, root / ".."):
        rc = cli.main([*dbstore.target.argv(), "add", str(path), "--collection", "notes"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "watch 'notes'" in err and "one watch per tree and collection" in err
    assert cli.main([*dbstore.target.argv(), "add", str(root / "sub"), "--collection",
                     "other"]) == 0


def _overlap_anyway(dbstore, root, sub):
    """A nested watch of the same collection, as another program or an older wqscan left it."""
    watch(dbstore, root, "notes", watch_id="notes")
    with dbstore.write():
        dbstore.insert_watch({"watch_id": "sub", "path": real(sub), "collection": "notes",
                            "debounce_seconds": 0.0})


def test_no_delete_for_a_file_another_watch_still_covers(twin, dbstore, root):
    """remove --emit-deletes of a nested watch queues no delete for files the outer watch of
    the same collection still holds; nor does a scan that finds a file out of its own scope
    (here: a pattern added), while the outer watch still holds it."""
    sub = root / "sub"
    write(sub / "a.md", b"a")
    write(sub / "b.txt", b"b")
    write(sub / "d.md", b"d")
    write(root / "c.md", b"c")
    _overlap_anyway(dbstore, root, sub)
    scan(dbstore, "notes")
    scan(dbstore, "sub")
    drain(dbstore)
    with dbstore.write():
        dbstore.update_watch("sub", {"patterns": json.dumps(["*.md"])})
    write(sub / "d.md", b"d, changed", T1)
    rep = scan(dbstore, "sub")
    # b.txt: out of sub's scope, still in notes'; d.md, met after it, is still queued
    assert rep.delete == 1 and ops(dbstore) == {"d.md": "update"}
    drain(dbstore)
    assert remove_watch(dbstore, "sub", emit_deletes=True).changed == 0
    assert ops(dbstore) == {}
    assert scan(dbstore, "notes").delete == 0


def test_deletes_still_come_when_the_file_is_gone_everywhere(twin, dbstore, root):
    """The outer watch queues the delete of a file removed from disk, even where the nested
    watch skipped it."""
    sub = root / "sub"
    write(sub / "a.md", b"a")
    write(sub / "stays.md", b"s")  # the nested root does not become empty
    write(root / "keep.md", b"k")
    _overlap_anyway(dbstore, root, sub)
    scan(dbstore, "notes")
    scan(dbstore, "sub")
    drain(dbstore)
    (sub / "a.md").unlink()
    assert scan(dbstore, "sub").delete == 1
    assert ops(dbstore) == {}
    assert scan(dbstore, "notes").delete == 1
    assert ops(dbstore) == {"sub/a.md": "delete"}
