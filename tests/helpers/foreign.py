"""Databases other tools built: workspace-qdrant-mcp's state database (its layout is in
docs/workspace-qdrant-mcp.md) with a consumer written to its queue semantics, and a
wqscan-layout database another tool built from the documented tables."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import apsw
import xxhash

#: The columns both versions of that project's ingestion_queue (below) declare.
WQM_QUEUE_COLUMNS = """CREATE TABLE IF NOT EXISTS ingestion_queue (
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
"""
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
""" + WQM_QUEUE_COLUMNS + """\
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
""" + WQM_QUEUE_COLUMNS + """\
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
    """A state database built as workspace-qdrant-mcp builds it
    (docs/workspace-qdrant-mcp.md): its state manager's tables, then its queue schema. With
    `metadata=False` the queue schema runs first, so ingestion_queue is its version (no
    metadata column, errors linked to messages); `extras` adds WQM_EXTRAS; `watch_column`
    declares one more column of watch_folders."""
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
    (docs/workspace-qdrant-mcp.md): it selects rows by priority and queue time, nothing
    marks a row as taken; it applies a row by reading the file as it is now, deletes the row
    by path when done; an error goes into `messages` and the row's retry_count, and at
    max_retries the row is deleted."""

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


# -- a wqscan-layout database another tool built from the documented tables ----------------

SEED_WATCH_COLUMNS = ("watch_id, path, collection, patterns, ignore_patterns, recursive, "
                      "debounce_seconds, enabled")
SEED_WATCH_TABLE = (
    "CREATE TABLE watch_folders (watch_id TEXT PRIMARY KEY, path TEXT NOT NULL, "
    "collection TEXT NOT NULL, patterns TEXT NOT NULL, ignore_patterns TEXT NOT NULL, "
    "recursive INTEGER NOT NULL DEFAULT 1, debounce_seconds REAL NOT NULL DEFAULT 2.0, "
    "enabled INTEGER NOT NULL DEFAULT 1)")
#: More of what another program may hang on the two contract tables.
SEED_EXTRAS = """
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
    """A database another tool built from the documented tables (docs/consuming.md): the
    wqscan layout's queue with an extra
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
        conn.execute(SEED_EXTRAS)
    if watch_root is not None:
        conn.execute(f"INSERT INTO watch_folders ({SEED_WATCH_COLUMNS}) "
                     "VALUES ('seed', ?, 'docs', '[]', '[]', 1, 0.0, 1)", (watch_root,))
    conn.close()
