"""`ingestion_queue` in workspace-qdrant-mcp's layout: one row per path, whose presence
means "to do", with no id, status or lease; that project's daemon consumes it (selects by
priority and queue time, deletes by path when done). wqscan writes it by upsert, keeping
every column it has no change for, and never rewrites a row whose operation stays the
same (docs/workspace-qdrant-mcp.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .dialect import in_parts
from .rows import Merge, Pending, Row

if TYPE_CHECKING:
    from .contract import Engine
    from .layouts import Layout


class _Undo(Exception):
    """Rolls a savepoint back."""


class WqmQueue:
    """The queue of a workspace-qdrant-mcp-layout database."""

    def __init__(self, engine: "Engine", layout: "Layout") -> None:
        self.engine = engine
        self.conn = engine.conn
        self.layout = layout
        self.metadata = layout.queue_metadata  # queue_schema.sql's table has none
        self.counts_rows = not layout.queue_triggers  # total_changes counts rows only

    # -- the scanner's side ----------------------------------------------------------

    def insert(self, rows: Sequence[Row]) -> set[str] | None:
        """Insert rows for paths without a row. Returns None when every row went in, else
        the queue_ids (of the batch) of those that did."""
        stamps: dict[str, str] = {}

        def values(r: Row) -> tuple:
            stamp = stamps.get(r.queued_timestamp)
            if stamp is None:
                stamp = stamps[r.queued_timestamp] = self.layout.stamp(r.queued_timestamp)
            head = (r.file_absolute_path, r.collection_name, r.tenant_id, r.branch,
                    r.operation, r.priority, stamp)
            return (*head, r.metadata) if self.metadata else head

        meta = (", metadata", ", ?") if self.metadata else ("", "")
        sql = ("INSERT INTO ingestion_queue (file_absolute_path, collection_name, tenant_id, "
               f"branch, operation, priority, queued_timestamp{meta[0]}) "
               f"VALUES (?, ?, ?, ?, ?, ?, ?{meta[1]}) "
               "ON CONFLICT (file_absolute_path) DO NOTHING")
        params = [values(r) for r in rows]
        if self.counts_rows:  # the fast way, when every row goes in (a first scan)
            try:
                with self.conn:  # a savepoint
                    before = self.conn.total_changes()
                    self.conn.executemany(sql, params)
                    if self.conn.total_changes() - before == len(rows):
                        return None
                    raise _Undo
            except _Undo:
                pass
        # RETURNING names the rows that went in, at twice the cost of the plain insert
        went_in = {p for (p,) in self.conn.executemany(
            sql + " RETURNING file_absolute_path", params).fetchall()}
        if len(went_in) == len(rows):
            return None
        return {r.queue_id for r in rows if r.file_absolute_path in went_in}

    def pending(self, paths: Sequence[str], collection: str) -> dict[str, Pending]:
        """The row of each of these paths that has one (whatever its collection: the path
        is the key), by path."""
        meta = "metadata" if self.metadata else "NULL"
        found = {}
        for part, marks in in_parts(paths):
            for path, op, priority, metadata in self.conn.execute(
                    f"SELECT file_absolute_path, operation, priority, {meta} "
                    f"FROM ingestion_queue WHERE file_absolute_path IN ({marks})", part):
                found[path] = Pending(path, op, priority, metadata)
        return found

    def pending_one(self, path: str, collection: str) -> Pending | None:
        return self.pending([path], collection).get(path)

    def merge(self, merges: Iterable[Merge]) -> None:
        """Set the coalesced operation of rows; their other columns (queue time, retry
        count, error, retry chain) stay."""
        meta = ", metadata = ?" if self.metadata else ""
        self.conn.executemany(
            "UPDATE ingestion_queue SET operation = ?, priority = ?, tenant_id = ?, branch = ?, "
            f"collection_name = ?{meta} WHERE file_absolute_path = ?",
            [(m.operation, m.priority, m.tenant_id, m.branch, m.collection_name,
              *((m.metadata,) if self.metadata else ()), m.key) for m in merges])

    def remove(self, keys: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM ingestion_queue WHERE file_absolute_path = ?",
                              [(k,) for k in keys])

    def set_metadata(self, key: str, metadata: str) -> None:
        if self.metadata:
            self.conn.execute("UPDATE ingestion_queue SET metadata = ? "
                              "WHERE file_absolute_path = ?", (metadata, key))

    # -- looking -----------------------------------------------------------------------

    def depth(self) -> list[tuple[str, str, int]]:
        """(status, operation, rows): every row is waiting, so its status is `pending`."""
        return [("pending", op, n) for op, n in self.conn.execute(
            "SELECT operation, count(*) FROM ingestion_queue GROUP BY operation "
            "ORDER BY operation")]

    def rows(self, status: str | None = None, limit: int | None = None,
             collection: str | None = None) -> list[dict[str, Any]]:
        """Rows in the order that project's consumer takes them (priority, then queue
        time), optionally of one collection; only `pending` ones exist."""
        if status is not None and status not in self.layout.statuses:
            return []
        where, args = ("WHERE collection_name = ? ", [collection]) if collection is not None \
            else ("", [])
        sql = (f"SELECT * FROM ingestion_queue {where}"
               "ORDER BY priority DESC, queued_timestamp ASC, file_absolute_path")
        if limit is not None:
            return self.engine.rows(sql + " LIMIT ?", (*args, limit))
        return self.engine.rows(sql, args)

    def count(self, status: str | None = None, collection: str | None = None) -> int:
        """How many rows `rows` would list without a limit."""
        if status is not None and status not in self.layout.statuses:
            return 0
        where, args = ("WHERE collection_name = ?", (collection,)) if collection is not None \
            else ("", ())
        return self.conn.execute(f"SELECT count(*) FROM ingestion_queue {where}",
                                 args).fetchone()[0]

    def times(self, now: str) -> dict[str, Any]:
        """Every row is due: no backoff, no leases; and the oldest row's queue time."""
        due, oldest = self.conn.execute(
            "SELECT count(*), min(queued_timestamp) FROM ingestion_queue").fetchone()
        return {"due": due, "scheduled_later": 0, "expired_leases": 0, "oldest_pending": oldest}
