"""The PostgreSQL store (psycopg 3): where several scanning hosts and consumers meet.

wqscan's tables live in one schema of their own (`wqscan`, or `--pg-schema`), made and
migrated by wqscan; a schema holding tables wqscan did not make is refused. Writers run
side by side (READ COMMITTED): a merge locks the pending rows it rewrites, claims pass
over locked rows (FOR UPDATE SKIP LOCKED), a lease is taken under an advisory lock of its
watch, and a transaction the server aborts for a conflict (deadlock, serialization,
unique key raced, lock timeout) is retried whole by `transact` with the busy backoff of
`BUSY_RETRIES`. The connection is pg_conn.py's, the queue's statements pg_queue.py's.
Times come from the server's clock. A transaction that queued work notifies the channel
idle consumers LISTEN on.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import NotADatabaseError, StoreUnreachable, UsageError
from . import pg_schema
from .dialect import BUSY_RETRIES, POSTGRES
from .layouts import WQSCAN
from .pg_conn import PgConn, ident, psycopg
from .pg_copy import copy_rows
from .pg_queue import PgQueue
from .pg_schema import digests
from .schema import SCHEMA_VERSION
from .target import Target

LISTEN_POLL_SECONDS = 5.0  # an idle consumer looks anyway this often (rows become due)



class DigestDirRows:
    """Rows keyed by (watch, directory key) found through the digests pg_schema.DIR_KEYED
    indexes; a directory's rows are replaced (deleted, then copied in) by the one scanner
    holding the watch's lease."""

    def __init__(self, conn: PgConn) -> None:
        self.conn = conn

    def one(self, table: str, column: str, watch_id: str, key: str) -> Any:
        row = self.conn.execute(f"SELECT {column} FROM {table} WHERE watch_id = ? AND "
                                "md5(dir) = md5(?) AND dir = ?", (watch_id, key, key)).fetchone()
        return row[0] if row else None

    def many(self, table: str, column: str, watch_id: str, keys: Sequence[str]
             ) -> dict[str, Any]:
        return dict(self.conn.execute(
            f"SELECT dir, {column} FROM {table} WHERE watch_id = ? AND md5(dir) = ANY(?) "
            "AND dir = ANY(?)", (watch_id, digests(keys), list(keys))))

    def replace(self, table: str, columns: Sequence[str], watch_id: str,
                dropped: Iterable[str], rows: Iterable[tuple]) -> None:
        rows = list(rows)
        keys = [*dropped, *(r[0] for r in rows)]
        if keys:
            self.conn.execute(f"DELETE FROM {table} WHERE watch_id = ? AND md5(dir) = ANY(?) "
                              "AND dir = ANY(?)", (watch_id, digests(keys), keys))
        if rows:  # deleted above: the copy adds each key once
            copy_rows(self.conn, table, ("watch_id", "dir", *columns),
                      ((watch_id, *r) for r in rows))


class PgEngine:
    """One connection to wqscan's schema in a PostgreSQL database (a contract.Engine)."""

    dialect = POSTGRES

    def __init__(self, conn: PgConn, target: Target) -> None:
        self.conn = conn
        self.target = target
        self.path = target.name
        self.layout = pg_schema.LAYOUT
        self.queue = PgQueue(self, self.layout)
        self.dir_rows = DigestDirRows(conn)
        self.channel = f"wqscan_{target.pg_schema}"[:63]
        self.notify = False  # this transaction made rows claimable
        self.rerunnable = False
        self._installed = False  # the tables are there, at this version
        self._untuned = False  # the queue table lacks its storage parameters (ours to set)

    @classmethod
    def open_target(cls, target: Target, layout: str | None, create: bool) -> "PgEngine":
        """Connect and find wqscan's schema; create it when `create`, else refuse a database
        without it."""
        if layout not in (None, WQSCAN):
            raise UsageError(f"--layout {layout}: PostgreSQL holds the wqscan layout only (the "
                             "workspace-qdrant-mcp layout is that project's SQLite file)")
        store = cls(PgConn.connect(target), target)
        try:
            version = store._first_look()
            if version is None and not create:
                raise NotADatabaseError(f"{store.path} holds no wqscan tables (wqscan init or "
                                        "wqscan add creates them)")
            store._installed = version == SCHEMA_VERSION and not store._untuned
            if not store._installed:
                with store.write():
                    pass
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def peek_target(cls, target: Target) -> str:
        """The layout wqscan's schema holds, or `empty`; creates nothing."""
        engine = cls(PgConn.connect(target), target)
        try:
            return WQSCAN if engine._first_look() is not None else "empty"
        finally:
            engine.close()

    def describe(self) -> str:
        version = self.conn.execute("SHOW server_version").fetchone()[0]
        return f"postgresql {version.split()[0]}"

    def _first_look(self) -> int | None:
        """`_version()` of a new connection, and whether the connection's options set the
        schema: one round trip where the schema holds wqscan's tables (else, or when a
        pooler dropped the options, those statements follow)."""
        schema = ident(self.target.pg_schema)
        try:
            row = self.conn.execute(
                "SELECT current_setting('search_path'), (SELECT value FROM "
                f"{schema}.wq_meta WHERE key = 'schema_version'), c.reloptions, "
                "pg_has_role(c.relowner, 'MEMBER') FROM pg_catalog.pg_class AS c "
                "WHERE c.oid = to_regclass(?)", (f"{schema}.ingestion_queue",)).fetchone()
        except psycopg.errors.UndefinedTable:  # no wq_meta: a new (or foreign) schema
            self.conn.settle()
            return self._version()
        if row is None:  # wq_meta without the queue table: what _version says of it
            self.conn.settle()
            return self._version()
        if row[0] not in (self.target.pg_schema, schema):
            self.conn.settle()
        self._untuned = row[3] and not pg_schema.queue_tuned(row[2])
        return _checked(int(row[1]) if row[1] else 0, self.path)

    def _version(self) -> int | None:
        """The version of wqscan's tables in the schema (None: the schema holds no table);
        refuses a schema of tables wqscan did not make, or of a later wqscan. Notes
        whether the queue table lacks its storage parameters and this role may set them."""
        tables = {name: (options, mine) for name, options, mine in self.conn.execute(
            "SELECT c.relname, c.reloptions, pg_has_role(c.relowner, 'MEMBER') "
            "FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind IN "
            "('r', 'p', 'v', 'm', 'f')", (self.target.pg_schema,))}
        if not tables:
            return None
        if "wq_meta" not in tables:
            raise NotADatabaseError(f"{self.path} holds tables wqscan did not create; choose "
                                    "another schema with --pg-schema")
        options, mine = tables.get("ingestion_queue", (None, False))
        self._untuned = mine and not pg_schema.queue_tuned(options)
        row = self.conn.execute("SELECT value FROM wq_meta WHERE key = 'schema_version'"
                                ).fetchone()
        return _checked(int(row[0]) if row else 0, self.path)

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def write(self, retries: Sequence[float] = BUSY_RETRIES) -> Iterator["PgEngine"]:
        """One write transaction (READ COMMITTED; the locks above keep writers apart).
        A conflict the server aborts it for raises DatabaseBusy: `transact` runs it again.
        Tables missing or out of date are made first, in the same transaction."""
        if self.conn.in_transaction:
            yield self
            return
        self.notify = False
        try:
            self.conn.begin()
            if not self._installed:
                self._install()
            yield self
            self.conn.commit(("SELECT pg_notify(?, '')", (self.channel,)) if self.notify
                             else None)
            self._installed = True
        except BaseException as e:
            self.conn.rollback()
            if psycopg is not None and isinstance(e, psycopg.Error):
                raise self.conn.error(e) from None
            raise

    def _install(self) -> None:
        """Make wqscan's schema and tables, one process at a time (an advisory lock of the
        schema), looking again once it holds the lock."""
        self.conn.execute("SELECT pg_advisory_xact_lock(?)",
                          (_key(f"wqscan schema {self.target.pg_schema}"),))
        if self._version() == SCHEMA_VERSION and not self._untuned:
            return
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.target.pg_schema)}")
        pg_schema.install(self.conn)

    def lock_lease(self, watch_id: str) -> None:
        """Inside a write, a lock of the watch's lease held to its end, so that two hosts
        never both find it free."""
        if self.conn.in_transaction:
            self.conn.execute("SELECT pg_advisory_xact_lock(?)",
                              (_key(f"wqscan lease {self.target.pg_schema} {watch_id}"),))

    def own_tables(self) -> bool:
        """Always: the tables are made when the store opens."""
        return True

    # -- time and waiting -------------------------------------------------------------

    def clock_ns(self) -> int:
        """The server's clock: every host's leases and claims are judged by one clock."""
        row = self.conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)"
                                "::bigint").fetchone()
        return int(row[0]) * 1000

    def wait_for_work(self, timeout: float, due: Callable[[], bool]) -> bool:
        """Wait for a NOTIFY from a transaction that queued work, looking again at least
        every LISTEN_POLL_SECONDS (rows also become due by their scheduled time), through
        a server restart or outage too."""
        if self.channel not in self.conn.listening:
            self.conn.execute(f"LISTEN {ident(self.channel)}")
            self.conn.listening.add(self.channel)
        deadline = time.monotonic() + timeout
        while not self._due_yet(due, deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                for _ in self.conn.raw.notifies(timeout=min(left, LISTEN_POLL_SECONDS),
                                                stop_after=1):
                    pass
            except psycopg.OperationalError:
                time.sleep(min(left, 1.0))  # dropped: due() reconnects
        return True

    def _due_yet(self, due: Callable[[], bool], deadline: float) -> bool:
        """`due()`, or False while the server cannot be reached before the deadline (the
        wait goes on through an outage; past the deadline the error stands)."""
        try:
            return due()
        except StoreUnreachable:
            if time.monotonic() >= deadline:
                raise
            return False

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.conn.rows(sql, args)

    def long_read(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple]:
        """On this connection: a statement's rows come whole, and a transaction's snapshot
        ends with it."""
        return iter(self.conn.execute(sql, args))

    def close(self) -> None:
        self.conn.close()


def _checked(version: int, path: str) -> int:
    """The version of wqscan's tables, refused when a later wqscan made them."""
    if version > SCHEMA_VERSION:
        raise NotADatabaseError(f"{path} has wqscan schema version {version}; this wqscan "
                                f"knows up to {SCHEMA_VERSION} (upgrade wqscan)")
    return version


def _key(text: str) -> int:
    """A 64-bit advisory lock key for a name, the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)
