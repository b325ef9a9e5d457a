"""What an engine must provide to the store (`Engine`), the connection it speaks through
(`Connection`), and the few pieces of SQL in which SQLite and PostgreSQL differ (`Dialect`).

The table groups (watches.py, snapshot.py, stats.py, leases.py, labels.py) and the queues
are written once against these; sqlite.py and postgres.py each implement `Engine`, and
engines.py picks one for a target.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Iterable, NamedTuple, Protocol, Sequence

from .layouts import Layout
from .rows import Merge, Pending, Row
from .target import Target

BUSY_RETRIES = (0.5, 1.0, 2.0)  # seconds slept before each retry of a busy write


class Dialect(NamedTuple):
    """The SQL in which the engines differ; every other statement is written once, with
    `?` placeholders."""

    single_writer: bool  # one write transaction at a time, whole-database
    mark: str  # the driver's placeholder for the store's `?`
    index_hint: str  # the clause that makes the planner use an index ({} its name)
    # Row locks, where writers run side by side: a row read to be rewritten stays as read
    # until the rewrite commits; a claim passes over rows locked meanwhile.
    lock_rows: str
    lock_claim: str
    # the key of a file in the queue's indexes, and rows a and q being of one file (in a
    # form the in-progress index serves)
    file_key: str
    same_file: str
    now_sql: str  # now, as ISO-8601 UTC text with milliseconds
    uuid_sql: str  # a random UUID (version 4) as text

    def hint(self, index: str) -> str:
        """The clause that makes the planner use `index` ('' where there is none)."""
        return self.index_hint.format(index) if self.index_hint else ""


_SAME_FILE = ("a.file_absolute_path = q.file_absolute_path "
              "AND a.collection_name = q.collection_name")

SQLITE = Dialect(
    single_writer=True, mark="?", index_hint="INDEXED BY {}", lock_rows="", lock_claim="",
    file_key="file_absolute_path, collection_name", same_file=_SAME_FILE,
    now_sql="strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    uuid_sql=("lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || "
              "substr('89ab', 1 + (abs(random()) % 4), 1) || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"))

# A btree entry holds at most 2704 bytes in PostgreSQL and a path with its collection
# name may be longer: files are keyed by digests (SQLite has no such limit).
POSTGRES = Dialect(
    single_writer=False, mark="%s", index_hint="", lock_rows=" FOR UPDATE",
    lock_claim=" FOR UPDATE OF q SKIP LOCKED",
    file_key="md5(file_absolute_path), md5(collection_name)",
    same_file=("md5(a.file_absolute_path) = md5(q.file_absolute_path) AND "
               "md5(a.collection_name) = md5(q.collection_name) AND " + _SAME_FILE),
    now_sql="to_char(clock_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    uuid_sql="gen_random_uuid()::text")


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
    """Rows keyed by (watch, directory key), wq_snapshot's and wq_labels': read one, read
    many, replace some; each engine finds them through the index it has."""

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
    """What the table groups (watches.py, snapshot.py, stats.py, leases.py, labels.py)
    use of the Store they are part of."""

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
