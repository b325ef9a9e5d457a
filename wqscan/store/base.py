"""What every store is: the table groups over one connection, write transactions with
retries, the clock leases are judged by, and how idle consumers wait.

Two implementations share it: the embedded SQLite file (sqlite.py, the default) and
PostgreSQL (postgres.py), chosen by what `--db` names. The table groups (watches.py,
snapshot.py, stats.py, leases.py, labels.py, queue_wqscan.py) are written once in the SQL
both engines speak; what differs lives in the two implementations.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import DatabaseBusy
from ..model import PG_SCHEMES
from .labels import LabelRows
from .leases import LeaseRows
from .schema import WQM, Layout
from .snapshot import SnapshotRows
from .stats import StatsRows
from .watches import WatchRows

BUSY_RETRIES = (0.5, 1.0, 2.0)  # seconds slept before each retry of a busy write
DEFAULT_PG_SCHEMA = "wqscan"
WAIT_POLL_SECONDS = 1.0  # how often a waiting consumer looks, when nothing wakes it
T = TypeVar("T")


class Target(NamedTuple):
    """Which database a command uses: a file path or a PostgreSQL URL, the schema wqscan's
    tables live in there, and whether a file on a network filesystem is accepted."""

    db: str
    pg_schema: str = DEFAULT_PG_SCHEMA
    allow_network_db: bool = False

    @property
    def is_pg(self) -> bool:
        return self.db.startswith(PG_SCHEMES)

    @property
    def engine(self) -> str:
        return "postgresql" if self.is_pg else "sqlite"

    @property
    def name(self) -> str:
        """The database in messages: the file, or the URL without its password and the
        schema."""
        if not self.is_pg:
            return self.db
        parts = urlsplit(self.db)
        url = self.db
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return f"{url} (schema {self.pg_schema})"

    def argv(self) -> list[str]:
        """The global options that name this database to another wqscan process."""
        out = ["--db", self.db]
        if self.is_pg and self.pg_schema != DEFAULT_PG_SCHEMA:
            out += ["--pg-schema", self.pg_schema]
        if self.allow_network_db:
            out.append("--allow-network-db")
        return out


class Store(WatchRows, SnapshotRows, StatsRows, LeaseRows, LabelRows):
    """One connection to a database wqscan uses.

    `layout` is the queue layout found (None only while a new database is created);
    `queue` writes and reads that layout's `ingestion_queue`; `path` names the database in
    messages; `target` reopens it. Each engine provides `open_target`, `peek_target`,
    `write()` (one transaction, nested use joining the outer one), `_rows()` and
    `describe()`.
    """

    single_writer = True  # one write transaction at a time, whole-database (SQLite)
    conn: Any
    path: str
    target: Target
    layout: Layout | None
    queue: Any

    @staticmethod
    def open(db: str | Target, layout: str | None = None, create: bool = True) -> "Store":
        """Open the database `db` names (a Target, a file path or a PostgreSQL URL). When it
        holds nothing of wqscan's yet, create its tables with `layout` (default: wqscan's),
        or, unless `create`, refuse it: a mistyped name is not an empty queue."""
        target = db if isinstance(db, Target) else Target(db)
        return _engine(target).open_target(target, layout, create)

    @staticmethod
    def peek(db: str | Target) -> str:
        """What a database holds, read without writing or creating anything: its layout,
        `absent`, or `empty` (for `--version`)."""
        target = db if isinstance(db, Target) else Target(db)
        return _engine(target).peek_target(target)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------

    def transact(self, body: Callable[[], T], retries: Sequence[float] = BUSY_RETRIES) -> T:
        """Run `body` in one write transaction, the whole of it again after each of
        `retries` seconds while the database answers busy (a lock, a deadlock, a conflict
        with a concurrent transaction), then DatabaseBusy. `body` must be re-runnable."""
        if self.conn.in_transaction:  # inside the caller's transaction: its retries apply
            return body()
        for delay in (*retries, None):
            try:
                with self.write(retries=()):
                    return body()
            except DatabaseBusy as e:
                if delay is None:
                    raise DatabaseBusy(f"{e} (retried {len(retries)} times)") from None
                time.sleep(delay)
        raise AssertionError("the last attempt returns or raises")

    # -- time and waiting -------------------------------------------------------------

    def clock_ns(self) -> int:
        """Now, by the clock leases are judged by: the host's for a file every user of
        which runs on this host, the server's where several hosts meet."""
        return time.time_ns()

    def wait_for_work(self, timeout: float, due: Callable[[], bool]) -> bool:
        """Wait up to `timeout` seconds until `due()` says there is work; whether there is."""
        deadline = time.monotonic() + timeout
        while not due():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(WAIT_POLL_SECONDS, left))
        return True

    # -- helpers of the table groups -------------------------------------------------

    def own_tables(self) -> bool:
        return True

    def hint(self, index: str) -> str:
        """SQLite's INDEXED BY clause for an index the planner must use ('' elsewhere)."""
        return ""

    def stamp(self, iso: str) -> str:
        """A time (ISO-8601 UTC with ms) as the layout's own tables hold times: unchanged
        in the wqscan layout, `YYYY-MM-DD HH:MM:SS` (UTC) in workspace-qdrant-mcp's."""
        if self.layout is not None and self.layout.name == WQM:
            return f"{iso[:10]} {iso[11:19]}"
        return iso


def _engine(target: Target) -> type[Store]:
    """The Store class of the engine a target names (PostgreSQL's loads psycopg)."""
    if target.is_pg:
        from .postgres import PgStore

        return PgStore
    from .sqlite import SqliteStore

    return SqliteStore
