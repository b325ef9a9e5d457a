"""The PostgreSQL store (psycopg 3): where several scanning hosts and consumers meet.

wqscan's tables live in one schema of their own (`wqscan`, or `--pg-schema`), made and
migrated by wqscan; a schema holding tables wqscan did not make is refused. Writers run
side by side (READ COMMITTED): a merge locks the pending rows it rewrites, claims pass
over locked rows (FOR UPDATE SKIP LOCKED), a lease is taken under an advisory lock of its
watch, and a transaction the server aborts for a conflict (deadlock, serialization,
unique key raced, lock timeout) is retried whole by `transact` with the busy backoff of `BUSY_RETRIES`.
Times come from the server's clock. A transaction that queued work notifies the channel
idle consumers LISTEN on.
"""
from __future__ import annotations

import hashlib
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ..errors import DatabaseBusy, DatabaseUnwritable, NotADatabaseError, UsageError, WqscanError
from . import pg_schema
from .dialect import BUSY_RETRIES, POSTGRES
from .layouts import WQSCAN
from .queue_wqscan import WqscanQueue
from .rows import Pending, Row
from .schema import SCHEMA_VERSION
from .target import Target

try:
    import psycopg
    from psycopg.adapt import Dumper
    from psycopg.pq import TransactionStatus
    from psycopg.rows import dict_row

    _IN_TRANSACTION = (TransactionStatus.ACTIVE, TransactionStatus.INTRANS,
                       TransactionStatus.INERROR)
except ImportError:  # the optional extra
    psycopg = None  # type: ignore[assignment]

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_MS = 5000  # a row lock held longer counts as busy (retried, then DatabaseBusy)
LISTEN_POLL_SECONDS = 5.0  # an idle consumer looks anyway this often (rows become due)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Conflicts the server resolves by aborting one transaction: running it again succeeds.
_TOO_LONG = "54000"  # program_limit_exceeded: an index entry over PostgreSQL's limit
_BUSY_STATES = {"40001": "a serialization conflict", "40P01": "a deadlock",
                "55P03": "a lock held too long", "23505": "a concurrent write of the same key"}
_UNWRITABLE_STATES = {"53100": "the disk holding it is full", "25006": "it is read-only",
                      "42501": "permission denied"}


class DigestDirRows:
    """Rows keyed by (watch, directory key) found through the digests pg_schema.DIR_KEYED
    indexes; a directory's rows are replaced (deleted, then inserted) by the one scanner
    holding the watch's lease."""

    def __init__(self, conn: "PgConn") -> None:
        self.conn = conn

    def one(self, table: str, column: str, watch_id: str, key: str) -> Any:
        row = self.conn.execute(f"SELECT {column} FROM {table} WHERE watch_id = ? AND "
                                "md5(dir) = md5(?) AND dir = ?", (watch_id, key, key)).fetchone()
        return row[0] if row else None

    def many(self, table: str, column: str, watch_id: str, keys: Sequence[str]
             ) -> dict[str, Any]:
        return dict(self.conn.execute(
            f"SELECT dir, {column} FROM {table} WHERE watch_id = ? AND md5(dir) = ANY(?) "
            "AND dir = ANY(?)", (watch_id, _digests(keys), list(keys))))

    def replace(self, table: str, columns: Sequence[str], watch_id: str,
                dropped: Iterable[str], rows: Iterable[tuple]) -> None:
        rows = list(rows)
        keys = [*dropped, *(r[0] for r in rows)]
        if keys:
            self.conn.execute(f"DELETE FROM {table} WHERE watch_id = ? AND md5(dir) = ANY(?) "
                              "AND dir = ANY(?)", (watch_id, _digests(keys), keys))
        marks = ", ".join("?" for _ in range(len(columns) + 1))
        self.conn.executemany(f"INSERT INTO {table} (watch_id, dir, {', '.join(columns)}) "
                              f"VALUES (?, {marks})", [(watch_id, *r) for r in rows])


class PgEngine:
    """One connection to wqscan's schema in a PostgreSQL database (a contract.Engine)."""

    dialect = POSTGRES

    def __init__(self, conn: "PgConn", target: Target) -> None:
        self.conn = conn
        self.target = target
        self.path = target.name
        self.layout = pg_schema.LAYOUT
        self.queue = PgQueue(self, self.layout)
        self.dir_rows = DigestDirRows(conn)
        self.channel = f"wqscan_{target.pg_schema}"[:63]
        self.notify = False  # this transaction made rows claimable
        self._installed = False  # the tables are there, at this version

    @classmethod
    def open_target(cls, target: Target, layout: str | None, create: bool) -> "PgEngine":
        """Connect and find wqscan's schema; create it when `create`, else refuse a database
        without it."""
        if layout not in (None, WQSCAN):
            raise UsageError(f"--layout {layout}: PostgreSQL holds the wqscan layout only (the "
                             "workspace-qdrant-mcp layout is that project's SQLite file)")
        store = cls(PgConn.connect(target), target)
        try:
            version = store._version()
            if version is None and not create:
                raise NotADatabaseError(f"{store.path} holds no wqscan tables (wqscan init or "
                                        "wqscan add creates them)")
            store._installed = version == SCHEMA_VERSION
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
            return WQSCAN if engine._version() is not None else "empty"
        finally:
            engine.close()

    def describe(self) -> str:
        version = self.conn.execute("SHOW server_version").fetchone()[0]
        return f"postgresql {version.split()[0]}"

    def _version(self) -> int | None:
        """The version of wqscan's tables in the schema (None: the schema holds no table);
        refuses a schema of tables wqscan did not make, or of a later wqscan."""
        tables = {r[0] for r in self.conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind IN "
            "('r', 'p', 'v', 'm', 'f')", (self.target.pg_schema,))}
        if not tables:
            return None
        if "wq_meta" not in tables:
            raise NotADatabaseError(f"{self.path} holds tables wqscan did not create; choose "
                                    "another schema with --pg-schema")
        row = self.conn.execute("SELECT value FROM wq_meta WHERE key = 'schema_version'"
                                ).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise NotADatabaseError(f"{self.path} has wqscan schema version {version}; this "
                                    f"wqscan knows up to {SCHEMA_VERSION} (upgrade wqscan)")
        return version

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
                raise self._error(e) from None
            raise

    def _install(self) -> None:
        """Make wqscan's schema and tables, one process at a time (an advisory lock of the
        schema), looking again once it holds the lock."""
        self.conn.execute("SELECT pg_advisory_xact_lock(?)",
                          (_key(f"wqscan schema {self.target.pg_schema}"),))
        if self._version() == SCHEMA_VERSION:
            return
        self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(self.target.pg_schema)}")
        pg_schema.install(self.conn)

    def _error(self, e: Exception) -> WqscanError:
        """The one-line error for a transaction the server refused or aborted."""
        state = getattr(e, "sqlstate", None) or ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if state in _BUSY_STATES:
            return DatabaseBusy(f"database {self.path}: {_BUSY_STATES[state]} with another "
                                f"writer ({first})")
        if state in _UNWRITABLE_STATES:
            return DatabaseUnwritable(f"cannot write database {self.path}: "
                                      f"{_UNWRITABLE_STATES[state]}; nothing of this "
                                      "transaction was written")
        if state[:2] in ("22", "23") or state == _TOO_LONG:  # bad data, constraints, limits
            return UsageError(f"database {self.path} refuses what wqscan writes ({first}); "
                              "nothing of this transaction was written")
        return WqscanError(f"database {self.path}: {first}; nothing of this transaction was "
                           "written")

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
        every LISTEN_POLL_SECONDS (rows also become due by their scheduled time)."""
        if self.channel not in self.conn.listening:
            self.conn.execute(f"LISTEN {_ident(self.channel)}")
            self.conn.listening.add(self.channel)
        deadline = time.monotonic() + timeout
        while not due():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                for _ in self.conn.raw.notifies(timeout=min(left, LISTEN_POLL_SECONDS),
                                                stop_after=1):
                    pass
            except psycopg.OperationalError:
                time.sleep(min(left, LISTEN_POLL_SECONDS))  # dropped: due() reconnects
        return True

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.conn.rows(sql, args)

    def close(self) -> None:
        self.conn.close()


class PgQueue(WqscanQueue):
    """The wqscan-layout queue in PostgreSQL: rows found through digests of their files,
    and a batch of rows inserted in one statement (row locks: the dialect's)."""

    engine: "PgEngine"
    # a pending row found by its file through the digests pg_schema.FILE_KEY indexes
    _PENDING = ("SELECT file_absolute_path, queue_id, operation, priority, metadata "
                "FROM ingestion_queue WHERE status = 'pending' AND md5(collection_name) = "
                "md5(?) AND collection_name = ? AND md5(file_absolute_path) = ANY(?) "
                "AND file_absolute_path = ANY(?) FOR UPDATE")

    def pending(self, paths: Sequence[str], collection: str) -> dict[str, Pending]:
        """The pending row of each of these files that has one, by path (locked)."""
        return {path: Pending(*rest) for path, *rest in self.conn.execute(
            self._PENDING, (collection, collection, _digests(paths), list(paths)))}

    def pending_row(self, path: str, collection: str) -> dict[str, Any] | None:
        """The whole pending row of a file, if any (locked)."""
        rows = self.engine.rows("SELECT * FROM ingestion_queue WHERE status = 'pending' AND "
                                "md5(file_absolute_path) = md5(?) AND file_absolute_path = ? "
                                "AND md5(collection_name) = md5(?) AND collection_name = ? "
                                "FOR UPDATE", (path, path, collection, collection))
        return rows[0] if rows else None

    def insert(self, rows: Sequence[Row]) -> set[str] | None:
        """Insert pending rows unless the file has a pending row already, all in one
        statement (one round trip); None when every row went in, else the ids that did."""
        if not rows:
            return None
        columns = list(zip(*rows))
        went = {r[0] for r in self.conn.execute(
            "INSERT INTO ingestion_queue (queue_id, file_absolute_path, collection_name, "
            "tenant_id, branch, operation, priority, watch_id, metadata, queued_timestamp, "
            "scheduled_at) SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], "
            "?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[]) "
            f"ON CONFLICT ({pg_schema.FILE_KEY}) WHERE status = 'pending' "
            "DO NOTHING RETURNING queue_id", [list(c) for c in columns], binary=True)}
        if went:
            self.engine.notify = True
        return None if len(went) == len(rows) else went

    def mark_claimed(self, queue_ids: Sequence[str], owner: str, expires: str) -> None:
        self.conn.execute("UPDATE ingestion_queue SET status = 'in_progress', lease_owner = ?, "
                          "lease_expires_at = ? WHERE queue_id = ANY(?)",
                          (owner, expires, list(queue_ids)))

    def set_fields(self, queue_id: str, fields: dict[str, Any]) -> None:
        super().set_fields(queue_id, fields)
        if fields.get("status") == "pending":
            self.engine.notify = True


class PgConn:
    """A psycopg connection that speaks the store's SQL (contract.Connection): `?`
    placeholders, `changes()`, `in_transaction`. A transaction's BEGIN goes
    with its first statement, its COMMIT with what comes before it: one round trip each
    fewer. A connection the server dropped (a restart, a failover) is made anew before
    the next transaction; a read outside one is sent again on the new connection."""

    def __init__(self, raw: Any, target: Target) -> None:
        self.raw = raw
        self.target = target
        self.listening: set[str] = set()  # channels LISTENed on, again after a reconnect
        self._changes = 0
        self._begin = False  # BEGIN is owed: sent with the next statement

    @classmethod
    def connect(cls, target: Target) -> "PgConn":
        if psycopg is None:
            raise UsageError(f"--db {target.name}: PostgreSQL needs psycopg 3 (pip "
                             "install 'wqscan[postgres]')")
        if not _SCHEMA_NAME.fullmatch(target.pg_schema):
            raise UsageError(f"--pg-schema '{target.pg_schema}': expected a lower-case name "
                             "of letters, digits and _ (at most 63)")
        return cls(_connect(target), target)

    def begin(self) -> None:
        self._begin = True

    def commit(self, last: tuple[str, Sequence[Any]] | None = None) -> None:
        """COMMIT (nothing, if nothing was sent), after `last` (sql, args) in the same
        round trip."""
        if self._begin:
            self._begin = False
            return
        with self.raw.pipeline():
            if last is not None:
                self.raw.execute(_pg_sql(last[0]), last[1])
            self.raw.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = (), binary: bool = False) -> Any:
        """Run one statement; `binary` sends the arguments in binary form (big arrays:
        no quoting and escaping of each element)."""
        query = _pg_sql(sql, "%b" if binary else "%s")
        cur = self._send(lambda: self.raw.execute(query, args))
        self._changes = cur.rowcount
        return cur

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query as dicts."""
        query = _pg_sql(sql)
        return self._send(lambda: self.raw.cursor(row_factory=dict_row).execute(query, args)
                          ).fetchall()

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            query = _pg_sql(sql)

            def send() -> None:
                with self.raw.cursor() as cur, self.raw.pipeline():  # one round trip
                    cur.executemany(query, rows)

            self._send(send)

    def _send(self, run: Callable[[], T]) -> T:
        """`run()`, which sends statements: after an owed BEGIN, in its round trip."""
        if self._begin:
            self._begin = False
            self._revive()
            with self.raw.pipeline():
                self.raw.execute("BEGIN")
                return run()
        if self.in_transaction:
            return run()
        self._revive()
        try:
            return run()
        except psycopg.OperationalError:
            if not self.raw.broken:
                raise
            self._revive()  # outside a transaction: a read, sent again
            return run()

    def _revive(self) -> None:
        """A new connection in place of one the server dropped."""
        if self.raw.broken or self.raw.closed:
            self.raw = _connect(self.target)
            for channel in self.listening:
                self.raw.execute(f"LISTEN {_ident(channel)}")

    def changes(self) -> int:
        return self._changes

    @property
    def in_transaction(self) -> bool:
        return self._begin or self.raw.info.transaction_status in _IN_TRANSACTION

    def rollback(self) -> None:
        self._begin = False
        if not self.raw.broken and self.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


if psycopg is not None:
    class _BoolDumper(Dumper):
        """Flags as the 0/1 integers the columns hold (as in SQLite)."""

        oid = psycopg.adapters.types["int8"].oid

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"


def _connect(target: Target) -> Any:
    """A new psycopg connection to the target, in wqscan's schema, flags sent as 0/1."""
    try:
        raw = psycopg.connect(target.db, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                              application_name="wqscan")
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NotADatabaseError(f"cannot connect to {target.name}: {first}") from None
    raw.adapters.register_dumper(bool, _BoolDumper)
    raw.execute("SELECT set_config('search_path', %s, false), "
                "set_config('lock_timeout', %s, false)",
                (_ident(target.pg_schema), f"{LOCK_TIMEOUT_MS}ms"))
    return raw


def _digests(texts: Iterable[str]) -> list[str]:
    """md5 in hex of each text, as the server's md5() has it (of its UTF-8)."""
    return [hashlib.md5(t.encode()).hexdigest() for t in texts]


@lru_cache(maxsize=512)
def _pg_sql(sql: str, mark: str = POSTGRES.mark) -> str:
    """The store's SQL with psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", mark)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key(text: str) -> int:
    """A 64-bit advisory lock key for a name, the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)
