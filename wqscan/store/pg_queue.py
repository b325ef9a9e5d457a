"""The wqscan-layout queue in PostgreSQL: what differs from the SQLite queue."""
from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from ..errors import DatabaseBusy, WriteAgain
from . import pg_schema
from .dialect import BUSY_RETRIES, POSTGRES
from .pg_conn import psycopg
from .pg_copy import QUEUE_STAGE, QUEUE_STAGE_COLUMNS, stage_queue_rows
from .pg_schema import digests
from .queue_wqscan import WqscanQueue, claim_order
from .rows import Pending, Row

if TYPE_CHECKING:
    from .postgres import PgEngine

T = TypeVar("T")


class PgQueue(WqscanQueue):
    """The wqscan-layout queue in PostgreSQL: rows found through digests of their files,
    and a batch of rows inserted in one statement (row locks: the dialect's)."""

    engine: PgEngine
    # a file with a pending row was met on this connection: rows go in with ON CONFLICT
    met_pending = False
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
        insert = f"INSERT INTO ingestion_queue ({columns}) SELECT {columns} FROM {QUEUE_STAGE}"
        if self.engine.rerunnable and not self.met_pending:
            went = self._insert_plain(insert)
        else:
            went = self.conn.execute(
                f"{insert} ON CONFLICT ({pg_schema.FILE_KEY}) WHERE status = 'pending' "
                "DO NOTHING").rowcount
        if went:
            self.engine.notify = True
        if went == len(rows):
            return None
        return {r[0] for r in self.conn.execute(
            "SELECT queue_id FROM ingestion_queue WHERE queue_id = ANY(?)",
            ([r.queue_id for r in rows],))}

    def _insert_plain(self, insert: str) -> int:
        """Rows count of `insert` without ON CONFLICT, which spares the server about a third
        of its work per row (docs/scaling-out.md). A file with a pending row already
        aborts it: from then on this connection inserts the careful way, and the
        transaction is run again (WriteAgain)."""
        try:
            return self.conn.execute(insert).rowcount
        except psycopg.errors.UniqueViolation as e:
            if e.diag.constraint_name != pg_schema.OWN_INDEXES[0]:
                raise
            self.met_pending = True
            raise WriteAgain(f"database {self.engine.path}: a file already has a pending "
                             "row; written again with ON CONFLICT") from None

    alone_ok = True

    def alone(self, body: Callable[[], T], retries: Sequence[float] = BUSY_RETRIES) -> T:
        """`body`, a write of one statement (then reads only), sent without BEGIN and
        COMMIT: the statement is a transaction of its own, in one round trip. A conflict
        the server aborts it for is retried after each of `retries` seconds, then
        DatabaseBusy, as `Store.transact` retries a transaction."""
        for delay in (*retries, None):
            try:
                with self.conn.once():
                    return body()
            except psycopg.Error as e:
                error = self.conn.error(e)
                if not isinstance(error, DatabaseBusy):
                    raise error from None
                if delay is None:
                    raise DatabaseBusy(f"{error} (retried {len(retries)} times)") from None
            time.sleep(delay)
        raise AssertionError("the last attempt returns or raises")

    def claim(self, n: int, lease_seconds: float, owner: str, collection: str | None,
              tenant: str | None) -> list[dict[str, Any]]:
        """Move up to n claimable rows, at most one per file, to in_progress under `owner`'s
        lease, in one statement (one round trip) judged by the server's clock; the rows as
        they now stand, in claim order."""
        where, args = "", []
        for column, value in (("collection_name", collection), ("tenant_id", tenant)):
            if value is not None:
                where += f" AND q.{column} = ?"
                args.append(value)
        rows = self.engine.rows(_claim_sql(where), (
            lease_seconds, *args, n, *args, n, n, owner))
        return sorted(rows, key=claim_order)

    def delete_claimed(self, queue_ids: Sequence[str], owner: str) -> set[str]:
        """Delete the rows among these that `owner` holds in progress, in one statement;
        the ids deleted."""
        return {r[0] for r in self.conn.execute(
            "DELETE FROM ingestion_queue WHERE queue_id = ANY(?) AND status = 'in_progress' "
            "AND lease_owner = ? RETURNING queue_id", (list(queue_ids), owner), binary=True)}

    def rows_to_change(self, queue_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Whole rows by id, locked to be rewritten in this transaction, in one statement."""
        return {r["queue_id"]: r for r in self.engine.rows(
            "SELECT * FROM ingestion_queue WHERE queue_id = ANY(?) FOR UPDATE",
            (list(queue_ids),))}

    def set_fields(self, queue_id: str, fields: dict[str, Any]) -> None:
        super().set_fields(queue_id, fields)
        if fields.get("status") == "pending":
            self.engine.notify = True


_TIME = "to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
# now, as the rows hold times: a stable expression, which the planner can compare with
# the claim index (a value from a CTE would make it guess how many rows are due)
_NOW = _TIME.format("statement_timestamp()")
_ORDER = "priority DESC, scheduled_at, queued_timestamp"
_CANDIDATE = ("SELECT q.queue_id, q.file_absolute_path, q.collection_name, q.priority, "
              f"q.scheduled_at, q.queued_timestamp FROM ingestion_queue AS q "
              f"WHERE q.scheduled_at <= {_NOW} AND ")
_IN_PROGRESS = "NOT EXISTS (SELECT 1 FROM ingestion_queue AS a WHERE a.status = 'in_progress' "


@lru_cache(maxsize=8)
def _claim_sql(where: str) -> str:
    """The claim as one statement (`where`: the filters on q): due pending rows of files
    with no row in progress, and due in-progress rows whose lease expired (or that never
    had one) of files with no other row under a live lease, each kind in claim order and
    passing over rows other claims locked; then the first of each file, at most n, marked
    in_progress under the lease. Arguments: lease seconds, filters, n, filters, n, n,
    owner."""
    same = POSTGRES.same_file
    take = f" ORDER BY q.{_ORDER.replace(', ', ', q.')} LIMIT ? FOR UPDATE OF q SKIP LOCKED"
    return (
        "WITH t AS MATERIALIZED (SELECT " + _NOW + " AS now, "
        + _TIME.format("statement_timestamp() + make_interval(secs => ?::float8)")
        + " AS expires), "
        f"pend AS MATERIALIZED ({_CANDIDATE}q.status = 'pending'{where} "
        "AND (q.file_absolute_path, q.collection_name) NOT IN (SELECT a.file_absolute_path, "
        f"a.collection_name FROM ingestion_queue AS a WHERE a.status = 'in_progress'){take}), "
        f"expired AS MATERIALIZED ({_CANDIDATE}q.status = 'in_progress' AND "
        f"(q.lease_expires_at IS NULL OR q.lease_expires_at <= {_NOW}){where} "
        f"AND {_IN_PROGRESS}AND {same} AND a.lease_expires_at > {_NOW}){take}), "
        "picked AS (SELECT queue_id FROM (SELECT *, row_number() OVER (PARTITION BY "
        f"file_absolute_path, collection_name ORDER BY {_ORDER}, queue_id) AS nth "
        "FROM (SELECT * FROM pend UNION ALL SELECT * FROM expired) AS cand) AS c "
        f"WHERE nth = 1 ORDER BY {_ORDER}, queue_id LIMIT ?) "
        "UPDATE ingestion_queue AS u SET status = 'in_progress', lease_owner = ?, "
        "lease_expires_at = t.expires FROM picked, t WHERE u.queue_id = picked.queue_id "
        "RETURNING u.*")
