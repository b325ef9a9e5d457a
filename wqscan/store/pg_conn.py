"""A psycopg connection that speaks the store's SQL: `?` placeholders, BEGIN and COMMIT
sent with the statements beside them, and a connection the server dropped made anew (a
COMMIT it caught resolved by asking the server what became of the transaction)."""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator, Sequence, TypeVar

from ..errors import (ConnectionLost, DatabaseBusy, DatabaseUnwritable, NotADatabaseError,
                      OutcomeUnknown, StoreUnreachable, UsageError, WqscanError)
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
# Seconds waited before each further attempt to reach a server that does not answer
# (then StoreUnreachable): about 15 s in all, a restart's worth.
RECONNECT_RETRIES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RESOLVE_SECONDS = 10.0  # how long a transaction caught at COMMIT may stay "in progress"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# A connection that failed for one of these may succeed later (a server down, restarting,
# full, or out of reach): tried again. Any other failure (a bad URL, role, database or
# password) is not.
_TRANSIENT = ("Connection refused", "No such file or directory", "timeout expired",
              "Connection timed out", "server closed the connection", "Connection reset",
              "Broken pipe", "could not send", "could not receive", "Network is unreachable",
              "No route to host", "failed to resolve host", "could not translate host name",
              "the database system is", "terminating connection", "too many clients",
              "too many connections", "connection slots are reserved")

# Conflicts the server resolves by aborting one transaction: running it again succeeds.
_TOO_LONG = "54000"  # program_limit_exceeded: an index entry over PostgreSQL's limit
_BUSY_STATES = {"40001": "a serialization conflict", "40P01": "a deadlock",
                "55P03": "a lock held too long", "23505": "a concurrent write of the same key"}
_UNWRITABLE_STATES = {"53100": "the disk holding it is full", "25006": "it is read-only",
                      "42501": "permission denied"}


class PgConn:
    """A psycopg connection that speaks the store's SQL (contract.Connection): `?`
    placeholders, `changes()`, `in_transaction`. A transaction's BEGIN goes
    with its first statement, its COMMIT with what comes before it: one round trip each
    fewer. A connection the server dropped (a restart, a failover) is made anew, waiting
    `reconnect` seconds between attempts: a read outside a transaction and a
    transaction's first statement are sent again on it; a drop later in a transaction
    raises ConnectionLost (nothing written: run it again); a drop at COMMIT is resolved
    by asking the server whether the transaction's id committed."""

    def __init__(self, raw: Any, target: Target) -> None:
        self.raw = raw
        self.target = target
        self.listening: set[str] = set()  # channels LISTENed on, again after a reconnect
        self.reconnect: Sequence[float] = RECONNECT_RETRIES
        self._changes = 0
        self._begin = False  # BEGIN is owed: sent with the next statement
        self._xid: int | None = None  # the id of the transaction under way
        self._once = False  # statements sent now are writes of their own: never sent twice

    @classmethod
    def connect(cls, target: Target) -> "PgConn":
        if psycopg is None:
            raise UsageError(f"--db {target.name}: PostgreSQL needs psycopg 3 (pip "
                             "install 'wqscan[postgres]')")
        if not _SCHEMA_NAME.fullmatch(target.pg_schema):
            raise UsageError(f"--pg-schema '{target.pg_schema}': expected a lower-case name "
                             "of letters, digits and _ (at most 63)")
        return cls(connect_raw(target, RECONNECT_RETRIES, settle=False), target)

    def settle(self) -> None:
        """Set wqscan's session settings (the schema, the lock timeout, a consumer's plans)
        with a statement: for a server (or a pooler in front of it) that did not take them
        from the connection's options."""
        self.execute(*_set_config(self.target))

    def begin(self) -> None:
        self._begin = True

    def commit(self, last: tuple[str, Sequence[Any]] | None = None) -> None:
        """COMMIT (nothing, if nothing was sent), after `last` (sql, args) in the same
        round trip."""
        if self._begin:
            self._begin = False
            return
        xid, self._xid = self._xid, None
        try:
            with self.raw.pipeline():
                if last is not None:
                    self.raw.execute(pg_sql(last[0]), last[1])
                self.raw.execute("COMMIT")
        except psycopg.OperationalError:
            if not self.raw.broken or xid is None:
                raise
            self._resolve(xid)

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

    @contextmanager
    def once(self) -> Iterator[None]:
        """Statements sent in this block are writes that are transactions of their own (no
        BEGIN and COMMIT): sent on a live connection, never twice. A drop while one runs
        raises OutcomeUnknown, for the caller to read back what it did."""
        self._once = True
        try:
            yield
        finally:
            self._once = False

    def _send(self, run: Callable[[], T]) -> T:
        """`run()`, which sends statements: after an owed BEGIN, in its round trip, with
        the transaction's id asked for (no round trip more)."""
        if self._once and not self.in_transaction:
            self._revive()
            return self._or_lost(run, lambda why: OutcomeUnknown(
                f"database {self.target.name}: connection lost ({why}) while a write ran; "
                "it may have committed"))
        if self._begin:
            self._begin = False
            return self._again(lambda: self._first(run))
        if self.in_transaction:
            return self._or_lost(run, self._aborted)
        return self._again(run)  # outside a transaction: a read, sent again

    def _or_lost(self, run: Callable[[], T], lost: Callable[[str], WqscanError]) -> T:
        """`run()`; if the server dropped the connection meanwhile, `lost(why)` is raised
        in its place (any other failure as it came)."""
        try:
            return run()
        except psycopg.OperationalError as e:
            if not self.raw.broken:
                raise
            raise lost(_first_line(e)) from None

    def _aborted(self, why: str) -> ConnectionLost:
        """A transaction under way when the connection dropped: aborted with its session."""
        self._xid = None  # nothing of it was written: no COMMIT outcome to read back
        return ConnectionLost(f"database {self.target.name}: connection lost ({why}); "
                              "nothing of this transaction was written")

    def _first(self, run: Callable[[], T]) -> T:
        with self.raw.pipeline():
            self.raw.execute("BEGIN")
            xid = self.raw.execute("SELECT txid_current()")
            out = run()
        self._xid = xid.fetchone()[0]
        return out

    def _again(self, run: Callable[[], T]) -> T:
        """`run()` on a live connection, and once more on a new one if the server dropped
        it meanwhile (nothing was done: a read, or a transaction that had not begun)."""
        self._revive()
        try:
            return run()
        except psycopg.OperationalError:
            if not self.raw.broken:
                raise
        self._revive()
        return self._or_lost(run, lambda why: StoreUnreachable(
            f"database {self.target.name}: the connection dropped twice in a row ({why})"))

    def _revive(self) -> None:
        """A new connection in place of one the server dropped."""
        if self.raw.broken or self.raw.closed:
            self.raw = connect_raw(self.target, self.reconnect)
            for channel in self.listening:
                self.raw.execute(f"LISTEN {ident(channel)}")

    def _resolve(self, xid: int) -> None:
        """The connection dropped at COMMIT: whether the transaction committed is read back
        from the server (its id's status) on a new connection rather than guessed. Returns
        when it committed; raises ConnectionLost (run it again) when it did not."""
        try:
            self._revive()
        except StoreUnreachable as e:
            raise StoreUnreachable(f"{e}; the connection dropped at COMMIT: whether the last "
                                   "transaction committed is not known yet") from None
        end = time.monotonic() + RESOLVE_SECONDS
        while True:
            status = self.raw.execute("SELECT txid_status(%s)", (xid,)).fetchone()[0]
            if status == "committed":
                return
            if status == "aborted":
                raise ConnectionLost(f"database {self.target.name}: the connection dropped "
                                     "at COMMIT; the transaction did not commit")
            if status is None or time.monotonic() > end:  # too old to know, or still running
                raise WqscanError(f"database {self.target.name}: the connection dropped at "
                                  f"COMMIT and the transaction's outcome is {status or 'lost'}")
            time.sleep(0.05)  # the dropped session has not finished it yet

    def error(self, e: Exception) -> WqscanError:
        """The one-line error for a transaction the server refused or aborted."""
        state = getattr(e, "sqlstate", None) or ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = self.target.name
        if self.raw.broken:  # the session ended: the server aborted the transaction
            return ConnectionLost(f"database {name}: connection lost ({first}); nothing of "
                                  "this transaction was written")
        if state in _BUSY_STATES:
            return DatabaseBusy(f"database {name}: {_BUSY_STATES[state]} with another "
                                f"writer ({first})")
        if state in _UNWRITABLE_STATES:
            return DatabaseUnwritable(f"cannot write database {name}: "
                                      f"{_UNWRITABLE_STATES[state]}; nothing of this "
                                      "transaction was written")
        if state[:2] in ("22", "23") or state == _TOO_LONG:  # bad data, constraints, limits
            return UsageError(f"database {name} refuses what wqscan writes ({first}); "
                              "nothing of this transaction was written")
        return WqscanError(f"database {name}: {first}; nothing of this transaction was "
                           "written")

    def changes(self) -> int:
        return self._changes

    @property
    def in_transaction(self) -> bool:
        return self._begin or self.raw.info.transaction_status in _IN_TRANSACTION

    def rollback(self) -> None:
        self._begin = False
        self._xid = None
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


def connect_raw(target: Target, retries: Sequence[float] = (), settle: bool = True) -> Any:
    """A new psycopg connection to the target, in wqscan's schema, flags sent as 0/1; a
    server that does not answer is tried again after each of `retries` seconds, then
    StoreUnreachable. A server that answers no (a role, a database, a password) is not.
    The schema and lock timeout go in the connection's options (no round trip); unless
    `settle` is False (the caller checks them), a statement sets them as well."""
    for delay in (*retries, None):
        try:
            raw = psycopg.connect(target.db, autocommit=True, options=_options(target),
                                  connect_timeout=CONNECT_TIMEOUT_S, application_name="wqscan")
            break
        except psycopg.Error as e:
            first = _first_line(e)
            if not any(m in str(e) for m in _TRANSIENT):
                raise NotADatabaseError(f"cannot connect to {target.name}: {first}") from None
            if delay is None:
                tried = f" (tried {len(retries) + 1} times in {sum(retries):g} s)" \
                    if retries else ""
                raise StoreUnreachable(f"cannot reach {target.name}: {first}{tried}") from None
            time.sleep(delay)
    raw.adapters.register_dumper(bool, _BoolDumper)
    if settle:
        sql, args = _set_config(target)
        raw.execute(pg_sql(sql), args)
    return raw


def _settings(target: Target) -> dict[str, str]:
    """The session settings wqscan gives a connection. A consumer's claims are one statement
    of the same shape each time: a generic plan spares the server planning it anew (about
    as long as running it) on every claim; a scan's statements keep the default."""
    settings = {"search_path": ident(target.pg_schema), "lock_timeout": f"{LOCK_TIMEOUT_MS}ms"}
    if target.consumer:
        settings["plan_cache_mode"] = "force_generic_plan"
    return settings


def _set_config(target: Target) -> tuple[str, list[str]]:
    """The statement (with its arguments) that sets `_settings` in one round trip."""
    settings = _settings(target)
    return ("SELECT " + ", ".join(["set_config(?, ?, false)"] * len(settings)),
            [v for kv in settings.items() for v in kv])


def _options(target: Target) -> str:
    """The connection's options: the URL's (or $PGOPTIONS) and wqscan's settings after
    them. (The schema name is checked: letters, digits and _ need no escaping.)"""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(target.db).get("options", os.environ.get("PGOPTIONS", ""))
    return " ".join([given, *(f"-c {k}={v}" for k, v in _settings(target).items())]).strip()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@lru_cache(maxsize=512)
def pg_sql(sql: str, mark: str = POSTGRES.mark) -> str:
    """The store's SQL with psycopg's placeholders."""
    return sql.replace("%", "%%").replace("?", mark)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
