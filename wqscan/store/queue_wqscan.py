"""`ingestion_queue` in the wqscan layout (docs/consuming.md): one row per operation with
its own id, status and lease; at most one pending row per file and collection. Both
sides: the scanner's writes and the consumer's claims."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..clock import iso_from_ns
from .dialect import in_parts
from .rows import Merge, Pending, Row
from .schema import QUEUE_NAMES

if TYPE_CHECKING:
    from .contract import Engine
    from .layouts import Layout


class WqscanQueue:
    """The queue of a wqscan-layout database (SQLite; postgres.py's PgQueue extends it)."""

    alone_ok = False  # a write of one statement may go without BEGIN and COMMIT (`alone`)

    def __init__(self, engine: "Engine", layout: "Layout") -> None:
        self.engine = engine
        self.conn = engine.conn
        self.dialect = engine.dialect
        self.pending_index = layout.pending_index
        self.claim_index = layout.claim_index
        self.counts_rows = not layout.queue_triggers  # total_changes counts rows only

    # -- the scanner's side ----------------------------------------------------------

    def insert(self, rows: Sequence[Row]) -> set[str] | None:
        """Insert pending rows unless the file has a pending row already. Returns None when
        every row went in, else the queue_ids of those that did."""
        before = self.conn.total_changes()
        self.conn.executemany(
            "INSERT INTO ingestion_queue (queue_id, file_absolute_path, collection_name, "
            "tenant_id, branch, operation, priority, watch_id, metadata, queued_timestamp, "
            "scheduled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (file_absolute_path, collection_name) WHERE status = 'pending' "
            "DO NOTHING", rows)
        if self.counts_rows and self.conn.total_changes() - before == len(rows):
            return None
        ids = [r.queue_id for r in rows]
        found: set[str] = set()
        for part, marks in in_parts(ids):
            found.update(r[0] for r in self.conn.execute(
                f"SELECT queue_id FROM ingestion_queue WHERE queue_id IN ({marks})", part))
        return None if len(found) == len(rows) else found

    def pending(self, paths: Sequence[str], collection: str) -> dict[str, Pending]:
        """The pending row of each of these files that has one, by path."""
        found = {}
        for part, marks in in_parts(paths):
            for path, *rest in self.conn.execute(
                    "SELECT file_absolute_path, queue_id, operation, priority, metadata "
                    f"FROM ingestion_queue {self.dialect.hint(self.pending_index)} "
                    "WHERE status = 'pending' AND collection_name = ? "
                    f"AND file_absolute_path IN ({marks})"
                    + self.dialect.lock_rows,
                    (collection, *part)):
                found[path] = Pending(*rest)
        return found

    def pending_one(self, path: str, collection: str) -> Pending | None:
        return self.pending([path], collection).get(path)

    def merge(self, merges: Iterable[Merge]) -> None:
        """Overwrite pending rows with coalesced operations; ids and queue times stay."""
        self.conn.executemany(
            "UPDATE ingestion_queue SET operation = ?, priority = ?, tenant_id = ?, branch = ?, "
            "watch_id = ?, metadata = ? WHERE queue_id = ?",
            [(m.operation, m.priority, m.tenant_id, m.branch, m.watch_id, m.metadata, m.key)
             for m in merges])

    def remove(self, keys: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM ingestion_queue WHERE queue_id = ?",
                              [(k,) for k in keys])

    def set_metadata(self, key: str, metadata: str) -> None:
        self.conn.execute("UPDATE ingestion_queue SET metadata = ? WHERE queue_id = ? "
                          "AND status = 'pending'", (metadata, key))

    # -- looking -----------------------------------------------------------------------

    def depth(self) -> list[tuple[str, str, int]]:
        """(status, operation, rows) for every combination present."""
        return self.conn.execute("SELECT status, operation, count(*) FROM ingestion_queue "
                                 "GROUP BY status, operation ORDER BY status, operation"
                                 ).fetchall()

    def rows(self, status: str | None = None, limit: int | None = None,
             queue_ids: Sequence[str] | None = None, collection: str | None = None
             ) -> list[dict[str, Any]]:
        """Rows in claim order, optionally of one status, collection, some ids, at most
        `limit`."""
        where, args = [], []
        for column, value in (("status", status), ("collection_name", collection)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if queue_ids is not None:
            where.append(f"queue_id IN ({', '.join('?' for _ in queue_ids)})")
            args.extend(queue_ids)
        sql = "SELECT * FROM ingestion_queue" + (" WHERE " + " AND ".join(where) if where
                                                 else "")
        sql += " ORDER BY priority DESC, scheduled_at, queued_timestamp, queue_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self.engine.rows(sql, args)

    def held_by(self, owner: str) -> list[dict[str, Any]]:
        """The rows in progress under `owner`'s lease."""
        return self.engine.rows("SELECT * FROM ingestion_queue WHERE status = 'in_progress' "
                                "AND lease_owner = ?", (owner,))

    def count(self, status: str | None = None, collection: str | None = None) -> int:
        """How many rows `rows` would list without a limit."""
        where, args = [], []
        for column, value in (("status", status), ("collection_name", collection)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        return self.conn.execute("SELECT count(*) FROM ingestion_queue"
                                 + (" WHERE " + " AND ".join(where) if where else ""),
                                 args).fetchone()[0]

    def times(self, now: str) -> dict[str, Any]:
        """Due and waiting pending rows, expired leases, and the oldest pending row's time."""
        row = self.conn.execute(
            "SELECT sum(CASE WHEN status = 'pending' AND scheduled_at <= ? THEN 1 END), "
            "sum(CASE WHEN status = 'pending' AND scheduled_at > ? THEN 1 END), "
            "sum(CASE WHEN status = 'in_progress' AND (lease_expires_at IS NULL "
            "OR lease_expires_at <= ?) THEN 1 END), "
            "min(CASE WHEN status = 'pending' THEN queued_timestamp END) "
            "FROM ingestion_queue", (now, now, now)).fetchone()
        return {"due": row[0] or 0, "scheduled_later": row[1] or 0,
                "expired_leases": row[2] or 0, "oldest_pending": row[3]}

    # -- the consumer's side -----------------------------------------------------------

    def claimable(self, now: str, n: int, collection: str | None, tenant: str | None,
                  lock: bool = True) -> list[dict[str, Any]]:
        """Up to n rows of each kind a claim may take, in claim order: due pending rows of
        files with no row in progress, and due in-progress rows whose lease expired (or
        that never had one). Unless `lock` (a look only), they are locked for the claim
        where writers run side by side."""
        where, args = "", []
        for column, value in (("collection_name", collection), ("tenant_id", tenant)):
            if value is not None:
                where += f" AND q.{column} = ?"
                args.append(value)
        order = " ORDER BY q.priority DESC, q.scheduled_at, q.queued_timestamp LIMIT ?"
        # the claim index of an adopted queue comes with wqscan's tables, in its first write
        hint = self.dialect.hint(self.claim_index) if self.engine.own_tables() else ""
        locking = self.dialect.lock_claim if lock else ""
        pending = self.engine.rows(
            f"SELECT * FROM ingestion_queue AS q {hint} "
            "WHERE q.status = 'pending' AND q.scheduled_at <= ?" + where +
            " AND NOT EXISTS (SELECT 1 FROM ingestion_queue AS a WHERE a.status = 'in_progress'"
            " AND " + self.dialect.same_file + ")" + order + locking,
            (now, *args, n))
        expired = self.engine.rows(
            "SELECT * FROM ingestion_queue AS q WHERE q.status = 'in_progress' "
            "AND q.scheduled_at <= ? AND (q.lease_expires_at IS NULL "
            "OR q.lease_expires_at <= ?)" + where +
            " AND NOT EXISTS (SELECT 1 FROM ingestion_queue AS a WHERE a.status = 'in_progress'"
            " AND " + self.dialect.same_file + " AND a.lease_expires_at > ?)"
            + order + locking, (now, now, *args, now, n))
        return pending + expired

    def claim(self, n: int, lease_seconds: float, owner: str, collection: str | None,
              tenant: str | None) -> list[dict[str, Any]]:
        """Move up to n claimable rows, at most one per file, to in_progress under `owner`'s
        lease; the rows as they now stand, in claim order (inside the caller's write)."""
        now_ns = self.engine.clock_ns()
        now = iso_from_ns(now_ns)
        expires = iso_from_ns(now_ns + int(lease_seconds * 1e9))
        chosen: list[dict[str, Any]] = []
        files: set[tuple[str, str]] = set()
        for row in sorted(self.claimable(now, n, collection, tenant), key=claim_order):
            key = (row["file_absolute_path"], row["collection_name"])
            if key not in files and len(chosen) < n:
                files.add(key)
                chosen.append(row)
        for part, marks in in_parts([r["queue_id"] for r in chosen]):
            self.conn.execute("UPDATE ingestion_queue SET status = 'in_progress', lease_owner "
                              f"= ?, lease_expires_at = ? WHERE queue_id IN ({marks})",
                              (owner, expires, *part))
        for row in chosen:
            row.update(status="in_progress", lease_owner=owner, lease_expires_at=expires)
        return chosen

    def pending_row(self, path: str, collection: str) -> dict[str, Any] | None:
        """The whole pending row of a file, if any."""
        rows = self.engine.rows("SELECT * FROM ingestion_queue WHERE file_absolute_path = ? "
                                "AND collection_name = ? AND status = 'pending'"
                                + self.dialect.lock_rows, (path, collection))
        return rows[0] if rows else None

    def rows_to_change(self, queue_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Whole rows by id, read to be rewritten in this transaction (locked where writers
        run side by side); ids not in the queue are left out."""
        found: dict[str, dict[str, Any]] = {}
        for part, marks in in_parts(queue_ids):
            for row in self.engine.rows(f"SELECT * FROM ingestion_queue WHERE queue_id IN "
                                        f"({marks})" + self.dialect.lock_rows, part):
                found[row["queue_id"]] = row
        return found

    def delete_claimed(self, queue_ids: Sequence[str], owner: str) -> set[str]:
        """Delete the rows among these that `owner` holds in progress; the ids deleted."""
        gone: set[str] = set()
        for part, marks in in_parts(queue_ids):
            gone.update(r[0] for r in self.conn.execute(
                "DELETE FROM ingestion_queue WHERE status = 'in_progress' AND lease_owner = ? "
                f"AND queue_id IN ({marks}) RETURNING queue_id",
                (owner, *part)))
        return gone

    def set_fields(self, queue_id: str, fields: dict[str, Any]) -> None:
        """Overwrite columns of one queue row."""
        unknown = set(fields) - QUEUE_NAMES
        if unknown:
            raise ValueError(f"not queue columns: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.conn.execute(f"UPDATE ingestion_queue SET {sets} WHERE queue_id = ?",
                          (*fields.values(), queue_id))

    def purge(self, status: str) -> int:
        """Delete every row of a status; returns how many."""
        self.conn.execute("DELETE FROM ingestion_queue WHERE status = ?", (status,))
        return self.conn.changes()


def claim_order(row: dict[str, Any]) -> tuple:
    """The order claims take rows in: priority (highest first), scheduled_at,
    queued_timestamp (the id breaks ties)."""
    return (-row["priority"], row["scheduled_at"], row["queued_timestamp"], row["queue_id"])
