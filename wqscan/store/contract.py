"""What an engine must provide to the store (`Engine`) and the connection it speaks through
(`Connection`), for the type checker: nothing imports this module when wqscan runs. The SQL
in which SQLite and PostgreSQL differ is their `Dialect` (dialect.py).

The table groups (watches.py, snapshot.py, stats.py, leases.py, labels.py) and the queues
are written once against these; sqlite.py and postgres.py each implement `Engine`, and
engines.py picks one for a target.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Iterable, Iterator, Protocol, Sequence

from .dialect import BUSY_RETRIES, Dialect
from .layouts import Layout
from .rows import Merge, Pending, Row
from .target import Target


class Cursor(Protocol):
    """What a statement returns: its rows, one at a time or all."""

    def __iter__(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The connection the table groups speak through: statements with `?` placeholders,
    the rows the last one changed, whether a transaction is open."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...

    def changes(self) -> int: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class DirRows(Protocol):
    """Rows keyed by (watch, directory key), wq_snapshot's, wq_labels' and wq_dircache's:
    read one, read many, replace some; each engine finds them through the index it has."""

    def one(self, table: str, column: str, watch_id: str, key: str) -> Any: ...

    def many(self, table: str, column: str, watch_id: str, keys: Sequence[str]
             ) -> dict[str, Any]: ...

    def replace(self, table: str, columns: Sequence[str], watch_id: str,
                dropped: Iterable[str], rows: Iterable[tuple]) -> None: ...


class Queue(Protocol):
    """`ingestion_queue` in one layout: the scanner's writes and what `queue list` and
    `queue stats` read (queue_wqscan.py, queue_wqm.py; PostgreSQL's in postgres.py)."""

    def insert(self, rows: Sequence[Row]) -> set[str] | None: ...

    def pending(self, paths: Sequence[str], collection: str) -> dict[str, Pending]: ...

    def pending_one(self, path: str, collection: str) -> Pending | None: ...

    def merge(self, merges: Iterable[Merge]) -> None: ...

    def remove(self, keys: Iterable[str]) -> None: ...

    def set_metadata(self, key: str, metadata: str) -> None: ...

    def depth(self) -> list[tuple[str, str, int]]: ...

    def rows(self, status: str | None = None, limit: int | None = None, *,
             collection: str | None = None) -> list[dict[str, Any]]: ...

    def count(self, status: str | None = None, collection: str | None = None) -> int: ...

    def times(self, now: str) -> dict[str, Any]: ...


class Engine(Protocol):
    """One open database: what the Store facade (base.py) asks of SQLite's and
    PostgreSQL's implementations."""

    dialect: Dialect
    conn: Connection
    target: Target
    path: str  # the database in messages
    layout: Layout | None  # None only while a new database is being created
    queue: Any  # the layout's Queue (with the consumer's side where layout.claims)
    dir_rows: DirRows
    # the transaction under way is Store.transact's, which runs it again on WriteAgain
    rerunnable: bool

    @classmethod
    def open_target(cls, target: Target, layout: str | None, create: bool) -> "Engine":
        """Open (and, when `create`, make) the database; refuse one that is not usable."""
        ...

    @classmethod
    def peek_target(cls, target: Target) -> str:
        """The layout the database holds, `absent` or `empty`, writing nothing."""
        ...

    def write(self, retries: Sequence[float] = BUSY_RETRIES) -> ContextManager[object]:
        """One write transaction; nested use joins the outer one. Busy: DatabaseBusy."""
        ...

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query as dicts."""
        ...

    def long_read(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple]:
        """The rows of a query read while this connection goes on writing (a scan's
        snapshot), as tuples in order."""
        ...

    def own_tables(self) -> bool:
        """Whether wqscan's own tables exist yet (an adopted file gets them on its first
        write)."""
        ...

    def lock_lease(self, watch_id: str) -> None:
        """Inside a write: hold off every other taker of the watch's lease to its end."""
        ...

    def clock_ns(self) -> int:
        """Now, by the clock leases and claims are judged by."""
        ...

    def wait_for_work(self, timeout: float, due: Callable[[], bool]) -> bool:
        """Wait up to `timeout` seconds until `due()`; whether it came."""
        ...

    def describe(self) -> str:
        """The engine and its version, for `status`."""
        ...

    def close(self) -> None: ...


class Tables(Protocol):
    """What the table groups (watches.py, snapshot.py, stats.py, leases.py, labels.py,
    dircache.py) use of the Store they are part of."""

    engine: Engine
    path: str

    @property
    def conn(self) -> Connection: ...

    @property
    def layout(self) -> Layout | None: ...

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def own_tables(self) -> bool: ...

    def stamp(self, iso: str) -> str: ...

    def update_watch(self, watch_id: str, fields: dict[str, Any]) -> None: ...
