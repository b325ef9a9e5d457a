"""The SQLite store (apsw): schema, migrations, transactions, busy retries. All SQL lives here.

Tables: `watch_folders` and `ingestion_queue` (the contract of SPEC §4; seed
layouts are migrated in place), `wq_snapshot` (one row per scanned directory:
its entries packed by the scanner), `wq_watch_stats` (per-watch counters and
the last scan). The schema version is `PRAGMA user_version`.
"""
from __future__ import annotations

import os
import stat
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import apsw

from .errors import DatabaseBusy, DatabaseUnwritable, NotADatabaseError, WqscanError

APPLICATION_ID = 0x77717363  # "wqsc"
SCHEMA_VERSION = 5
BUSY_RETRIES = (0.5, 1.0, 2.0)  # seconds slept before each retry of a busy write
BUSY_TIMEOUT_MS = 200  # SQLite's own wait before a write counts as busy
CACHE_KIB = 16 * 1024  # page cache of wqscan's connection (allocated as used)
PAGE_SIZE = 16384  # of new databases: rows of long paths and JSON metadata
WAL_CHECKPOINT_PAGES = 4096  # 64 MiB of WAL
_HEADER = b"SQLite format 3\x00"
# SQLite's refusals to write that retrying does not cure
_UNWRITABLE = (apsw.FullError, apsw.ReadOnlyError, apsw.IOError, apsw.CantOpenError)

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
_UUID4 = ("lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
          "substr(lower(hex(randomblob(2))), 2) || '-' || "
          "substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2)"
          " || '-' || lower(hex(randomblob(6)))")

_SEED_DEFAULTS = {"queue_id": f"({_UUID4})", "tenant_id": "'default'", "branch": "'main'",
                  "priority": "5", "status": "'pending'", "queued_timestamp": _NOW,
                  "scheduled_at": _NOW, "retry_count": "0"}

# (name, declaration) of every watch_folders column; the first eight are the seed's.
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
    ("threads", "INTEGER"),  # schema version 2
    ("scan_timeout_seconds", "REAL"),  # schema version 3
    ("config_file", "TEXT"),  # schema version 3: the YAML file that defines the watch
    ("config_retired", "INTEGER NOT NULL DEFAULT 0"),  # v4: disabled because it left the file
)

QUEUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("queue_id", f"TEXT PRIMARY KEY NOT NULL DEFAULT ({_UUID4})"),
    ("file_absolute_path", "TEXT NOT NULL"),
    ("collection_name", "TEXT NOT NULL"),
    ("tenant_id", "TEXT NOT NULL DEFAULT 'default'"),
    ("branch", "TEXT NOT NULL DEFAULT 'main'"),
    ("operation", "TEXT NOT NULL CHECK (operation IN ('ingest', 'update', 'delete'))"),
    ("priority", "INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10)"),
    ("status", "TEXT NOT NULL DEFAULT 'pending' "
               "CHECK (status IN ('pending', 'in_progress', 'done', 'failed'))"),
    ("queued_timestamp", f"TEXT NOT NULL DEFAULT ({_NOW})"),
    ("scheduled_at", f"TEXT NOT NULL DEFAULT ({_NOW})"),
    ("retry_count", "INTEGER NOT NULL DEFAULT 0"),
    ("retry_from", "TEXT"),
    ("error_message", "TEXT"),
    ("lease_owner", "TEXT"),
    ("lease_expires_at", "TEXT"),
    ("watch_id", "TEXT"),
    ("metadata", "TEXT"),
)

STATS_COUNTERS = ("events_received", "events_processed", "events_filtered", "queue_errors",
                  "scans_ok", "scans_failed")
STATS_LAST = ("last_scan_start", "last_scan_duration", "last_result", "last_reason",
              "last_files", "last_dirs", "last_filtered", "last_bytes_hashed", "last_ingest",
              "last_update", "last_delete", "last_deferred", "last_errors", "last_backend")


def _create_table(name: str, columns: Sequence[tuple[str, str]]) -> str:
    return f"CREATE TABLE {name} ({', '.join(f'{c} {d}' for c, d in columns)})"


class Store:
    """One connection to a wqscan database, opened, validated and migrated."""

    def __init__(self, conn: apsw.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str) -> "Store":
        """Open (creating it and its directory if needed) and migrate the database at `path`."""
        _refuse_foreign_file(path)
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            conn = apsw.Connection(path)
        except (OSError, apsw.Error) as e:
            raise NotADatabaseError(f"cannot open database {path}: {e}") from None
        store = cls(conn, path)
        try:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            version = store._check_identity()
            if not conn.readonly("main"):
                if version == 0 and not store._tables():
                    conn.pragma("page_size", PAGE_SIZE)  # takes effect on a new file only
                conn.pragma("journal_mode", "wal")
                conn.pragma("synchronous", "normal")
                # Let the WAL grow over a first scan's batches instead of copying every
                # batch's pages into the database right after it: hot index pages then
                # reach the database once.
                conn.pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
            # A batch of queue rows dirties pages all over the random-keyed queue_id index;
            # a cache that holds them avoids spilling and re-reading them mid-transaction.
            conn.pragma("cache_size", -CACHE_KIB)
            store._migrate(version)
        except apsw.NotADBError:
            conn.close()
            raise NotADatabaseError(f"{path} is not a wqscan database") from None
        except apsw.Error as e:
            conn.close()
            raise WqscanError(f"cannot use database {path}: {e}") from None
        except WqscanError:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    def _check_identity(self) -> int:
        """Refuse databases of other programs; returns the wqscan schema version found
        (0 for a new database or one holding only seed tables)."""
        app = self.conn.pragma("application_id")
        version = self.conn.pragma("user_version")
        if app == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise NotADatabaseError(f"{self.path} has wqscan schema version {version}; "
                                        f"this wqscan knows up to {SCHEMA_VERSION} "
                                        "(upgrade wqscan)")
            return version
        if app != 0:
            raise NotADatabaseError(f"{self.path} belongs to another application "
                                    f"(application_id {app:#x}); not a wqscan database")
        tables = self._tables()
        if tables and not tables & {"watch_folders", "ingestion_queue"}:
            raise NotADatabaseError(f"{self.path} is an SQLite database of something else "
                                    "(no wqscan tables); not a wqscan database")
        return 0  # a seed layout's user_version, if any, is not ours

    def _tables(self) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")]

    def _migrate(self, version: int) -> None:
        if version == SCHEMA_VERSION:
            return
        if self.conn.readonly("main"):
            raise WqscanError(f"database {self.path} is read-only and needs a schema update")
        with self.write():
            if self.conn.pragma("application_id") == APPLICATION_ID:
                version = self.conn.pragma("user_version")  # another process may have done it
            if version == SCHEMA_VERSION:
                return
            if version < 1:
                self._migrate_v1()
            if version < 2:
                self._add_watch_columns()  # v2: threads
            if version < 3:
                self._migrate_v3()
            if version < 4:
                self._add_watch_columns()  # v4: config_retired
            if version < 5:
                self._migrate_v5()
            self.conn.pragma("user_version", SCHEMA_VERSION)
            self.conn.pragma("application_id", APPLICATION_ID)

    def _migrate_v1(self) -> None:
        """Create the tables; bring seed layouts of the two contract tables up to date."""
        tables = self._tables()
        if "watch_folders" in tables:
            self._add_watch_columns()
        else:
            self.conn.execute(_create_table("watch_folders", WATCH_COLUMNS))
        if "ingestion_queue" in tables:
            have = self._columns("ingestion_queue")
            if set(have) != {c for c, _ in QUEUE_COLUMNS}:
                self._rebuild_queue(have)
        else:
            self.conn.execute(_create_table("ingestion_queue", QUEUE_COLUMNS))
        self.conn.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS ingestion_queue_pending ON ingestion_queue "
            "(file_absolute_path, collection_name) WHERE status = 'pending';"
            "CREATE INDEX IF NOT EXISTS ingestion_queue_claim ON ingestion_queue "
            "(status, priority DESC, scheduled_at, queued_timestamp);"
            "CREATE TABLE wq_snapshot (watch_id TEXT NOT NULL, dir TEXT NOT NULL,"
            " nfiles INTEGER NOT NULL, entries BLOB NOT NULL, UNIQUE (watch_id, dir));"
            "CREATE TABLE wq_watch_stats (watch_id TEXT PRIMARY KEY, "
            + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in STATS_COUNTERS)
            + ", consecutive_failures INTEGER NOT NULL DEFAULT 0, "
            + ", ".join(f"{c}" for c in STATS_LAST) + ");")

    def _migrate_v3(self) -> None:
        """Leases, the circuit breaker, scan timeouts, watches defined by a config file."""
        self._add_watch_columns()
        if "circuit_open_until" not in self._columns("wq_watch_stats"):
            self.conn.execute("ALTER TABLE wq_watch_stats ADD COLUMN circuit_open_until TEXT")
        self.conn.execute("CREATE TABLE IF NOT EXISTS wq_leases (watch_id TEXT PRIMARY KEY, "
                          "owner TEXT NOT NULL, acquired_at TEXT NOT NULL, "
                          "expires_at TEXT NOT NULL)")

    def _migrate_v5(self) -> None:
        """Claims look up a file's in-progress row; the partial index costs scans nothing."""
        self.conn.execute("CREATE INDEX IF NOT EXISTS ingestion_queue_active ON ingestion_queue "
                          "(file_absolute_path, collection_name) WHERE status = 'in_progress'")

    def _add_watch_columns(self) -> None:
        """Add the watch_folders columns a seed or older layout lacks."""
        have = set(self._columns("watch_folders"))
        for name, decl in WATCH_COLUMNS:
            if name not in have:
                self.conn.execute(f"ALTER TABLE watch_folders ADD COLUMN {name} {decl}")

    def _rebuild_queue(self, have: list[str]) -> None:
        """Recreate a seed `ingestion_queue` with the contract's columns, keeping its rows."""
        common = [c for c, _ in QUEUE_COLUMNS if c in have]
        self.conn.execute("ALTER TABLE ingestion_queue RENAME TO wq_seed_ingestion_queue")
        self.conn.execute(_create_table("ingestion_queue", QUEUE_COLUMNS))
        # NULLs in seed rows (a seed INSERT gives no queue_id) take the column defaults.
        values = ", ".join(f"coalesce({c}, {_SEED_DEFAULTS[c]})" if c in _SEED_DEFAULTS else c
                           for c in common)
        self.conn.execute(f"INSERT INTO ingestion_queue ({', '.join(common)}) "
                          f"SELECT {values} FROM wq_seed_ingestion_queue")
        self.conn.execute("DROP TABLE wq_seed_ingestion_queue")

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def write(self, retries: Sequence[float] = BUSY_RETRIES) -> Iterator["Store"]:
        """One write transaction (BEGIN IMMEDIATE), retried after each of `retries` seconds
        while another writer holds the lock.

        Nested use joins the outer transaction.
        """
        if self.conn.in_transaction:
            yield self
            return
        for delay in (*retries, None):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except (apsw.BusyError, apsw.LockedError):
                if delay is None:
                    raise DatabaseBusy(f"database {self.path} is locked by another writer "
                                       f"(retried {len(retries)} times)") from None
                time.sleep(delay)
            except _UNWRITABLE as e:
                raise self._unwritable(e) from None
        try:
            yield self
        except BaseException as e:
            if self.conn.in_transaction:  # SQLite itself rolls back on some errors
                self.conn.execute("ROLLBACK")
            if isinstance(e, _UNWRITABLE):
                raise self._unwritable(e) from None
            raise
        try:
            self.conn.execute("COMMIT")
        except (apsw.BusyError, apsw.LockedError):
            self.conn.execute("ROLLBACK")
            raise DatabaseBusy(f"database {self.path} stayed busy at commit") from None
        except _UNWRITABLE as e:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise self._unwritable(e) from None

    def _unwritable(self, e: apsw.Error) -> DatabaseUnwritable:
        """The one-line error for a write SQLite refused, naming the database."""
        why = {apsw.FullError: "the disk holding it is full",
               apsw.ReadOnlyError: "it is read-only"}.get(type(e), str(e))
        return DatabaseUnwritable(f"cannot write database {self.path}: {why}; nothing of "
                                  "this transaction was written")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        rows, names = [], None
        for r in cur:
            if names is None:
                names = [d[0] for d in cur.get_description()]
            rows.append(dict(zip(names, r)))
        return rows

    # -- watches ---------------------------------------------------------------------

    def watch_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM watch_folders ORDER BY watch_id")

    def watch_row(self, watch_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM watch_folders WHERE watch_id = ?", (watch_id,))
        return rows[0] if rows else None

    def watch_ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT watch_id FROM watch_folders")}

    def insert_watch(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.conn.execute(f"INSERT INTO watch_folders ({cols}) VALUES ({marks})",
                          tuple(row.values()))

    def update_watch(self, watch_id: str, fields: dict[str, Any]) -> None:
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.conn.execute(f"UPDATE watch_folders SET {sets} WHERE watch_id = ?",
                          (*fields.values(), watch_id))

    def delete_watch(self, watch_id: str) -> None:
        """Remove a watch with its snapshot and statistics (queue rows stay)."""
        self.conn.execute("DELETE FROM watch_folders WHERE watch_id = ?;"
                          "DELETE FROM wq_snapshot WHERE watch_id = ?;"
                          "DELETE FROM wq_watch_stats WHERE watch_id = ?",
                          (watch_id, watch_id, watch_id))

    # -- snapshot --------------------------------------------------------------------

    def snapshot_rows(self, watch_id: str, scope: Sequence[str] = ()) -> Iterator[tuple[str, bytes]]:
        """(key, blob) rows in key order: all of them, or for a scope (path components)
        the rows of its ancestors and of its subtree."""
        if not scope:
            return self.conn.execute("SELECT dir, entries FROM wq_snapshot WHERE watch_id = ? "
                                     "ORDER BY dir", (watch_id,))
        ancestors = ["/".join(scope[:i]) + "/" if i else "" for i in range(len(scope))]
        key = "/".join(scope) + "/"
        marks = ", ".join("?" for _ in ancestors)
        return self.conn.execute(
            f"SELECT dir, entries FROM wq_snapshot WHERE watch_id = ? AND (dir IN ({marks}) "
            "OR (dir >= ? AND dir < ?)) ORDER BY dir",
            (watch_id, *ancestors, key, _key_end(key)))

    def snapshot_files(self, watch_id: str, key: str = "") -> int:
        """Number of files recorded at or below `key`."""
        if not key:
            sql, args = "SELECT total(nfiles) FROM wq_snapshot WHERE watch_id = ?", (watch_id,)
        else:
            sql = ("SELECT total(nfiles) FROM wq_snapshot WHERE watch_id = ? AND dir >= ? "
                   "AND dir < ?")
            args = (watch_id, key, _key_end(key))
        return int(self.conn.execute(sql, args).fetchall()[0][0])

    def write_snapshot(self, watch_id: str, dropped: Iterable[str],
                       rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Delete the rows of the `dropped` directories, then upsert (key, nfiles, blob)."""
        self.conn.executemany("DELETE FROM wq_snapshot WHERE watch_id = ? AND dir = ?",
                              [(watch_id, key) for key in dropped])
        self.conn.executemany(
            "INSERT INTO wq_snapshot (watch_id, dir, nfiles, entries) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (watch_id, dir) DO UPDATE SET nfiles = excluded.nfiles, "
            "entries = excluded.entries", [(watch_id, *row) for row in rows])

    # -- queue, producer side --------------------------------------------------------

    def pending_op(self, path: str, collection: str) -> tuple[str, str, int, str | None] | None:
        """(queue_id, operation, priority, metadata) of the pending row for a file, if any."""
        for row in self.conn.execute(
                "SELECT queue_id, operation, priority, metadata FROM ingestion_queue "
                "WHERE file_absolute_path = ? AND collection_name = ? AND status = 'pending'",
                (path, collection)):
            return row
        return None

    def pending_ops(self, paths: Sequence[str], collection: str
                    ) -> dict[str, tuple[str, str, int, str | None]]:
        """pending_op for many files at once, by path."""
        found = {}
        for i in range(0, len(paths), 500):
            part = paths[i:i + 500]
            marks = ", ".join("?" for _ in part)
            for path, *rest in self.conn.execute(
                    "SELECT file_absolute_path, queue_id, operation, priority, metadata "
                    "FROM ingestion_queue INDEXED BY ingestion_queue_pending "
                    "WHERE status = 'pending' AND collection_name = ? "
                    f"AND file_absolute_path IN ({marks})", (collection, *part)):
                found[path] = tuple(rest)
        return found

    def insert_ops(self, rows: Sequence[tuple]) -> set[str] | None:
        """Insert pending rows (queue_id, path, collection, tenant, branch, operation,
        priority, watch_id, metadata, queued_timestamp, scheduled_at) unless the file has
        a pending row already. Returns None when every row went in, else the set of the
        queue_ids that did."""
        before = self.conn.total_changes()
        self.conn.executemany(
            "INSERT INTO ingestion_queue (queue_id, file_absolute_path, collection_name, "
            "tenant_id, branch, operation, priority, watch_id, metadata, queued_timestamp, "
            "scheduled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (file_absolute_path, collection_name) WHERE status = 'pending' "
            "DO NOTHING", rows)
        if self.conn.total_changes() - before == len(rows):
            return None
        ids = [r[0] for r in rows]
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            marks = ", ".join("?" for _ in part)
            found.update(r[0] for r in self.conn.execute(
                f"SELECT queue_id FROM ingestion_queue WHERE queue_id IN ({marks})", part))
        return found

    def merge_ops(self, rows: Iterable[tuple[str, int, str, str, str | None, str, str]]) -> None:
        """Overwrite pending rows with coalesced operations: (operation, priority, tenant,
        branch, watch_id, metadata, queue_id); ids and queued times stay."""
        self.conn.executemany("UPDATE ingestion_queue SET operation = ?, priority = ?, "
                              "tenant_id = ?, branch = ?, watch_id = ?, metadata = ? "
                              "WHERE queue_id = ?", rows)

    def set_op_metadata(self, queue_id: str, metadata: str) -> None:
        self.conn.execute("UPDATE ingestion_queue SET metadata = ? WHERE queue_id = ? "
                          "AND status = 'pending'", (metadata, queue_id))

    def delete_ops(self, queue_ids: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM ingestion_queue WHERE queue_id = ?",
                              [(q,) for q in queue_ids])

    def queue_depth(self) -> list[tuple[str, str, int]]:
        """(status, operation, rows) for every combination present."""
        return self.conn.execute("SELECT status, operation, count(*) FROM ingestion_queue "
                                 "GROUP BY status, operation ORDER BY status, operation"
                                 ).fetchall()

    # -- queue, consumer side --------------------------------------------------------

    def claimable_ops(self, now: str, n: int, collection: str | None, tenant: str | None
                      ) -> list[dict[str, Any]]:
        """Up to n rows of each kind a claim may take, in claim order: due pending rows of
        files with no row in progress, and due in-progress rows whose lease expired (or
        that never had one)."""
        where, args = "", []
        for column, value in (("collection_name", collection), ("tenant_id", tenant)):
            if value is not None:
                where += f" AND q.{column} = ?"
                args.append(value)
        order = " ORDER BY q.priority DESC, q.scheduled_at, q.queued_timestamp LIMIT ?"
        pending = self._rows(
            "SELECT * FROM ingestion_queue AS q INDEXED BY ingestion_queue_claim "
            "WHERE q.status = 'pending' AND q.scheduled_at <= ?" + where +
            " AND NOT EXISTS (SELECT 1 FROM ingestion_queue AS a WHERE a.status = 'in_progress'"
            " AND a.file_absolute_path = q.file_absolute_path"
            " AND a.collection_name = q.collection_name)" + order, (now, *args, n))
        expired = self._rows(
            "SELECT * FROM ingestion_queue AS q WHERE q.status = 'in_progress' "
            "AND q.scheduled_at <= ?1 AND (q.lease_expires_at IS NULL "
            "OR q.lease_expires_at <= ?1)" + where +
            " AND NOT EXISTS (SELECT 1 FROM ingestion_queue AS a WHERE a.status = 'in_progress'"
            " AND a.file_absolute_path = q.file_absolute_path"
            " AND a.collection_name = q.collection_name AND a.lease_expires_at > ?1)"
            + order, (now, *args, n))
        return pending + expired

    def mark_claimed(self, queue_ids: Sequence[str], owner: str, expires: str) -> None:
        self.conn.executemany("UPDATE ingestion_queue SET status = 'in_progress', "
                              "lease_owner = ?, lease_expires_at = ? WHERE queue_id = ?",
                              [(owner, expires, q) for q in queue_ids])

    def queue_rows(self, status: str | None = None, limit: int | None = None,
                   queue_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Queue rows in claim order, optionally of one status, some ids, at most `limit`."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if queue_ids is not None:
            where.append(f"queue_id IN ({', '.join('?' for _ in queue_ids)})")
            args.extend(queue_ids)
        sql = "SELECT * FROM ingestion_queue" + (" WHERE " + " AND ".join(where) if where
                                                 else "")
        sql += " ORDER BY priority DESC, scheduled_at, queued_timestamp, queue_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._rows(sql, args)

    def pending_row(self, path: str, collection: str) -> dict[str, Any] | None:
        """The whole pending row of a file, if any."""
        rows = self._rows("SELECT * FROM ingestion_queue WHERE file_absolute_path = ? "
                          "AND collection_name = ? AND status = 'pending'", (path, collection))
        return rows[0] if rows else None

    def delete_claimed(self, queue_id: str, owner: str) -> bool:
        """Delete a row held in progress by `owner`; False when it is not (any more)."""
        before = self.conn.total_changes()
        self.conn.execute("DELETE FROM ingestion_queue WHERE queue_id = ? "
                          "AND status = 'in_progress' AND lease_owner = ?", (queue_id, owner))
        return self.conn.total_changes() > before

    def set_op_fields(self, queue_id: str, fields: dict[str, Any]) -> None:
        """Overwrite columns of one queue row."""
        unknown = set(fields) - {c for c, _ in QUEUE_COLUMNS}
        if unknown:
            raise ValueError(f"not queue columns: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.conn.execute(f"UPDATE ingestion_queue SET {sets} WHERE queue_id = ?",
                          (*fields.values(), queue_id))

    def purge_ops(self, status: str) -> int:
        """Delete every row of a status; returns how many."""
        before = self.conn.total_changes()
        self.conn.execute("DELETE FROM ingestion_queue WHERE status = ?", (status,))
        return self.conn.total_changes() - before

    def queue_times(self, now: str) -> dict[str, Any]:
        """Due and waiting pending rows, expired leases, and the oldest pending row's time."""
        row = self.conn.execute(
            "SELECT sum(status = 'pending' AND scheduled_at <= ?1), "
            "sum(status = 'pending' AND scheduled_at > ?1), "
            "sum(status = 'in_progress' AND (lease_expires_at IS NULL "
            "OR lease_expires_at <= ?1)), "
            "min(CASE WHEN status = 'pending' THEN queued_timestamp END) "
            "FROM ingestion_queue", (now,)).fetchone()
        return {"due": row[0] or 0, "scheduled_later": row[1] or 0,
                "expired_leases": row[2] or 0, "oldest_pending": row[3]}

    # -- leases ----------------------------------------------------------------------

    def lease(self, watch_id: str) -> tuple[str, str] | None:
        """(owner, expires_at) of the lease on a watch, if any."""
        for row in self.conn.execute("SELECT owner, expires_at FROM wq_leases WHERE watch_id = ?",
                                     (watch_id,)):
            return row
        return None

    def lease_details(self, watch_id: str) -> tuple[str, str] | None:
        """(owner, acquired_at) of the lease on a watch, if any."""
        for row in self.conn.execute("SELECT owner, acquired_at FROM wq_leases "
                                     "WHERE watch_id = ?", (watch_id,)):
            return row
        return None

    def put_lease(self, watch_id: str, owner: str, now: str, expires: str) -> None:
        self.conn.execute("INSERT INTO wq_leases (watch_id, owner, acquired_at, expires_at) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (watch_id) DO UPDATE SET "
                          "owner = excluded.owner, acquired_at = excluded.acquired_at, "
                          "expires_at = excluded.expires_at", (watch_id, owner, now, expires))

    def renew_lease(self, watch_id: str, owner: str, expires: str) -> None:
        self.conn.execute("UPDATE wq_leases SET expires_at = ? WHERE watch_id = ? AND owner = ?",
                          (expires, watch_id, owner))

    def drop_lease(self, watch_id: str, owner: str) -> None:
        self.conn.execute("DELETE FROM wq_leases WHERE watch_id = ? AND owner = ?",
                          (watch_id, owner))

    # -- statistics ------------------------------------------------------------------

    def stats_row(self, watch_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM wq_watch_stats WHERE watch_id = ?", (watch_id,))
        return rows[0] if rows else None

    def add_stats(self, watch_id: str, counters: dict[str, int]) -> None:
        """Add to the persistent counters of a watch."""
        self.conn.execute("INSERT INTO wq_watch_stats (watch_id) VALUES (?) "
                          "ON CONFLICT (watch_id) DO NOTHING", (watch_id,))
        sets = ", ".join(f"{c} = {c} + ?" for c in counters)
        self.conn.execute(f"UPDATE wq_watch_stats SET {sets} WHERE watch_id = ?",
                          (*counters.values(), watch_id))

    def set_circuit(self, watch_id: str, open_until: str | None) -> None:
        """Open the circuit breaker of a watch until a time, or close it (None)."""
        self.conn.execute("INSERT INTO wq_watch_stats (watch_id) VALUES (?) "
                          "ON CONFLICT (watch_id) DO NOTHING", (watch_id,))
        self.conn.execute("UPDATE wq_watch_stats SET circuit_open_until = ? WHERE watch_id = ?",
                          (open_until, watch_id))

    def finish_scan(self, watch_id: str, ok: bool, last: dict[str, Any], when: str) -> None:
        """Record the outcome of a scan: last-scan fields, ok/failed counters, last_scan."""
        self.add_stats(watch_id, {"scans_ok" if ok else "scans_failed": 1})
        sets = ", ".join(f"{c} = ?" for c in last)
        streak = "0" if ok else "consecutive_failures + 1"
        self.conn.execute(f"UPDATE wq_watch_stats SET {sets}, consecutive_failures = {streak} "
                          "WHERE watch_id = ?", (*last.values(), watch_id))
        if ok:
            self.conn.execute("UPDATE watch_folders SET last_scan = ? WHERE watch_id = ?;"
                              "UPDATE wq_watch_stats SET circuit_open_until = NULL "
                              "WHERE watch_id = ?", (when, watch_id, watch_id))


def _key_end(key: str) -> str:
    """The smallest key after every key that starts with `key` (which ends in '/')."""
    return key[:-1] + "0"  # '0' is the byte after '/'


def _refuse_foreign_file(path: str) -> None:
    """Refuse, without touching it, a path that exists and is not an SQLite file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise NotADatabaseError(f"cannot use database {path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise NotADatabaseError(f"{path} is a directory, not a wqscan database")
    if not stat.S_ISREG(mode):  # a FIFO would block the open below; a device is no database
        raise NotADatabaseError(f"{path} is not a regular file, not a wqscan database")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_HEADER))
    except FileNotFoundError:
        return
    except OSError as e:
        raise NotADatabaseError(f"cannot read database {path}: {e.strerror}") from None
    if head and head != _HEADER:
        raise NotADatabaseError(f"{path} is not a wqscan database (not an SQLite file)")
