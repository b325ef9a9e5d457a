"""The Store: every table group over one engine (contract.Engine), write transactions
with retries, the clock leases are judged by, and how idle consumers wait.

Two engines implement the contract: the embedded SQLite file (sqlite.py, the default) and
PostgreSQL (postgres.py), picked by engines.py from what `--db` names. The table groups
(watches.py, snapshot.py, stats.py, leases.py, labels.py, dircache.py) are written once
in the SQL both engines speak; what differs lives in the engines and their Dialect.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from ..errors import ConnectionLost, DatabaseBusy, WriteAgain
from .dialect import BUSY_RETRIES, Dialect
from .dircache import DirCacheRows
from .engines import engine_for
from .labels import LabelRows
from .layouts import Layout
from .leases import LeaseRows
from .snapshot import SnapshotRows
from .stats import StatsRows
from .target import Target
from .watches import WatchRows

if TYPE_CHECKING:
    from .contract import Connection, Engine

T = TypeVar("T")
LOST_AGAIN = 3  # a transaction whose connection dropped is run again at most this often


class Store(WatchRows, SnapshotRows, StatsRows, LeaseRows, LabelRows, DirCacheRows):
    """One open database wqscan uses, opened with `Store.open` and closed with `with`.

    `layout` is the queue layout found (None only while a new database is created) and
    answers every question in which the layouts differ; `queue` writes and reads that
    layout's `ingestion_queue`; `path` names the database in messages; `target` reopens
    it; `engine` is the SQLite or PostgreSQL implementation underneath.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.path = engine.path
        self.target = engine.target

    @staticmethod
    def open(db: str | Target, layout: str | None = None, create: bool = True) -> "Store":
        """Open the database `db` names (a Target, a file path or a PostgreSQL URL). When it
        holds nothing of wqscan's yet, create its tables with `layout` (default: wqscan's),
        or, unless `create`, refuse it: a mistyped name is not an empty queue."""
        target = db if isinstance(db, Target) else Target(db)
        return Store(engine_for(target).open_target(target, layout, create))

    @staticmethod
    def peek(db: str | Target) -> str:
        """What a database holds, read without writing or creating anything: its layout,
        `absent`, or `empty` (for `--version`)."""
        target = db if isinstance(db, Target) else Target(db)
        return engine_for(target).peek_target(target)

    @property
    def conn(self) -> Connection:
        return self.engine.conn

    @property
    def layout(self) -> Layout | None:
        return self.engine.layout

    @property
    def queue(self) -> Any:
        return self.engine.queue

    @property
    def dialect(self) -> Dialect:
        return self.engine.dialect

    @property
    def single_writer(self) -> bool:
        """One write transaction at a time, whole-database (SQLite)."""
        return self.engine.dialect.single_writer

    def describe(self) -> str:
        return self.engine.describe()

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def write(self, retries: Sequence[float] = BUSY_RETRIES) -> Iterator["Store"]:
        """One write transaction, retried after each of `retries` seconds while the
        database is busy; nested use joins the outer transaction."""
        with self.engine.write(retries):
            yield self

    def transact(self, body: Callable[[], T], retries: Sequence[float] = BUSY_RETRIES) -> T:
        """Run `body` in one write transaction, the whole of it again after each of
        `retries` seconds while the database answers busy (a lock, a deadlock, a conflict
        with a concurrent transaction), then DatabaseBusy; and again, on a new connection,
        when the server dropped it before the transaction committed (ConnectionLost);
        and once more at once when the store met what its faster way of writing cannot
        take (WriteAgain). `body` must be re-runnable."""
        if self.conn.in_transaction:  # inside the caller's transaction: its retries apply
            return body()
        busy, lost, again = list(retries), LOST_AGAIN, True
        while True:
            try:
                self.engine.rerunnable = True
                with self.engine.write(retries=()):
                    return body()
            except WriteAgain:
                if not again:
                    raise
                again = False
            except DatabaseBusy as e:
                if not busy:
                    raise DatabaseBusy(f"{e} (retried {len(retries)} times)") from None
                time.sleep(busy.pop(0))
            except ConnectionLost:
                lost -= 1
                if lost < 0:
                    raise
            finally:
                self.engine.rerunnable = False

    def set_reconnect(self, retries: Sequence[float]) -> None:
        """Seconds to wait before each further attempt to reach a server that dropped the
        connection (then StoreUnreachable); a caller with a backoff of its own passes ()."""
        if self.target.is_pg:
            self.engine.conn.reconnect = tuple(retries)  # type: ignore[attr-defined]

    # -- time and waiting -------------------------------------------------------------

    def clock_ns(self) -> int:
        """Now, by the clock leases are judged by: the host's for a file every user of
        which runs on this host, the server's where several hosts meet."""
        return self.engine.clock_ns()

    def wait_for_work(self, timeout: float, due: Callable[[], bool]) -> bool:
        """Wait up to `timeout` seconds until `due()` says there is work; whether there is."""
        return self.engine.wait_for_work(timeout, due)

    # -- helpers of the table groups -------------------------------------------------

    def own_tables(self) -> bool:
        return self.engine.own_tables()

    def stamp(self, iso: str) -> str:
        """A time (ISO-8601 UTC with ms) as the layout's own tables hold times."""
        return iso if self.layout is None else self.layout.stamp(iso)

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.engine.rows(sql, args)
