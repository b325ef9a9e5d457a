"""The schema: wqscan's own objects, the two queue layouts, and how an opened database is
recognised (docs/consuming.md, docs/workspace-qdrant-mcp.md).

A database wqscan created carries its application_id and is wqscan's to migrate. Any
other database is adopted as found: only `wq_` tables (and, on a wqscan-layout queue,
`wq_` indexes) are added to it, inside the first write transaction, so a command that
fails leaves nothing behind; no object of its owner and no header field is ever altered.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import apsw

from ..errors import NotADatabaseError
from ..settings import STORED
from .dialect import SQLITE
from .layouts import Layout, WqmLayout, WqscanLayout

APPLICATION_ID = 0x77717363  # "wqsc": the databases wqscan created
SCHEMA_VERSION = 9  # of wqscan's own objects, kept in wq_meta (and user_version when own)

NOW_SQL = SQLITE.now_sql
UUID4_SQL = SQLITE.uuid_sql

# (name, declaration) of every watch setting; the first eight are the seed's columns. In a
# database wqscan created they are all columns of watch_folders; elsewhere those the table
# lacks live in wq_watch_settings.
WATCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("watch_id", "TEXT PRIMARY KEY"),
    ("path", "TEXT NOT NULL"),
    ("collection", "TEXT NOT NULL"),
    ("patterns", "TEXT NOT NULL DEFAULT '[]'"),
    ("ignore_patterns", "TEXT NOT NULL DEFAULT '[]'"),
    ("recursive", "INTEGER NOT NULL DEFAULT 1"),
    ("debounce_seconds", "REAL NOT NULL DEFAULT 2.0"),
    ("enabled", "INTEGER NOT NULL DEFAULT 1"),
    ("auto_ingest", "INTEGER NOT NULL DEFAULT 1"),
    ("recursive_depth", "INTEGER"),
    ("poll_interval_seconds", "REAL NOT NULL DEFAULT 60"),
    ("created_at", "TEXT"),
    ("updated_at", "TEXT"),
    ("last_scan", "TEXT"),
    ("metadata", "TEXT"),
    ("priority_rules", "TEXT NOT NULL DEFAULT '[]'"),
    ("max_file_size", "INTEGER"),
    ("use_gitignore", "INTEGER NOT NULL DEFAULT 1"),
    ("follow_symlinks", "INTEGER NOT NULL DEFAULT 0"),
    ("check_stat", "TEXT NOT NULL DEFAULT 'auto'"),
    ("threads", "INTEGER"),
    ("scan_timeout_seconds", "REAL"),
    ("config_file", "TEXT"),  # the YAML file that defines the watch
    ("config_retired", "INTEGER NOT NULL DEFAULT 0"),  # disabled because it left the file
)
# the columns a watch is stored in: a setting without a column of its own here lives in
# wq_watch_settings (settings.py declares them)
WATCH_SETTINGS = frozenset(c for c, _ in WATCH_COLUMNS) | {str(s.column) for s in STORED}

# The wqscan layout's ingestion_queue (docs/consuming.md).
QUEUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("queue_id", f"TEXT PRIMARY KEY NOT NULL DEFAULT ({UUID4_SQL})"),
    ("file_absolute_path", "TEXT NOT NULL"),
    ("collection_name", "TEXT NOT NULL"),
    ("tenant_id", "TEXT NOT NULL DEFAULT 'default'"),
    ("branch", "TEXT NOT NULL DEFAULT 'main'"),
    ("operation", "TEXT NOT NULL CHECK (operation IN ('ingest', 'update', 'delete'))"),
    ("priority", "INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10)"),
    ("status", "TEXT NOT NULL DEFAULT 'pending' "
               "CHECK (status IN ('pending', 'in_progress', 'done', 'failed'))"),
    ("queued_timestamp", f"TEXT NOT NULL DEFAULT ({NOW_SQL})"),
    ("scheduled_at", f"TEXT NOT NULL DEFAULT ({NOW_SQL})"),
    ("retry_count", "INTEGER NOT NULL DEFAULT 0"),
    ("retry_from", "TEXT"),
    ("error_message", "TEXT"),
    ("lease_owner", "TEXT"),
    ("lease_expires_at", "TEXT"),
    ("watch_id", "TEXT"),
    ("metadata", "TEXT"),
)
QUEUE_NAMES = frozenset(c for c, _ in QUEUE_COLUMNS)
# What the workspace-qdrant-mcp layout's queue must hold for wqscan to write it.
WQM_QUEUE_NEEDS = ("file_absolute_path", "collection_name", "tenant_id", "branch", "operation",
                   "priority", "queued_timestamp")
WATCH_NEEDS = ("watch_id", "path", "collection")

STATS_COUNTERS = ("events_received", "events_processed", "events_filtered", "queue_errors",
                  "scans_ok", "scans_failed")
STATS_LAST_COUNTS = ("last_files", "last_dirs", "last_filtered", "last_bytes_hashed",
                     "last_ingest", "last_update", "last_delete", "last_deferred", "last_errors")
STATS_LAST = ("last_scan_start", "last_scan_duration", "last_result", "last_reason",
              *STATS_LAST_COUNTS, "last_backend")
# a watch's last scan started by a git hook (wq_hook_runs)
HOOK_RUN_FIELDS = ("hook", "repository", "started_at", "result", "reason", "log")
# their declared types: SQLite takes any value in a column without one; PostgreSQL does not
_STATS_LAST_TYPES = {"last_scan_duration": "REAL", **{c: "INTEGER" for c in STATS_LAST_COUNTS}}

# wqscan's own tables, in every database it uses.
OWN_TABLES = ("wq_meta", "wq_snapshot", "wq_watch_stats", "wq_leases", "wq_watch_settings",
              "wq_labels", "wq_hook_runs", "wq_dircache")
OWN_DDL = (
    "CREATE TABLE IF NOT EXISTS wq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS wq_snapshot (watch_id TEXT NOT NULL, dir TEXT NOT NULL, "
    "nfiles INTEGER NOT NULL, entries BLOB NOT NULL, UNIQUE (watch_id, dir))",
    "CREATE TABLE IF NOT EXISTS wq_watch_stats (watch_id TEXT PRIMARY KEY, "
    + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in STATS_COUNTERS)
    + ", consecutive_failures INTEGER NOT NULL DEFAULT 0, "
    + ", ".join(f"{c} {_STATS_LAST_TYPES.get(c, 'TEXT')}" for c in STATS_LAST)
    + ", circuit_open_until TEXT)",
    "CREATE TABLE IF NOT EXISTS wq_leases (watch_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "acquired_at TEXT NOT NULL, expires_at TEXT NOT NULL)",
    # the settings a watch_folders table wqscan did not create has no column for (JSON)
    "CREATE TABLE IF NOT EXISTS wq_watch_settings (watch_id TEXT PRIMARY KEY, "
    "settings TEXT NOT NULL)",
    # v7: per snapshot directory, the tenant and branch its files were last queued with
    "CREATE TABLE IF NOT EXISTS wq_labels (watch_id TEXT NOT NULL, dir TEXT NOT NULL, "
    "labels TEXT NOT NULL, PRIMARY KEY (watch_id, dir))",
    # v8: each watch's last scan started by a git hook, and where that hook logs
    "CREATE TABLE IF NOT EXISTS wq_hook_runs (watch_id TEXT PRIMARY KEY, "
    + ", ".join(f"{c} TEXT" for c in HOOK_RUN_FIELDS) + ")",
    # v9: the directory cache (scan/listings.py)
    "CREATE TABLE IF NOT EXISTS wq_dircache (watch_id TEXT NOT NULL, dir TEXT NOT NULL, "
    "listing BLOB NOT NULL, PRIMARY KEY (watch_id, dir))",
)
# Index names on a queue wqscan created; on an adopted one its own indexes get the prefix.
OWN_INDEXES = ("ingestion_queue_pending", "ingestion_queue_claim", "ingestion_queue_active")
_ADOPTED_INDEXES = ("", "wq_ingestion_queue_claim", "wq_ingestion_queue_active")


class Found(NamedTuple):
    """What opening a database found: `new` (no tables), `own` or `adopted`; the version
    of wqscan's objects (None while none exist); the layout (None when new)."""

    kind: str
    version: int | None
    layout: Layout | None


def inspect(conn: apsw.Connection, path: str) -> Found:
    """Recognise a database without writing to it; refuse one wqscan cannot use as it is."""
    app = conn.pragma("application_id")
    tables = _tables(conn)
    if app == APPLICATION_ID:
        version = own_version(conn, tables)
        if version > SCHEMA_VERSION:
            raise NotADatabaseError(f"{path} has wqscan schema version {version}; this "
                                    f"wqscan knows up to {SCHEMA_VERSION} (upgrade wqscan)")
        return Found("own", version, _layout(conn, path, tables, own=True))
    if app != 0:
        raise NotADatabaseError(f"{path} belongs to another application (application_id "
                                f"{app:#x}); not a wqscan database")
    if not tables:
        return Found("new", None, None)
    if not tables & {"watch_folders", "ingestion_queue"}:
        raise NotADatabaseError(f"{path} is an SQLite database of something else (no "
                                "watch_folders or ingestion_queue table); not a wqscan database")
    for needed in ("watch_folders", "ingestion_queue"):
        if needed not in tables:
            raise NotADatabaseError(f"{path} has no {needed} table, and wqscan creates tables "
                                    "only in a database of its own")
    version = int(_meta(conn, "schema_version") or 0) if "wq_meta" in tables else None
    if version is not None and version > SCHEMA_VERSION:
        raise NotADatabaseError(f"{path} has wqscan schema version {version}; this wqscan "
                                f"knows up to {SCHEMA_VERSION} (upgrade wqscan)")
    return Found("adopted", version, _layout(conn, path, tables, own=False))


def own_version(conn: apsw.Connection, tables: set[str] | None = None) -> int:
    """The schema version of a database wqscan created (before version 6: user_version)."""
    tables = _tables(conn) if tables is None else tables
    if "wq_meta" in tables:
        return int(_meta(conn, "schema_version") or 0)
    return conn.pragma("user_version")


def _layout(conn: apsw.Connection, path: str, tables: set[str], own: bool) -> Layout:
    watch_info = conn.execute("PRAGMA table_info(watch_folders)").fetchall()
    watch = {r[1] for r in watch_info}
    required = tuple(r[1] for r in watch_info if r[3] and r[4] is None and not r[5])
    missing = [c for c in WATCH_NEEDS if c not in watch]
    if missing:
        raise NotADatabaseError(f"{path}: watch_folders has no column {', '.join(missing)}")
    info = conn.execute("PRAGMA table_info(ingestion_queue)").fetchall()
    queue = {r[1] for r in info}
    keys = [r[1] for r in info if r[5]]
    triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                            "AND tbl_name = 'ingestion_queue'").fetchall()[0][0] > 0
    if QUEUE_NAMES <= queue:
        names = OWN_INDEXES if own else (_pending_index(conn, path), *_ADOPTED_INDEXES[1:])
        return WqscanLayout(own, frozenset(watch), frozenset(queue), *names, triggers,
                            required)
    if keys == ["file_absolute_path"]:
        missing = [c for c in WQM_QUEUE_NEEDS if c not in queue]
        if missing:
            raise NotADatabaseError(f"{path}: ingestion_queue (workspace-qdrant-mcp layout) "
                                    f"has no column {', '.join(missing)}")
        return WqmLayout(own, frozenset(watch), frozenset(queue), queue_triggers=triggers,
                         required_watch_columns=required)
    lacks = ", ".join(c for c, _ in QUEUE_COLUMNS if c not in queue)
    raise NotADatabaseError(f"{path}: ingestion_queue is in neither layout: it lacks {lacks} "
                            "(wqscan) and file_absolute_path is not its primary key "
                            "(workspace-qdrant-mcp)")


def _pending_index(conn: apsw.Connection, path: str) -> str:
    """The unique index of pending rows on an adopted wqscan-layout queue (one pending row
    per file needs one); wqscan will not add a constraint to a table it did not create."""
    for _, name, unique, _, partial in conn.execute("PRAGMA index_list(ingestion_queue)"):
        if not (unique and partial):
            continue
        cols = [r[2] for r in conn.execute(f"PRAGMA index_info({_quote(name)})")]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                           (name,)).fetchall()
        if cols == ["file_absolute_path", "collection_name"] and sql and re.search(
                r"\bwhere\s+\"?status\"?\s*=\s*'pending'\s*;?\s*$", sql[0][0] or "", re.I):
            return name
    raise NotADatabaseError(f"{path}: ingestion_queue has no unique index on "
                            "(file_absolute_path, collection_name) WHERE status = 'pending'")


def create_wqscan_layout(conn: apsw.Connection) -> None:
    """The contract tables of the wqscan layout, in a new database."""
    conn.execute(create_table_sql("watch_folders", WATCH_COLUMNS))
    conn.execute(create_table_sql("ingestion_queue", QUEUE_COLUMNS))
    _create_queue_indexes(conn, OWN_INDEXES, unique_pending=True)


def install(conn: apsw.Connection, layout: Layout) -> None:
    """Create or bring up to date wqscan's own objects (inside the caller's transaction)."""
    if layout.own:
        _upgrade_own(conn)
    for ddl in OWN_DDL:
        conn.execute(ddl)
    if layout.adds_queue_indexes:
        _create_queue_indexes(conn, _ADOPTED_INDEXES, unique_pending=False)
    conn.execute("INSERT INTO wq_meta (key, value) VALUES ('schema_version', ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (str(SCHEMA_VERSION),))
    if layout.own:
        conn.pragma("user_version", SCHEMA_VERSION)
        conn.pragma("application_id", APPLICATION_ID)


def _upgrade_own(conn: apsw.Connection) -> None:
    """Bring the tables of a database wqscan created by an older version up to date: the
    watch columns added since, the circuit breaker's column (each step only adds)."""
    tables = _tables(conn)
    if "watch_folders" in tables:
        have = {r[1] for r in conn.execute("PRAGMA table_info(watch_folders)")}
        for name, decl in WATCH_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE watch_folders ADD COLUMN {name} {decl}")
    if "ingestion_queue" in tables:
        _create_queue_indexes(conn, OWN_INDEXES, unique_pending=True)
    if "wq_watch_stats" in tables and "circuit_open_until" not in {
            r[1] for r in conn.execute("PRAGMA table_info(wq_watch_stats)")}:
        conn.execute("ALTER TABLE wq_watch_stats ADD COLUMN circuit_open_until TEXT")


def _create_queue_indexes(conn: apsw.Connection, names: tuple[str, str, str],
                          unique_pending: bool) -> None:
    pending, claim, active = names
    if unique_pending:
        conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {pending} ON ingestion_queue "
                     "(file_absolute_path, collection_name) WHERE status = 'pending'")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {claim} ON ingestion_queue "
                 "(status, priority DESC, scheduled_at, queued_timestamp)")
    # claims look up a file's row in progress; a partial index costs scans nothing
    conn.execute(f"CREATE INDEX IF NOT EXISTS {active} ON ingestion_queue "
                 "(file_absolute_path, collection_name) WHERE status = 'in_progress'")


def has_own_tables(conn: apsw.Connection) -> bool:
    """Whether wqscan's own tables exist in the database (another process may have made
    them since this connection found none)."""
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                        "name = 'wq_meta'").fetchall()[0][0] > 0


def create_table_sql(name: str, columns: tuple[tuple[str, str], ...]) -> str:
    return f"CREATE TABLE {name} ({', '.join(f'{c} {d}' for c, d in columns)})"


def _tables(conn: apsw.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _meta(conn: apsw.Connection, key: str) -> str | None:
    rows = conn.execute("SELECT value FROM wq_meta WHERE key = ?", (key,)).fetchall()
    return rows[0][0] if rows else None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
