"""A database file as another process reads it: a fresh connection of its own and raw SQL,
waiting out a writer's lock. For what the store cannot show (every table's content, the
file's integrity, what other tools' tables hold) and for reading while wqscan processes
write; anything else is read through the store (helpers.db)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import apsw


@contextmanager
def read_only(db: Path | str, busy_ms: int = 5000) -> Iterator[apsw.Connection]:
    """A fresh read-only connection, as another process would read the database while
    wqscan processes write (it waits out a writer's lock for `busy_ms` instead of failing)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(busy_ms)
        yield conn
    finally:
        conn.close()


def read_rows(db: Path | str, sql: str, args: tuple = (), busy_ms: int = 5000) -> list[tuple]:
    """Rows of a query on a fresh read-only connection (read_only)."""
    with read_only(db, busy_ms) as conn:
        return conn.execute(sql, args).fetchall()


def read_dicts(db: Path | str, sql: str, args: tuple = (), busy_ms: int = 5000
               ) -> list[dict[str, Any]]:
    """read_rows, each row as {column: value}."""
    with read_only(db, busy_ms) as conn:
        cur = conn.execute(sql, args)
        rows, names = [], None
        for r in cur:
            names = names or [d[0] for d in cur.get_description()]
            rows.append(dict(zip(names, r)))
        return rows


def read_dict(db: Path | str, sql: str, args: tuple = ()) -> dict[str, Any] | None:
    """The first row of read_dicts; None when there is none, or no such table yet (polled
    before the schema was created)."""
    try:
        rows = read_dicts(db, sql, args)
    except apsw.SQLError:
        return None
    return rows[0] if rows else None


def dump_db(db: Path | str) -> list:
    """Every table's rows in a stable order, and the schema version: the database's logical
    content (the files themselves change when connections come and go in WAL mode)."""
    with read_only(db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = [conn.pragma("user_version")]
        for t in tables:
            out.append((t, sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)))
        return out


def drain_db(db: Path | str, busy_ms: int = 5000) -> None:
    """drain, on a connection of its own (while wqscan processes use the database)."""
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(busy_ms)
        conn.execute("DELETE FROM ingestion_queue WHERE status = 'pending'")
    finally:
        conn.close()


def assert_one_ingest_per_file(db: Path | str, files: set[str]) -> None:
    """The queue holds exactly one pending ingest for every file and nothing else."""
    rows = read_rows(db, "SELECT file_absolute_path, status, operation FROM ingestion_queue")
    assert len(rows) == len(files), f"{len(rows)} rows for {len(files)} files"
    assert {p for p, _, _ in rows} == files
    assert {(s, o) for _, s, o in rows} == {("pending", "ingest")}
