"""The wqscan-layout queue in PostgreSQL: what differs from the SQLite queue."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from . import pg_schema
from .pg_copy import QUEUE_STAGE, QUEUE_STAGE_COLUMNS, stage_queue_rows
from .pg_schema import digests
from .queue_wqscan import WqscanQueue
from .rows import Pending, Row

if TYPE_CHECKING:
    from .postgres import PgEngine


class PgQueue(WqscanQueue):
    """The wqscan-layout queue in PostgreSQL: rows found through digests of their files,
    and a batch of rows inserted in one statement (row locks: the dialect's)."""

    engine: PgEngine
    # a pending row found by its file through the digests pg_schema.FILE_KEY indexes
    _PENDING = ("SELECT file_absolute_path, queue_id, operation, priority, metadata "
                "FROM ingestion_queue WHERE status = 'pending' AND md5(collection_name) = "
                "md5(?) AND collection_name = ? AND md5(file_absolute_path) = ANY(?) "
                "AND file_absolute_path = ANY(?) FOR UPDATE")

    def pending(self, paths: Sequence[str], collection: str) -> dict[str, Pending]:
        """The pending row of each of these files that has one, by path (locked)."""
        return {path: Pending(*rest) for path, *rest in self.conn.execute(
            self._PENDING, (collection, collection, digests(paths), list(paths)))}

    def pending_row(self, path: str, collection: str) -> dict[str, Any] | None:
        """The whole pending row of a file, if any (locked)."""
        rows = self.engine.rows("SELECT * FROM ingestion_queue WHERE status = 'pending' AND "
                                "md5(file_absolute_path) = md5(?) AND file_absolute_path = ? "
                                "AND md5(collection_name) = md5(?) AND collection_name = ? "
                                "FOR UPDATE", (path, path, collection, collection))
        return rows[0] if rows else None

    def insert(self, rows: Sequence[Row]) -> set[str] | None:
        """Insert pending rows unless the file has a pending row already: copied into the
        staging table, then moved by one statement; None when every row went in, else the
        ids that did (looked up only then)."""
        if not rows:
            return None
        stage_queue_rows(self.conn, rows)
        columns = ", ".join(QUEUE_STAGE_COLUMNS)
        went = self.conn.execute(
            f"INSERT INTO ingestion_queue ({columns}) SELECT {columns} FROM {QUEUE_STAGE} "
            f"ON CONFLICT ({pg_schema.FILE_KEY}) WHERE status = 'pending' DO NOTHING"
        ).rowcount
        if went:
            self.engine.notify = True
        if went == len(rows):
            return None
        return {r[0] for r in self.conn.execute(
            "SELECT queue_id FROM ingestion_queue WHERE queue_id = ANY(?)",
            ([r.queue_id for r in rows],))}

    def mark_claimed(self, queue_ids: Sequence[str], owner: str, expires: str) -> None:
        self.conn.execute("UPDATE ingestion_queue SET status = 'in_progress', lease_owner = ?, "
                          "lease_expires_at = ? WHERE queue_id = ANY(?)",
                          (owner, expires, list(queue_ids)))

    def set_fields(self, queue_id: str, fields: dict[str, Any]) -> None:
        super().set_fields(queue_id, fields)
        if fields.get("status") == "pending":
            self.engine.notify = True
