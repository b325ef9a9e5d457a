"""A psycopg connection that speaks the store's SQL: `?` placeholders, BEGIN and COMMIT
sent with the statements beside them, and a connection the server dropped made anew."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Sequence, TypeVar

from ..errors import NotADatabaseError, UsageError
from .dialect import POSTGRES
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
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


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
        return cls(connect_raw(target), target)

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
                self.raw.execute(pg_sql(last[0]), last[1])
            self.raw.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = (), binary: bool = False) -> Any:
        """Run one statement; `binary` sends the arguments in binary form (big arrays:
        no quoting and escaping of each element)."""
        query = pg_sql(sql, "%b" if binary else "%s")
        cur = self._send(lambda: self.raw.execute(query, args))
        self._changes = cur.rowcount
        return cur

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query as dicts."""
        query = pg_sql(sql)
        return self._send(lambda: self.raw.cursor(row_factory=dict_row).execute(query, args)
                          ).fetchall()

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            query = pg_sql(sql)

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
            self.raw = connect_raw(self.target)
            for channel in self.listening:
                self.raw.execute(f"LISTEN {ident(channel)}")

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


def connect_raw(target: Target) -> Any:
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
                (ident(target.pg_schema), f"{LOCK_TIMEOUT_MS}ms"))
    return raw


@lru_cache(maxsize=512)
def pg_sql(sql: str, mark: str = POSTGRES.mark) -> str:
    """The store's SQL with psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", mark)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
