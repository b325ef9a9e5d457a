"""Binary COPY of many rows into a table, inside the transaction already open: one stream
instead of a statement (or an array element) per row and column."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from .pg_conn import PgConn

# PostgreSQL's type of each column wqscan copies rows into (binary COPY needs them exact).
COLUMN_TYPES = {"nfiles": "int8", "entries": "bytea", "listing": "bytea", "priority": "int8"}

# The staging table of queue rows: a batch is copied in, then inserted by one INSERT ..
# SELECT (ON CONFLICT needs a statement; COPY has none). Temporary: one per connection,
# made by the first transaction that needs it, emptied at each COMMIT and before each
# batch (a transaction may stage several).
QUEUE_STAGE = "wq_queue_stage"
QUEUE_STAGE_COLUMNS = ("queue_id", "file_absolute_path", "collection_name", "tenant_id",
                       "branch", "operation", "priority", "watch_id", "metadata",
                       "queued_timestamp", "scheduled_at")


def stage_queue_rows(conn: PgConn, rows: Iterable[Sequence[Any]]) -> None:
    """Copy `rows` into the staging table of queue rows, made first if this connection
    has none, emptied of an earlier batch of this transaction if it has one."""
    columns = ", ".join(f"{c} {'BIGINT' if COLUMN_TYPES.get(c) == 'int8' else 'TEXT'}"
                        for c in QUEUE_STAGE_COLUMNS)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {QUEUE_STAGE} ({columns}) "
                 "ON COMMIT DELETE ROWS")
    conn.execute(f"DELETE FROM {QUEUE_STAGE}")  # reads no page when COMMIT emptied it
    copy_rows(conn, QUEUE_STAGE, QUEUE_STAGE_COLUMNS, rows)


def copy_rows(conn: PgConn, table: str, columns: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows (tuples in the order of `columns`) into `table`. The caller has sent a
    statement of this transaction first (its BEGIN goes with the first statement)."""
    with conn.raw.cursor() as cur, cur.copy(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([COLUMN_TYPES.get(c, "text") for c in columns])
        for row in rows:
            copy.write_row(row)
