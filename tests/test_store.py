"""The database as a contract (docs/consuming.md): the queue table's constraints and defaults, seed
rows and seed layouts, refusing what is not a wqscan database, busy retries."""
from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import apsw
import pytest
from helpers.db import SEED_INSERT, queue, scan, seed, watch
from helpers.foreign import SEED_WATCH_COLUMNS, SEED_WATCH_TABLE, build_spec_db
from helpers.trees import write

from wqscan import cli
from wqscan.errors import DatabaseBusy, NotADatabaseError
from wqscan.store import SCHEMA_VERSION, Store
from wqscan.store.schema import QUEUE_COLUMNS, WATCH_COLUMNS

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SEED_QUEUE_TABLE = (
    "CREATE TABLE ingestion_queue (queue_id TEXT PRIMARY KEY, "
    "file_absolute_path TEXT NOT NULL, collection_name TEXT NOT NULL, "
    "tenant_id TEXT NOT NULL DEFAULT 'default', branch TEXT NOT NULL DEFAULT 'main', "
    "operation TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 5, "
    "status TEXT NOT NULL DEFAULT 'pending', "
    "queued_timestamp TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), "
    "retry_count INTEGER NOT NULL DEFAULT 0, retry_from TEXT, error_message TEXT)")
SEED_ROWS = [
    ("q-1", "/data/a.txt", "docs", "acme", "dev", "ingest", 7, "pending",
     "2024-01-02T03:04:05.678Z", 0, None, None),
    ("q-2", "/data/b.txt", "docs", "default", "main", "delete", 8, "failed",
     "2024-01-02T03:04:06.000Z", 3, "2024-01-01T00:00:00.000Z", "boom"),
]
SEED_ROW_COLUMNS = ("queue_id", "file_absolute_path", "collection_name", "tenant_id", "branch",
                    "operation", "priority", "status", "queued_timestamp", "retry_count",
                    "retry_from", "error_message")


def seed_insert(conn, path="/data/a.txt", collection="docs", operation="ingest", priority=5):
    conn.execute(SEED_INSERT, (path, collection, "default", "main", operation, priority, None))


def build_seed_db(path: str, watch_root: str | None = None) -> None:
    """An SQLite file laid out as the seed left it: 8-column watch_folders, old queue."""
    conn = apsw.Connection(path)
    conn.execute(SEED_WATCH_TABLE)
    conn.execute(SEED_QUEUE_TABLE)
    marks = ",".join("?" * len(SEED_ROW_COLUMNS))
    conn.executemany(f"INSERT INTO ingestion_queue ({','.join(SEED_ROW_COLUMNS)}) "
                     f"VALUES ({marks})", SEED_ROWS)
    if watch_root is not None:
        conn.execute(f"INSERT INTO watch_folders ({SEED_WATCH_COLUMNS}) "
                     "VALUES ('seed', ?, 'docs', '[]', '[]', 1, 0.0, 1)", (watch_root,))
    conn.close()


def _now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + \
        ".%03dZ" % (ns % 10**9 // 10**6)


def schema(conn) -> list:
    return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(),
                  key=lambda r: (r[0], r[1]))


# -- the queue table -----------------------------------------------------------------

def test_seed_statement_and_pending_uniqueness(store):
    """The seed INSERT works; a second pending row for the file fails until the first is done."""
    c = store.conn
    seed_insert(c)
    with pytest.raises(apsw.ConstraintError):
        seed_insert(c, operation="update")
    seed_insert(c, collection="other")  # another collection is another queue entry
    c.execute("UPDATE ingestion_queue SET status = 'done' WHERE collection_name = 'docs'")
    seed_insert(c, operation="update")
    rows = c.execute("SELECT operation, status, priority, retry_from, watch_id, metadata "
                     "FROM ingestion_queue WHERE collection_name = 'docs' "
                     "ORDER BY status").fetchall()
    assert rows == [("ingest", "done", 5, None, None, None),
                    ("update", "pending", 5, None, None, None)]


def test_queue_defaults(store):
    """queue_id defaults to a UUID v4; timestamps default to ISO-8601 UTC with ms and Z."""
    c = store.conn
    before = _now()
    for i in range(200):
        seed_insert(c, path=f"/data/{i}.txt")
    after = _now()
    rows = c.execute("SELECT queue_id, queued_timestamp, scheduled_at, status, retry_count "
                     "FROM ingestion_queue").fetchall()
    ids = [r[0] for r in rows]
    assert len(set(ids)) == 200
    for qid, queued, scheduled, status, retries in rows:
        u = uuid.UUID(qid)
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert str(u) == qid  # canonical lowercase text
        assert ISO_MS_Z.match(queued) and ISO_MS_Z.match(scheduled)
        assert (status, retries) == ("pending", 0)
        assert before <= queued <= after and before <= scheduled <= after


@pytest.mark.parametrize("column,value", [
    ("operation", "move"), ("status", "queued"), ("priority", 11), ("priority", -1)])
def test_queue_checks(store, column, value):
    """CHECK constraints reject a bad operation, status or priority."""
    row = {"file_absolute_path": "/data/a", "collection_name": "docs", "operation": "ingest",
           "status": "pending", "priority": 5, column: value}
    with pytest.raises(apsw.ConstraintError):
        store.conn.execute(f"INSERT INTO ingestion_queue ({', '.join(row)}) VALUES "
                           f"({', '.join('?' * len(row))})", tuple(row.values()))
    assert store.conn.execute("SELECT count(*) FROM ingestion_queue").fetchall() == [(0,)]


# -- seed watch rows and seed layouts --------------------------------------------------------

def test_seed_watch_row_scans(twin, store, root):
    """A watch_folders row with only the 8 seed columns can be scanned."""
    write(root / "a.txt", b"a")
    write(root / "sub" / "b.txt", b"b")
    with store.write():
        store.conn.execute(f"INSERT INTO watch_folders ({SEED_WATCH_COLUMNS}) "
                           "VALUES ('seed', ?, 'docs', '[]', '[]', 1, 0.0, 1)",
                           (os.path.realpath(root),))
    rep = scan(store)
    assert rep.watch_id == "seed" and rep.ok, rep.reason
    rows = queue(store)
    assert [(r["metadata"]["relative_path"], r["operation"], r["collection_name"],
             r["watch_id"]) for r in rows] == [("a.txt", "ingest", "docs", "seed"),
                                               ("sub/b.txt", "ingest", "docs", "seed")]


def test_seed_queue_refused_unchanged(tmp_path, capsys):
    """A seed-layout queue (no scheduled_at, leases, watch_id, metadata) is not rebuilt: the
    database is refused with exit 2, one line naming what is missing, byte for byte
    unchanged."""
    path = str(tmp_path / "seed.db")
    build_seed_db(path, watch_root=str(tmp_path))
    data = Path(path).read_bytes()
    with pytest.raises(NotADatabaseError) as e:
        Store.open(path)
    assert e.value.exit_code == 2
    assert "scheduled_at, lease_owner, lease_expires_at, watch_id, metadata" in str(e.value)
    for argv in (["status"], ["init"], ["reconcile"], ["add", str(tmp_path), "--collection",
                                                       "x"]):
        assert cli.main(["--db", path, *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and path in err, err
    assert Path(path).read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["seed.db"]


def test_spec_built_db_adopted(twin, tmp_path, root):
    """A wqscan-layout database another tool built is used as it is: its watch row scans,
    wqscan adds only wq_ objects, keeps settings its watch_folders lacks in
    wq_watch_settings, and leaves application_id and user_version alone."""
    write(root / "a.txt", b"a")
    path = str(tmp_path / "spec.db")
    build_spec_db(path, os.path.realpath(root))
    before = schema(apsw.Connection(path))
    with Store.open(path) as s:
        assert s.layout.name == "wqscan" and not s.layout.own
        rep = scan(s, "seed")
        assert rep.ok, rep.reason
        assert [(r["metadata"]["relative_path"], r["operation"]) for r in queue(s)] == \
            [("a.txt", "ingest")]
        watch(s, tmp_path / "tree", "other", watch_id="mine", interval=7)
        assert s.watch_row("mine")["poll_interval_seconds"] == 7
        c = s.conn
        assert (c.pragma("application_id"), c.pragma("user_version")) == (0, 0)
        after = schema(c)
    added = [r for r in after if r not in before]
    assert before == [r for r in after if r in before]
    assert all(name.startswith(("wq_", "sqlite_autoindex_wq_")) for _, name, _ in added), added


def test_spec_built_db_without_pending_index_refused(tmp_path):
    """wqscan adds no constraint to a table it did not create: a wqscan-layout queue
    without the unique index of pending rows is refused, unchanged."""
    path = str(tmp_path / "spec.db")
    build_spec_db(path, str(tmp_path), pending_index=False)
    data = Path(path).read_bytes()
    with pytest.raises(NotADatabaseError, match="no unique index on"):
        Store.open(path)
    assert Path(path).read_bytes() == data


def test_own_v5_database_upgraded(tmp_path):
    """A database an earlier wqscan created (schema version 5 in user_version) is brought
    up to the current version: wq_meta, wq_watch_settings, wq_labels added, rows kept."""
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA application_id = {0x77717363}; PRAGMA user_version = 5;"
                 "CREATE TABLE watch_folders (" + ", ".join(
                     f"{c} {d}" for c, d in WATCH_COLUMNS if c != "config_retired") + ");"
                 "CREATE TABLE ingestion_queue (" + ", ".join(
                     f"{c} {d}" for c, d in QUEUE_COLUMNS) + ");"
                 "CREATE TABLE wq_watch_stats (watch_id TEXT PRIMARY KEY, scans_ok INTEGER);"
                 "INSERT INTO watch_folders (watch_id, path, collection) VALUES ('w', '/x', 'c')")
    conn.close()
    with Store.open(path) as s:
        assert s.conn.pragma("user_version") == SCHEMA_VERSION
        assert s.conn.execute("SELECT value FROM wq_meta").fetchall() == [(str(SCHEMA_VERSION),)]
        assert s.watch_row("w")["config_retired"] == 0
        names = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master")}
        assert {"wq_watch_settings", "wq_leases", "wq_labels", "ingestion_queue_pending"} <= names


# -- refusing what is not a wqscan database ------------------------------------------------

def test_text_file_refused(tmp_path):
    """A text file is refused with NotADatabaseError (exit code 2) and left as it was."""
    p = tmp_path / "notes.txt"
    data = b"these are my notes, not a database\nsecond line\n"
    p.write_bytes(data)
    with pytest.raises(NotADatabaseError) as e:
        Store.open(str(p))
    assert e.value.exit_code == 2
    assert str(p) in str(e.value)
    assert p.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_text_file_refused_by_cli(tmp_path, capsys):
    """`wqscan --db TEXTFILE list` exits 2 with one line on stderr; the file is unchanged."""
    p = tmp_path / "notes.txt"
    data = b"plain text\n" * 10
    p.write_bytes(data)
    assert cli.main(["--db", str(p), "list"]) == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err
    assert str(p) in err and "Traceback" not in err
    assert out == ""
    assert p.read_bytes() == data


def _foreign_db(path: str, pragmas: str = "") -> bytes:
    conn = apsw.Connection(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
                 "INSERT INTO notes (body) VALUES ('one'), ('two');" + pragmas)
    conn.close()
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("pragmas", [
    "",
    "PRAGMA application_id = 1234;",
    "PRAGMA user_version = 1;",
    "PRAGMA user_version = 7;",
], ids=["plain", "application_id", "user_version_1", "user_version_7"])
def test_other_application_db_refused(tmp_path, pragmas):
    """Another application's SQLite database is refused and left byte-for-byte unchanged."""
    path = str(tmp_path / "app.db")
    data = _foreign_db(path, pragmas)
    with pytest.raises(NotADatabaseError) as e:
        s = Store.open(path)
        s.close()
    assert e.value.exit_code == 2
    with open(path, "rb") as f:
        assert f.read() == data
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


def test_other_application_db_refused_by_cli(tmp_path, capsys):
    """`wqscan --db OTHERAPP.db list` exits 2 with one line; the database is unchanged."""
    path = str(tmp_path / "app.db")
    data = _foreign_db(path)
    assert cli.main(["--db", path, "list"]) == 2
    _, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err
    with open(path, "rb") as f:
        assert f.read() == data


def test_directory_refused(tmp_path, capsys):
    """A directory given as the database is refused (exit code 2), left empty."""
    d = tmp_path / "dbdir"
    d.mkdir()
    with pytest.raises(NotADatabaseError):
        Store.open(str(d))
    assert cli.main(["--db", str(d), "list"]) == 2
    _, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and str(d) in err
    assert os.listdir(d) == []


# -- busy retries ------------------------------------------------------------------------

def _lock(path: str) -> apsw.Connection:
    """A second connection holding the write lock, with a row written in its transaction."""
    other = apsw.Connection(path)
    other.execute("BEGIN IMMEDIATE")
    seed_insert(other, path="/other/writer.txt", collection="other")
    return other


def test_write_busy_raises_after_retries(store):
    """store.write() raises DatabaseBusy when another writer keeps the lock through the retries."""
    other = _lock(store.path)
    try:
        t0 = time.monotonic()
        with pytest.raises(DatabaseBusy) as e:
            with store.write():
                seed_insert(store.conn, path="/mine.txt")
        waited = time.monotonic() - t0
        assert waited >= 3.5  # 0.5 + 1 + 2 s of retries
        assert "lock" in str(e.value).lower()
        assert e.value.exit_code == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not store.conn.in_transaction
    assert store.conn.execute("SELECT count(*) FROM ingestion_queue").fetchall() == [(0,)]
    with store.write():  # the store is usable again
        seed_insert(store.conn, path="/mine.txt")


@pytest.mark.parametrize("twin", ["c"], indirect=True)  # the busy path is the store's
def test_scan_while_locked_fails_and_writes_nothing(twin, store, root):
    """A scan against a locked database fails naming the lock and writes nothing."""
    write(root / "a.txt", b"a")
    write(root / "sub" / "b.txt", b"b")
    wid = watch(store, root)
    other = _lock(store.path)
    try:
        rep = scan(store, wid)
    finally:
        other.execute("COMMIT")
        other.close()
    assert not rep.ok
    assert "lock" in (rep.reason or "").lower()
    rows = queue(store, None)
    assert [(r["collection_name"], r["file_absolute_path"]) for r in rows] == [
        ("other", "/other/writer.txt")]
    assert store.conn.execute("SELECT count(*) FROM wq_snapshot WHERE watch_id = ?",
                              (wid,)).fetchall() == [(0,)]
    rep = scan(store, wid)  # the next scan does the work
    assert rep.ok and rep.ingest == 2
    assert sorted(r["metadata"]["relative_path"] for r in queue(store)
                  if r["watch_id"] == wid) == ["a.txt", "sub/b.txt"]


def test_write_succeeds_when_lock_released_during_retries(store):
    """store.write() gets through when the other writer commits ~0.7 s later."""
    other = _lock(store.path)
    errors: list[BaseException] = []

    def release():
        try:
            time.sleep(0.7)
            other.execute("COMMIT")
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    t = threading.Thread(target=release)
    t0 = time.monotonic()
    t.start()
    try:
        with store.write():
            seed_insert(store.conn, path="/mine.txt", collection="docs")
        waited = time.monotonic() - t0
    finally:
        t.join()
        other.close()
    assert errors == []
    assert 0.5 <= waited < 3.0
    got = store.conn.execute("SELECT collection_name, file_absolute_path FROM ingestion_queue "
                             "ORDER BY collection_name").fetchall()
    assert got == [("docs", "/mine.txt"), ("other", "/other/writer.txt")]


def test_a_queue_row_is_set_only_by_its_own_columns(dbstore) -> None:
    """Setting fields of a queue row names them in its SQL, so a name that is not a queue
    column (a slip, or text from outside) is refused with the names, and nothing is set."""
    queue_id = seed(dbstore, "/d/a.txt")
    with pytest.raises(ValueError, match=re.escape(
            "not queue columns: ['priority = 0 --', 'zzz']")), dbstore.write():
        dbstore.queue.set_fields(queue_id, {"status": "failed", "zzz": 1,
                                            "priority = 0 --": 1})
    (row,) = dbstore.queue.rows()
    assert (row["status"], row["priority"]) == ("pending", 5)
