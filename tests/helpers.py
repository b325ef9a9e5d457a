"""Plain helpers for tests: trees with exact mtimes, watches, scans, queue contents, the
database as another process sees it, the command line, processes in /proc."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import apsw
import pytest
import xxhash

from wqscan import _scan, _scan_py
from wqscan.cli import main
from wqscan.clock import iso_from_ns, parse_iso
from wqscan.reconcile import WatchReport, reconcile
from wqscan.store import Store, Target
from wqscan.watches import add_watch

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_TERMINAL_PROMPT": "0",
}


def git_run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `repo` with GIT_ENV, its output captured as text."""
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=check,
                          capture_output=True, text=True)


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; returns its stdout, stripped."""
    return git_run(cwd, *args).stdout.strip()


#: A fixed mtime well in the past (2023-11-14), so that settle never defers test files.
OLD_NS = 1_700_000_000_123_456_789
#: The names both scanner twins export.
TWIN_NAMES = ("walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules")


def load_twin(name: str):
    """The scanner module for id `c` or `py`; `c` skips only when the variable asks for Python."""
    if name == "py":
        return _scan_py
    if _scan.NO_EXTENSIONS:
        pytest.skip("WQSCAN_NO_EXTENSIONS asks for the pure-Python scanner")
    from wqscan import _scan_c

    return _scan_c


def twin_environ(name: str) -> dict[str, str]:
    """The environment that makes a `python -m wqscan` child use twin `c` or `py`."""
    env = dict(os.environ)
    env.pop("WQSCAN_NO_EXTENSIONS", None)
    if name == "py":
        env["WQSCAN_NO_EXTENSIONS"] = "1"
    return env


def twin_env(twin) -> dict[str, str]:
    """twin_environ of the twin module a test runs on (fixture `twin`)."""
    return twin_environ("py" if twin.__name__.endswith("_scan_py") else "c")


def write(path: Path, content: bytes | str = b"x", mtime_ns: int = OLD_NS) -> Path:
    """Create or overwrite a file (and its parents) and set its mtime exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def write_file(path: str, data: bytes, mtime_ns: int) -> None:
    """Create or overwrite a file in place (its parent exists) and set its mtime exactly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def big_tree_content(i: int, version: int = 0) -> bytes:
    """What make_big_tree writes in its file number `i` (`version` 0)."""
    return b"file %d version %d\n" % (i, version)


def make_big_tree(root: Path | str, dirs: int, files_per_dir: int) -> dict[str, bytes]:
    """Create `root` with `dirs` x `files_per_dir` small files dNNN/fNNN.txt, old and
    distinct mtimes (OLD_NS + i us); returns {absolute path below the resolved root:
    content}."""
    os.mkdir(root)
    base = os.path.realpath(root)
    files: dict[str, bytes] = {}
    for d in range(dirs):
        dpath = f"{base}/d{d:03d}"
        os.mkdir(dpath)
        for f in range(files_per_dir):
            i = d * files_per_dir + f
            p = f"{dpath}/f{f:03d}.txt"
            files[p] = big_tree_content(i)
            write_file(p, files[p], OLD_NS + i * 1_000)
    return files


def h(content: bytes | str) -> str:
    """The content hash wqscan records for `content` (XXH3-128, hex; str as UTF-8)."""
    return xxhash.xxh3_128_hexdigest(content.encode() if isinstance(content, str) else content)


def watch(store: Store, root: Path, collection: str = "c", **kw: Any) -> str:
    """Register `root` (settle 0 unless given) and return the watch id."""
    kw.setdefault("settle", 0)
    return add_watch(store, str(root), collection, **kw).watch_id


def scan(store: Store, *ids: str, **kw: Any) -> WatchReport:
    """Reconcile the given watches (default: all enabled); returns the first report."""
    return reconcile(store, list(ids), **kw)[0]


def queue(store: Store, status: str | None = "pending") -> list[dict[str, Any]]:
    """Rows of ingestion_queue (by default the pending ones), metadata decoded."""
    sql = "SELECT * FROM ingestion_queue"
    args: tuple = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    cur = store.conn.execute(sql + " ORDER BY file_absolute_path", args)
    rows = []
    for r in cur:
        row = dict(zip([d[0] for d in cur.get_description()], r))
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        rows.append(row)
    return rows


#: SPEC §5's coalescing table: (pending operation, new operation, what the pending row
#: becomes; None: it goes).
COALESCING = [
    ("ingest", "update", "ingest"),
    ("ingest", "delete", None),
    ("update", "update", "update"),
    ("update", "delete", "delete"),
    ("delete", "ingest", "update"),
    ("ingest", "ingest", "ingest"),
    ("update", "ingest", "ingest"),
    ("delete", "update", "update"),
    ("delete", "delete", "delete"),
]

#: The seed's own INSERT of a queue row (SPEC §4): the SQL defaults give the rest.
SEED_INSERT = ("INSERT INTO ingestion_queue (file_absolute_path, collection_name, tenant_id, "
               "branch, operation, priority, retry_from) VALUES (?,?,?,?,?,?,?)")


def seed(store: Store, path: str, operation: str = "ingest", priority: int = 5, *,
         collection: str = "c", tenant: str = "default", branch: str = "main",
         retry_from: str | None = None, **cols: Any) -> str:
    """A row written by another tool with the seed's own INSERT (SPEC §4); `cols` then
    overwrite further columns directly. Returns the queue_id the SQL default gave it."""
    store.conn.execute(SEED_INSERT, (path, collection, tenant, branch, operation, priority,
                                     retry_from))
    qid = store.conn.execute("SELECT queue_id FROM ingestion_queue "
                             "WHERE rowid = last_insert_rowid()").fetchall()[0][0]
    if cols:
        set_cols(store, qid, **cols)
    return qid


def set_cols(store: Store, queue_id: str, **cols: Any) -> None:
    """Rewrite columns of one row with SQL (time travel, foreign states)."""
    cols = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in cols.items()}
    sets = ", ".join(f"{c} = ?" for c in cols)
    store.conn.execute(f"UPDATE ingestion_queue SET {sets} WHERE queue_id = ?",
                       (*cols.values(), queue_id))


def iso(offset_s: float = 0.0) -> str:
    """The table timestamp `offset_s` seconds from now."""
    return iso_from_ns(time.time_ns() + int(offset_s * 1e9))


def from_now(ts: str) -> float:
    """Seconds from now to a table timestamp (negative: in the past)."""
    return (parse_iso(ts) - time.time_ns()) / 1e9


def queue_dump(store: Store) -> list[tuple]:
    """Every column of every queue row (any status), for before/after comparisons."""
    return store.conn.execute("SELECT * FROM ingestion_queue ORDER BY queue_id").fetchall()


@contextmanager
def read_only(db: Path | str, busy_ms: int = 5000) -> Iterator[apsw.Connection]:
    """A fresh read-only connection, as another process would read the database while
    wqscan processes write (it waits out a writer's lock for `busy_ms` instead of failing)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(busy_ms)
        yield conn
    finally:
        conn.close()


def read_rows(db: Path | str, sql: str, args: tuple = (), busy_ms: int = 5000) -> list[tuple]:
    """Rows of a query on a fresh read-only connection (read_only)."""
    with read_only(db, busy_ms) as conn:
        return conn.execute(sql, args).fetchall()


def read_dicts(db: Path | str, sql: str, args: tuple = (), busy_ms: int = 5000
               ) -> list[dict[str, Any]]:
    """read_rows, each row as {column: value}."""
    with read_only(db, busy_ms) as conn:
        cur = conn.execute(sql, args)
        rows, names = [], None
        for r in cur:
            names = names or [d[0] for d in cur.get_description()]
            rows.append(dict(zip(names, r)))
        return rows


def read_dict(db: Path | str, sql: str, args: tuple = ()) -> dict[str, Any] | None:
    """The first row of read_dicts; None when there is none, or no such table yet (polled
    before the schema was created)."""
    try:
        rows = read_dicts(db, sql, args)
    except apsw.SQLError:
        return None
    return rows[0] if rows else None


def dump_db(db: Path | str) -> list:
    """Every table's rows in a stable order, and the schema version: the database's logical
    content (the files themselves change when connections come and go in WAL mode)."""
    with read_only(db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = [conn.pragma("user_version")]
        for t in tables:
            out.append((t, sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)))
        return out


def drain_db(db: Path | str, busy_ms: int = 5000) -> None:
    """drain, on a connection of its own (while wqscan processes use the database)."""
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(busy_ms)
        conn.execute("DELETE FROM ingestion_queue WHERE status = 'pending'")
    finally:
        conn.close()


def assert_one_ingest_per_file(db: Path | str, files: set[str]) -> None:
    """The queue holds exactly one pending ingest for every file and nothing else."""
    rows = read_rows(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    assert len(rows) == len(files), f"{len(rows)} rows for {len(files)} files"
    assert {p for p, _, _ in rows} == files
    assert {(s, o) for _, s, o in rows} == {("pending", "ingest")}


def ops(store: Store) -> dict[str, str]:
    """{relative path: operation} of the pending rows of every watch."""
    return {(r["metadata"] or {}).get("relative_path", r["file_absolute_path"]): r["operation"]
            for r in queue(store)}


def drain(store: Store) -> None:
    """Acknowledge everything pending, as a consumer that completed it would."""
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue WHERE status = 'pending'")


def scanned(store: Store, root: Path, **kw: Any) -> str:
    """Watch `root` (as `watch` does), scan it once and acknowledge what that queued: a tree
    the consumer holds. Returns the watch id."""
    wid = watch(store, root, **kw)
    scan(store, wid)
    drain(store)
    return wid


# -- the command line, in process and as a child -------------------------------------------

def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `wqscan ARGV` in process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    """stderr is exactly one line, without a traceback; returns it."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def child_env(**extra: str) -> dict[str, str]:
    """This environment without $WQSCAN_DB and $WQSCAN_CONFIG, plus `extra`."""
    env = dict(os.environ)
    for name in ("WQSCAN_DB", "WQSCAN_CONFIG"):
        env.pop(name, None)
    env.update(extra)
    return env


def wqscan_argv(db: Path | str, *args: str) -> list[str]:
    """`python -m wqscan --db DB ARGS`."""
    return [sys.executable, "-m", "wqscan", "--db", str(db), *args]


def wqscan(db: Path | str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m wqscan --db DB ARGS` to completion (no stdin, output captured)."""
    return subprocess.run(wqscan_argv(db, *args), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# -- processes, as /proc shows them ----------------------------------------------------------

def proc_state(pid: int) -> str | None:
    """The state letter of a process in /proc (R, S, T, Z, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2:].split()[0].decode()
    except (OSError, IndexError):
        return None


def alive(pid: int, marker: str) -> bool:
    """Process `pid` runs (not a zombie) and its command line contains `marker`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return marker.encode() in cmdline and proc_state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of its main thread); [] when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def holds_tree(pid: int, root: str) -> bool:
    """True while process `pid` holds a descriptor open on the tree (its walk is under way)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == root or target.startswith(root + "/"):
            return True
    return False


def wait_until(cond: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Poll `cond` every 50 ms for up to `seconds`; returns whether it came to hold."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# -- workspace-qdrant-mcp's state database ---------------------------------------------------

#: That project's state manager creates these (among other tables of its own) ...
WQM_STATE_MANAGER = """
CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE file_processing (file_path TEXT PRIMARY KEY, collection TEXT NOT NULL,
    status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 2);
CREATE TABLE watch_folders (
    watch_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    collection TEXT NOT NULL,
    patterns TEXT NOT NULL,
    ignore_patterns TEXT NOT NULL,
    auto_ingest BOOLEAN NOT NULL DEFAULT 1,
    recursive BOOLEAN NOT NULL DEFAULT 1,
    recursive_depth INTEGER NOT NULL DEFAULT 10,
    debounce_seconds REAL NOT NULL DEFAULT 2.0,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_scan TIMESTAMP,
    metadata TEXT);
CREATE INDEX idx_watch_folders_path ON watch_folders(path);
CREATE INDEX idx_watch_folders_enabled ON watch_folders(enabled);
CREATE INDEX idx_watch_folders_collection ON watch_folders(collection);
CREATE TABLE IF NOT EXISTS ingestion_queue (
    file_absolute_path TEXT PRIMARY KEY NOT NULL,
    collection_name TEXT NOT NULL,
    tenant_id TEXT DEFAULT 'default',
    branch TEXT DEFAULT 'main',
    operation TEXT NOT NULL CHECK (operation IN ('ingest', 'update', 'delete')),
    priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10),
    queued_timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    retry_count INTEGER NOT NULL DEFAULT 0,
    retry_from TEXT,
    error_message_id INTEGER,
    metadata TEXT,
    FOREIGN KEY (retry_from) REFERENCES ingestion_queue(file_absolute_path) ON DELETE SET NULL);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_priority_time
    ON ingestion_queue(priority DESC, queued_timestamp ASC);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_collection
    ON ingestion_queue(collection_name, tenant_id, branch);
CREATE TABLE system_state (key TEXT PRIMARY KEY, value TEXT,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
INSERT INTO schema_version (version) VALUES (5);
"""
#: ... then its queue schema: an ingestion_queue without metadata (skipped when the state
#: manager made one), the error messages, collection metadata, three views, a trigger.
WQM_QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS ingestion_queue (
    file_absolute_path TEXT PRIMARY KEY NOT NULL,
    collection_name TEXT NOT NULL,
    tenant_id TEXT DEFAULT 'default',
    branch TEXT DEFAULT 'main',
    operation TEXT NOT NULL CHECK (operation IN ('ingest', 'update', 'delete')),
    priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10),
    queued_timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    retry_count INTEGER NOT NULL DEFAULT 0,
    retry_from TEXT,
    error_message_id INTEGER,
    FOREIGN KEY (retry_from) REFERENCES ingestion_queue(file_absolute_path) ON DELETE SET NULL,
    FOREIGN KEY (error_message_id) REFERENCES messages(id) ON DELETE SET NULL);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_priority_time
    ON ingestion_queue(priority DESC, queued_timestamp ASC);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_retry_from
    ON ingestion_queue(retry_from) WHERE retry_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_collection
    ON ingestion_queue(collection_name, tenant_id, branch);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_operation ON ingestion_queue(operation);
CREATE INDEX IF NOT EXISTS idx_ingestion_queue_error
    ON ingestion_queue(error_message_id) WHERE error_message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS collection_metadata (
    collection_name TEXT PRIMARY KEY NOT NULL,
    collection_type TEXT NOT NULL CHECK (collection_type IN
        ('non-watched', 'watched-dynamic', 'watched-cumulative', 'project')),
    created_timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    configuration TEXT,
    tenant_id TEXT DEFAULT 'default',
    branch TEXT DEFAULT 'main');
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    error_details TEXT,
    occurred_timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    file_path TEXT,
    collection_name TEXT,
    retry_count INTEGER DEFAULT 0);
CREATE VIEW IF NOT EXISTS queue_statistics AS
SELECT COUNT(*) AS total_items,
    SUM(CASE WHEN priority >= 8 THEN 1 ELSE 0 END) AS urgent_items,
    SUM(CASE WHEN retry_count > 0 THEN 1 ELSE 0 END) AS retry_items,
    SUM(CASE WHEN error_message_id IS NOT NULL THEN 1 ELSE 0 END) AS items_with_errors,
    COUNT(DISTINCT collection_name) AS unique_collections,
    MIN(queued_timestamp) AS oldest_item, MAX(queued_timestamp) AS newest_item
FROM ingestion_queue;
CREATE VIEW IF NOT EXISTS error_summary AS
SELECT error_type, COUNT(*) AS occurrence_count, MAX(occurred_timestamp) AS last_occurrence
FROM messages WHERE occurred_timestamp >= datetime('now', '-7 days') GROUP BY error_type;
CREATE VIEW IF NOT EXISTS collection_queue_summary AS
SELECT iq.collection_name, iq.tenant_id, iq.branch, cm.collection_type,
    COUNT(*) AS queued_items
FROM ingestion_queue iq LEFT JOIN collection_metadata cm
    ON iq.collection_name = cm.collection_name
GROUP BY iq.collection_name, iq.tenant_id, iq.branch, cm.collection_type;
CREATE TRIGGER IF NOT EXISTS update_collection_metadata_timestamp
AFTER UPDATE ON collection_metadata
BEGIN
    UPDATE collection_metadata SET last_updated = CURRENT_TIMESTAMP
    WHERE collection_name = NEW.collection_name;
END;
"""
#: More of what another program may hang on the two contract tables: extra columns, a
#: view and triggers of its own (the audit table counts writes to ingestion_queue rows).
WQM_EXTRAS = """
ALTER TABLE watch_folders ADD COLUMN owner TEXT DEFAULT 'ops';
ALTER TABLE ingestion_queue ADD COLUMN note TEXT DEFAULT 'theirs';
CREATE TABLE audit (what TEXT NOT NULL, path TEXT, n INTEGER NOT NULL DEFAULT 1);
CREATE TRIGGER queue_updated AFTER UPDATE ON ingestion_queue
BEGIN INSERT INTO audit (what, path) VALUES ('update', OLD.file_absolute_path); END;
CREATE TRIGGER watch_added AFTER INSERT ON watch_folders
BEGIN INSERT INTO audit (what, path) VALUES ('watch', NEW.path); END;
CREATE VIEW enabled_watches AS SELECT watch_id, path, owner FROM watch_folders WHERE enabled;
"""


def build_wqm_db(path: Path | str, *, metadata: bool = True, extras: bool = False,
                 journal: str = "wal", watch_column: str = "") -> None:
    """A state database built as workspace-qdrant-mcp builds it (WQM-LAYOUT.md): its state
    manager's tables, then its queue schema. With `metadata=False` the queue schema runs
    first, so ingestion_queue is its version (no metadata column, errors linked to
    messages); `extras` adds WQM_EXTRAS; `watch_column` declares one more column of
    watch_folders."""
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute("BEGIN")
    state = WQM_STATE_MANAGER.replace("    metadata TEXT);", f"    metadata TEXT{watch_column});")
    if metadata:
        conn.execute(state)
        conn.execute(WQM_QUEUE_SCHEMA)
    else:
        conn.execute(WQM_QUEUE_SCHEMA)
        conn.execute(state)
    if extras:
        conn.execute(WQM_EXTRAS)
    conn.execute("COMMIT")
    conn.close()


def wqm_watch(path: Path | str, watch_id: str, root: Path | str, collection: str, *,
              patterns: list[str] | None = None, ignores: list[str] | None = None,
              recursive: bool = True, depth: int = -1, debounce: float = 0.0,
              auto_ingest: bool = True, enabled: bool = True) -> None:
    """A watch_folders row as that project's state manager saves one (its columns, its
    defaults, its time format)."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(5000)
    conn.execute(
        "INSERT INTO watch_folders (watch_id, path, collection, patterns, ignore_patterns, "
        "auto_ingest, recursive, recursive_depth, debounce_seconds, enabled, created_at, "
        "updated_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP, NULL)",
        (watch_id, os.path.realpath(root), collection, json.dumps(patterns or []),
         json.dumps(ignores or []), auto_ingest, recursive, depth, debounce, enabled))
    conn.close()


_PY310_ISO = re.compile(r"\d{4}-\d\d-\d\d([T ]\d\d(:\d\d(:\d\d(\.\d{3}(\d{3})?)?)?)?"
                        r"([+-]\d\d:\d\d(:\d\d(\.\d{6})?)?)?)?")


def py310_fromisoformat(text: str) -> datetime:
    """datetime.fromisoformat as Python 3.10 has it (that project supports 3.10): no `Z`."""
    if not _PY310_ISO.fullmatch(text):
        raise ValueError(f"Invalid isoformat string: {text!r}")
    return datetime.fromisoformat(text)


class WqmConsumer:
    """A consumer written to workspace-qdrant-mcp's published queue semantics
    (WQM-LAYOUT.md): it selects rows by priority and queue time, nothing marks a row as
    taken; it applies a row by reading the file as it is now, deletes the row by path when
    done; an error goes into `messages` and the row's retry_count, and at max_retries the
    row is deleted."""

    SELECT = ("SELECT file_absolute_path, collection_name, tenant_id, branch, operation, "
              "priority, queued_timestamp, retry_count, retry_from, error_message_id "
              "FROM ingestion_queue ORDER BY priority DESC, queued_timestamp ASC LIMIT ?")

    def __init__(self, db: Path | str, max_retries: int = 3) -> None:
        self.conn = apsw.Connection(str(db))
        self.conn.set_busy_timeout(10_000)
        self.conn.pragma("foreign_keys", True)
        self.conn.pragma("synchronous", "normal")  # as that project's connections
        self.max_retries = max_retries
        self.view: dict[str, str] = {}  # path -> XXH3-128 of what was indexed
        self.applied: list[tuple[str, str]] = []  # (operation, path) in the order applied
        self.errors = 0

    def close(self) -> None:
        self.conn.close()

    def take(self, n: int) -> list[dict[str, Any]]:
        cur = self.conn.execute(self.SELECT, (n,))
        rows = []
        for r in cur:
            row = dict(zip([d[0] for d in cur.get_description()], r))
            assert row["operation"] in ("ingest", "update", "delete"), row
            row["queued_at"] = py310_fromisoformat(row["queued_timestamp"])
            rows.append(row)
        return rows

    def done(self, path: str) -> None:
        self.conn.execute("DELETE FROM ingestion_queue WHERE file_absolute_path = ?", (path,))

    def error(self, path: str, message: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO messages (error_type, error_message, file_path, collection_name) "
                "VALUES ('PROCESSING_ERROR', ?, ?, (SELECT collection_name FROM "
                "ingestion_queue WHERE file_absolute_path = ?))", (message, path, path))
            mid = self.conn.last_insert_rowid()
            (count,), = self.conn.execute("SELECT retry_count FROM ingestion_queue WHERE "
                                          "file_absolute_path = ?", (path,)).fetchall()
            if count + 1 >= self.max_retries:
                self.done(path)
            else:
                self.conn.execute("UPDATE ingestion_queue SET retry_count = ?, "
                                  "error_message_id = ? WHERE file_absolute_path = ?",
                                  (count + 1, mid, path))
        self.errors += 1

    def apply(self, row: dict[str, Any]) -> None:
        """Index the file as it is now (ingest, update) or drop it (delete)."""
        path, op = row["file_absolute_path"], row["operation"]
        if op == "delete":
            self.view.pop(path, None)
        else:
            try:
                with open(path, "rb") as f:
                    self.view[path] = xxhash.xxh3_128_hexdigest(f.read())
            except OSError as e:
                self.error(path, str(e))
                return
        self.applied.append((op, path))
        self.done(path)

    def drain(self, batch: int = 10) -> int:
        """Take and apply rows until none is left but those that failed in this drain (they
        wait for the next); returns how many rows were applied."""
        before = len(self.applied)
        failed: set[str] = set()
        while True:
            rows = [r for r in self.take(batch + len(failed))
                    if r["file_absolute_path"] not in failed][:batch]
            if not rows:
                return len(self.applied) - before
            for row in rows:
                errors = self.errors
                self.apply(row)
                if self.errors > errors:
                    failed.add(row["file_absolute_path"])


# -- a wqscan-layout database another tool built from SPEC §4 --------------------------------

SEED_WATCH_COLUMNS = ("watch_id, path, collection, patterns, ignore_patterns, recursive, "
                      "debounce_seconds, enabled")
SEED_WATCH_TABLE = (
    "CREATE TABLE watch_folders (watch_id TEXT PRIMARY KEY, path TEXT NOT NULL, "
    "collection TEXT NOT NULL, patterns TEXT NOT NULL, ignore_patterns TEXT NOT NULL, "
    "recursive INTEGER NOT NULL DEFAULT 1, debounce_seconds REAL NOT NULL DEFAULT 2.0, "
    "enabled INTEGER NOT NULL DEFAULT 1)")
#: More of what another program may hang on the two contract tables.
SPEC_EXTRAS = """
CREATE TABLE sources (name TEXT PRIMARY KEY);
INSERT INTO sources VALUES ('scanner');
ALTER TABLE watch_folders ADD COLUMN owner TEXT DEFAULT 'scanner' REFERENCES sources(name);
CREATE TABLE audit (what TEXT NOT NULL, path TEXT);
CREATE TRIGGER queue_added AFTER INSERT ON ingestion_queue
BEGIN INSERT INTO audit (what, path) VALUES ('insert', NEW.file_absolute_path); END;
CREATE TRIGGER watch_changed AFTER UPDATE ON watch_folders
BEGIN INSERT INTO audit (what, path) VALUES ('watch', NEW.path); END;
CREATE VIEW pending_by_collection AS SELECT collection_name, count(*) AS n
    FROM ingestion_queue WHERE status = 'pending' GROUP BY collection_name;
CREATE VIEW watched AS SELECT w.watch_id, w.path, s.name FROM watch_folders AS w
    LEFT JOIN sources AS s ON w.owner = s.name;
"""


def build_spec_db(path: Path | str, watch_root: str | None = None, *,
                  pending_index: bool = True, extras: bool = False,
                  journal: str = "wal", watch_column: str = "") -> None:
    """A database another tool built from SPEC §4: the wqscan layout's queue with an extra
    column and its unique index of pending rows under a name of its own, the seed's
    8-column watch_folders (with a watch row of `watch_root`, if given; `watch_column`
    declares one more column)."""
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute(SEED_WATCH_TABLE[:-1] + watch_column + ")")
    conn.execute("CREATE TABLE ingestion_queue (queue_id TEXT PRIMARY KEY, "
                 "file_absolute_path TEXT NOT NULL, collection_name TEXT NOT NULL, "
                 "tenant_id TEXT NOT NULL DEFAULT 'default', branch TEXT NOT NULL DEFAULT 'main', "
                 "operation TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 5, "
                 "status TEXT NOT NULL DEFAULT 'pending', queued_timestamp TEXT NOT NULL, "
                 "scheduled_at TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0, "
                 "retry_from TEXT, error_message TEXT, lease_owner TEXT, "
                 "lease_expires_at TEXT, watch_id TEXT, metadata TEXT, extra TEXT)")
    if pending_index:
        conn.execute("CREATE UNIQUE INDEX one_pending ON ingestion_queue "
                     "(file_absolute_path, collection_name) WHERE status = 'pending'")
    if extras:
        conn.execute(SPEC_EXTRAS)
    if watch_root is not None:
        conn.execute(f"INSERT INTO watch_folders ({SEED_WATCH_COLUMNS}) "
                     "VALUES ('seed', ?, 'docs', '[]', '[]', 1, 0.0, 1)", (watch_root,))
    conn.close()


class Db(NamedTuple):
    """A database a test runs against, on either store (`kind`: sqlite or pg)."""

    kind: str
    target: Target

    @property
    def argv(self) -> list[str]:
        """The global options naming it on a wqscan command line."""
        return self.target.argv()

    def environ(self) -> dict[str, str]:
        """The environment naming it, for processes given no --db."""
        return {"WQSCAN_DB": self.target.db, "WQSCAN_PG_SCHEMA": self.target.pg_schema}

    def open(self, create: bool = True) -> Store:
        return Store.open(self.target, create=create)

    def queue(self, status: str | None = None) -> list[dict]:
        """Every queue row (of a status), in claim order."""
        with self.open(create=False) as s:
            return s.queue.rows(status=status)


# -- the queue through the store interface, on either store (fixture `database`) -------------

def any_queue(store: Store, status: str | None = "pending") -> list[dict[str, Any]]:
    """queue(), through the store interface (no SQL of the test's): rows of ingestion_queue
    (by default the pending ones) by path, metadata decoded."""
    rows = sorted(store.queue.rows(status=status),
                  key=lambda r: (r["file_absolute_path"], r["queue_id"]))
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
    return rows


def any_queue_dump(store: Store) -> list[tuple]:
    """queue_dump(), through the store interface: every column of every row (any status)."""
    return [tuple(r.values()) for r in sorted(store.queue.rows(), key=lambda r: r["queue_id"])]


def any_ops(store: Store) -> dict[str, str]:
    """ops(), through the store interface: {relative path: operation} of the pending rows."""
    return {(r["metadata"] or {}).get("relative_path", r["file_absolute_path"]): r["operation"]
            for r in any_queue(store)}


def any_drain(store: Store) -> None:
    """drain(), through the store interface: acknowledge everything pending."""
    with store.write():
        store.queue.remove([r["queue_id"] for r in store.queue.rows(status="pending")])


def any_scanned(store: Store, root: Path, **kw: Any) -> str:
    """scanned(), through the store interface. Returns the watch id."""
    wid = watch(store, root, **kw)
    scan(store, wid)
    any_drain(store)
    return wid


def any_dump(db: "Db") -> list:
    """dump_db() of either store: every table's rows in a stable order (SQLite: and the
    schema version; PostgreSQL: every table of the schema, read with a connection of its
    own, as another program would)."""
    if db.kind != "pg":
        return dump_db(db.target.db)
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(db.target.db, autocommit=True, connect_timeout=10) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (db.target.pg_schema,))]
        out: list = []
        for t in tables:
            rows = conn.execute(pgsql.SQL("SELECT * FROM {}.{}").format(
                pgsql.Identifier(db.target.pg_schema), pgsql.Identifier(t))).fetchall()
            out.append((t, sorted(rows, key=repr)))
        return out


def pending_signals(pid: int) -> int:
    """The process-wide pending signal mask (ShdPnd) of a process; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("ShdPnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0
