"""The database through the store, on either engine: watches and scans, the queue's rows,
rows written as another tool writes them, timestamps, a whole database's content."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Union

import apsw
from helpers.ondisk import dump_db, read_dicts, read_rows
from helpers.pg import pg_connect

from wqscan.clock import iso_from_ns, parse_iso
from wqscan.reconcile import WatchReport, reconcile
from wqscan.store import Store, Target
from wqscan.watches import add_watch


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

    @property
    def marker(self) -> str:
        """What the command line of a wqscan process on this database contains."""
        return self.target.db if self.kind == "sqlite" else self.target.pg_schema

    def read(self, sql: str, dicts: bool = False, busy_ms: int = 5000) -> list:
        """Rows of a query (tuples, or dicts) on a connection of its own, as another
        program reads the database while wqscan processes write: read-only to the SQLite
        file, psycopg to the PostgreSQL schema."""
        if self.kind == "sqlite":
            return (read_dicts if dicts else read_rows)(self.target.db, sql, busy_ms=busy_ms)
        from psycopg.rows import dict_row

        with pg_connect(self) as conn:
            cur = conn.cursor(row_factory=dict_row) if dicts else conn.cursor()
            return [r if dicts else tuple(r) for r in cur.execute(sql)]

    def write(self, sql: str, busy_ms: int = 10_000) -> None:
        """One statement written as another program writes, on a connection of its own."""
        if self.kind == "sqlite":
            conn = apsw.Connection(self.target.db)
            try:
                conn.set_busy_timeout(busy_ms)
                conn.execute(sql)
            finally:
                conn.close()
            return
        with pg_connect(self) as conn:
            conn.execute(sql)

    def queue(self, status: str | None = None) -> list[dict]:
        """Every queue row (of a status), in claim order."""
        with self.open(create=False) as s:
            return s.queue.rows(status=status)


def watch(store: Store, root: Path, collection: str = "c", **kw: Any) -> str:
    """Register `root` (settle 0 unless given) and return the watch id."""
    kw.setdefault("settle", 0)
    return add_watch(store, str(root), collection, **kw).watch_id


def scan(store: Store, *ids: str, **kw: Any) -> WatchReport:
    """Reconcile the given watches (default: all enabled); returns the first report."""
    return reconcile(store, list(ids), **kw)[0]


#: An open store, or what names a database (a path, a Db) to open through the store.
Database = Union[Store, Db, Path, str]


@contextmanager
def opened(db: Database) -> Iterator[Store]:
    """`db` itself when it is an open store; else the database it names, opened through the
    store (never created: a mistyped path fails) and closed at the end."""
    if isinstance(db, Store):
        yield db
        return
    with Store.open(db.target if isinstance(db, Db) else str(db), create=False) as store:
        yield store


def queue(db: Database, status: str | None = "pending") -> list[dict[str, Any]]:
    """Rows of ingestion_queue (by default the pending ones) by path, metadata decoded,
    read through the store interface (either engine, either layout)."""
    with opened(db) as store:
        rows = sorted(store.queue.rows(status=status),
                      key=lambda r: (r["file_absolute_path"], r.get("queue_id", "")))
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
    return rows


def stats(db: Database, watch_id: str) -> dict[str, Any] | None:
    """A watch's statistics row (wq_watch_stats), read through the store; None without."""
    with opened(db) as store:
        return store.stats_row(watch_id)


def queue_dump(store: Store) -> list[tuple]:
    """Every column of every queue row (any status) by queue_id, for before/after
    comparisons."""
    return [tuple(r.values()) for r in sorted(store.queue.rows(), key=lambda r: r["queue_id"])]


def ops(db: Database) -> dict[str, str]:
    """{relative path: operation} of the pending rows of every watch."""
    return {(r["metadata"] or {}).get("relative_path", r["file_absolute_path"]): r["operation"]
            for r in queue(db)}


def drain(db: Database) -> None:
    """Acknowledge everything pending, as a consumer that completed it would (rows are keyed
    by queue_id, or by path in a layout without one)."""
    with opened(db) as store, store.write():
        store.queue.remove([r.get("queue_id", r["file_absolute_path"])
                            for r in store.queue.rows(status="pending")])


def scanned(store: Store, root: Path, **kw: Any) -> str:
    """Watch `root` (as `watch` does), scan it once and acknowledge what that queued: a tree
    the consumer holds. Returns the watch id."""
    wid = watch(store, root, **kw)
    scan(store, wid)
    drain(store)
    return wid


#: The coalescing table (docs/consuming.md): (pending operation, new operation, what the
#: pending row becomes; None: it goes).
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

#: The INSERT of a queue row another tool writes from the documented table: the SQL
#: defaults give the rest (queue_id, status, timestamps).
SEED_INSERT = ("INSERT INTO ingestion_queue (file_absolute_path, collection_name, tenant_id, "
               "branch, operation, priority, retry_from) VALUES (?,?,?,?,?,?,?)")


def seed(store: Store, path: str, operation: str = "ingest", priority: int = 5, *,
         collection: str = "c", tenant: str = "default", branch: str = "main",
         retry_from: str | None = None, **cols: Any) -> str:
    """A row written by another tool with SEED_INSERT; `cols` then overwrite further columns
    directly. Returns the queue_id the SQL default gave it."""
    qid = store.conn.execute(SEED_INSERT + " RETURNING queue_id", (
        path, collection, tenant, branch, operation, priority, retry_from)).fetchall()[0][0]
    if cols:
        set_cols(store, qid, **cols)
    return qid


def set_cols(store: Store, queue_id: str, **cols: Any) -> None:
    """Rewrite columns of one row with SQL, as another tool would (time travel, foreign
    states)."""
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


def dump(db: Db) -> list:
    """Every table's rows in a stable order, read with a connection of its own as another
    program would (SQLite: dump_db, with the schema version; PostgreSQL: every table of the
    schema)."""
    if db.kind != "pg":
        return dump_db(db.target.db)
    from psycopg import sql as pgsql

    with pg_connect(db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (db.target.pg_schema,))]
        out: list = []
        for t in tables:
            rows = conn.execute(pgsql.SQL("SELECT * FROM {}.{}").format(
                pgsql.Identifier(db.target.pg_schema), pgsql.Identifier(t))).fetchall()
            out.append((t, sorted(rows, key=repr)))
        return out
