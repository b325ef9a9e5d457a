"""The embedded store, an SQLite file through apsw (the default).

`SqliteEngine` (the contract.Engine of a file) opens it, recognises its layout
(schema.py), runs write transactions with busy retries, and builds the queue of the layout
found (queue_wqscan.py, queue_wqm.py). A database wqscan did not create is used as found:
only `wq_` objects are added, inside the first write transaction.
A file on a network filesystem is refused: SQLite's locks and WAL are not safe there.
"""
from __future__ import annotations

import os
import stat
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import apsw

from ..errors import DatabaseBusy, DatabaseUnwritable, NotADatabaseError, UsageError, WqscanError
from ..scan import fsinfo
from . import schema, wqm_schema
from .dialect import BUSY_RETRIES, SQLITE
from .layouts import LAYOUTS, WQSCAN, Layout, WqmLayout, WqscanLayout
from .queue_wqm import WqmQueue
from .queue_wqscan import WqscanQueue
from .schema import SCHEMA_VERSION
from .snapshot import PlainDirRows
from .target import Target

BUSY_TIMEOUT_MS = 200  # SQLite's own wait before a write counts as busy
CONNECTION_CACHE_KIB = 16 * 1024  # page cache of wqscan's connection (allocated as used)
PAGE_SIZE = 16384  # of new databases: rows of long paths and JSON metadata
WAL_CHECKPOINT_PAGES = 4096  # 64 MiB of WAL
WAIT_POLL_SECONDS = 1.0  # how often a waiting consumer looks (nothing wakes it)
_HEADER = b"SQLite format 3\x00"
# SQLite's refusals to write that retrying does not cure
_UNWRITABLE = (apsw.FullError, apsw.ReadOnlyError, apsw.IOError, apsw.CantOpenError)
# the queue of each layout, in SQLite
_QUEUES: dict[type[Layout], type[WqscanQueue] | type[WqmQueue]] = {
    WqscanLayout: WqscanQueue, WqmLayout: WqmQueue}


class SqliteEngine:
    """One connection to an SQLite file wqscan uses: its own, or another's adopted as
    found (a contract.Engine)."""

    dialect = SQLITE

    def __init__(self, conn: apsw.Connection, target: Target, found: schema.Found,
                 create: str) -> None:
        self.conn = conn
        self.target = target
        self.path = target.db
        self.dir_rows = PlainDirRows(conn)
        self.rerunnable = False
        self._create = create  # the layout a new database gets
        self._installed = found.version == SCHEMA_VERSION
        self._own_tables = found.version is not None
        self._set_layout(found.layout)

    # -- opening and closing ----------------------------------------------------------

    @classmethod
    def open_target(cls, target: Target, layout: str | None, create: bool) -> "SqliteEngine":
        """Open the file `target` names. When it does not exist or holds no table, create
        it (and its directory) with `layout` (default: the wqscan layout), or, unless
        `create`, refuse it: a mistyped path is not an empty queue."""
        if layout is not None and layout not in LAYOUTS:
            raise UsageError(f"unknown layout '{layout}': expected one of {', '.join(LAYOUTS)}")
        path = target.db
        _refuse_foreign_file(path)
        if not target.allow_network_db:
            _refuse_network_fs(path)
        missing = NotADatabaseError(f"database {path} does not exist (wqscan init or wqscan "
                                    "add creates it)")
        try:
            if create:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            elif not os.path.exists(path):
                raise missing
            flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
            conn = apsw.Connection(path, flags=flags)
        except (OSError, apsw.Error) as e:
            raise NotADatabaseError(f"cannot open database {path}: {e}") from None
        try:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            found = schema.inspect(conn, path)
            if found.kind == "new" and not create:
                raise NotADatabaseError(f"database {path} is empty (wqscan init or wqscan add "
                                        "creates its tables)")
            if layout is not None and found.layout is not None and found.layout.name != layout:
                raise UsageError(f"{path} holds the {found.layout.name} layout; --layout "
                                 f"{layout} applies to a new database only")
            _configure(conn, found)
            store = cls(conn, target, found, layout or WQSCAN)
            if found.kind != "adopted" and not store._installed:
                # wqscan's own database: created or brought up to date now
                if conn.readonly("main"):
                    raise WqscanError(f"database {path} is read-only and needs a schema "
                                      "update")
                with store.write():
                    pass
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

    @staticmethod
    def peek_target(target: Target) -> str:
        """What the file holds: its layout, `absent` or `empty`."""
        path = target.db
        if not os.path.exists(path):
            return "absent"
        _refuse_foreign_file(path)
        try:
            conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        except apsw.Error as e:
            raise NotADatabaseError(f"cannot open database {path}: {e}") from None
        try:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            found = schema.inspect(conn, path)
        except apsw.Error as e:
            raise NotADatabaseError(f"cannot read database {path}: {e}") from None
        finally:
            conn.close()
        return found.layout.name if found.layout else "empty"

    def _set_layout(self, layout: Layout | None) -> None:
        self.layout = layout
        self.queue = None if layout is None else _QUEUES[type(layout)](self, layout)

    def _install(self) -> None:
        """Create a new database's layout and wqscan's own objects, or bring them up to
        date; inside the first write transaction, looking again under its lock (another
        process may have done it meanwhile)."""
        found = schema.inspect(self.conn, self.path)
        if found.kind == "new":
            if self._create == WQSCAN:
                schema.create_wqscan_layout(self.conn)
                self.conn.pragma("application_id", schema.APPLICATION_ID)
            else:
                wqm_schema.create(self.conn)
            found = schema.inspect(self.conn, self.path)
        if found.version != SCHEMA_VERSION:
            schema.install(self.conn, found.layout)
            found = schema.inspect(self.conn, self.path)
        self._set_layout(found.layout)

    def own_tables(self) -> bool:
        """Whether wqscan's own tables exist yet (an adopted database gets them with its
        first write; until then readers find nothing of wqscan's)."""
        if not self._own_tables:
            self._own_tables = schema.has_own_tables(self.conn)
        return self._own_tables

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def write(self, retries: Sequence[float] = BUSY_RETRIES) -> Iterator["SqliteEngine"]:
        """One write transaction (BEGIN IMMEDIATE), retried after each of `retries` seconds
        while another writer holds the lock. Nested use joins the outer transaction.

        wqscan's own objects are installed first when missing, in the same transaction, so
        a command that fails leaves the database as it found it.
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
                    raise DatabaseBusy(f"database {self.path} is locked by another writer"
                                       + (f" (retried {len(retries)} times)" if retries
                                          else "")) from None
                time.sleep(delay)
            except _UNWRITABLE as e:
                raise self._unwritable(e) from None
        layout, installing = self.layout, not self._installed
        try:
            if installing:
                self._install()
            yield self
        except BaseException as e:
            if self.conn.in_transaction:  # SQLite itself rolls back on some errors
                self.conn.execute("ROLLBACK")
            if installing:
                self._set_layout(layout)
            if isinstance(e, _UNWRITABLE):
                raise self._unwritable(e) from None
            if isinstance(e, apsw.ConstraintError):  # of a schema wqscan did not make
                raise UsageError(f"database {self.path} refuses what wqscan writes ({e}); "
                                 "nothing of this transaction was written") from None
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException as e:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if installing:
                self._set_layout(layout)
            if isinstance(e, (apsw.BusyError, apsw.LockedError)):
                raise DatabaseBusy(f"database {self.path} stayed busy at commit") from None
            if isinstance(e, _UNWRITABLE):
                raise self._unwritable(e) from None
            raise
        if installing:
            self._installed = self._own_tables = True

    def _unwritable(self, e: apsw.Error) -> DatabaseUnwritable:
        """The one-line error for a write SQLite refused, naming the database."""
        why = {apsw.FullError: "the disk holding it is full",
               apsw.ReadOnlyError: "it is read-only"}.get(type(e), str(e))
        return DatabaseUnwritable(f"cannot write database {self.path}: {why}; nothing of "
                                  "this transaction was written")

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        rows, names = [], None
        for r in cur:
            if names is None:
                names = [d[0] for d in cur.get_description()]
            rows.append(dict(zip(names, r)))
        return rows

    def long_read(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple]:
        """Through a read-only connection of its own, closed when the rows are done: a read
        left open on this connection would pin it to the data as it was, and once another
        process (a consumer) committed, SQLite would refuse this connection's next write
        transaction (docs/design.md)."""
        reader = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            reader.set_busy_timeout(BUSY_TIMEOUT_MS)
            yield from reader.execute(sql, args)
        finally:
            reader.close()

    def lock_lease(self, watch_id: str) -> None:
        """Nothing: one write transaction at a time already keeps lease takers apart."""

    # -- time and waiting -------------------------------------------------------------

    def clock_ns(self) -> int:
        """The host's clock: every user of the file runs on this host."""
        return time.time_ns()

    def wait_for_work(self, timeout: float, due: Callable[[], bool]) -> bool:
        """Look whether `due()` every WAIT_POLL_SECONDS, up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not due():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(WAIT_POLL_SECONDS, left))
        return True

    def describe(self) -> str:
        return f"sqlite {apsw.sqlite_lib_version()}"

    def close(self) -> None:
        self.conn.close()


def _configure(conn: apsw.Connection, found: schema.Found) -> None:
    """Connection settings; the journal mode (kept in the file) only of wqscan's own."""
    if not conn.readonly("main"):
        if found.kind == "new":
            conn.pragma("page_size", PAGE_SIZE)  # takes effect on a new file only
        if found.kind != "adopted":
            conn.pragma("journal_mode", "wal")
        conn.pragma("synchronous", "normal")
        # Let the WAL grow over a first scan's batches instead of copying every batch's
        # pages into the database right after it: hot index pages then reach it once.
        conn.pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
    # A batch of queue rows dirties pages all over the random-keyed queue_id index; a
    # cache that holds them avoids spilling and re-reading them mid-transaction.
    conn.pragma("cache_size", -CONNECTION_CACHE_KIB)
    if found.kind == "adopted":
        conn.pragma("foreign_keys", True)  # as the owner's own connections honour them


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


def _refuse_network_fs(path: str) -> None:
    """Refuse a database file on NFS, SMB/CIFS or FUSE: SQLite's locks and WAL need one
    host's shared memory and reliable locks; several hosts meet in PostgreSQL."""
    where = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(where):  # a file (and its directories) yet to be created
        where = os.path.dirname(where)
    kind = fsinfo.fs_type(where)
    if fsinfo.is_network(kind):
        raise UsageError(f"database {path} is on a {kind} mount: SQLite is not safe there "
                         "(locks, WAL); use PostgreSQL (--db postgresql://...) where several "
                         "hosts meet, or --allow-network-db to use this file anyway")
