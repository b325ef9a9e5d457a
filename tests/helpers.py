"""Plain helpers for tests: trees with exact mtimes, watches, scans, queue contents."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import apsw
import pytest

from wqscan import _scan, _scan_py
from wqscan.reconcile import WatchReport, reconcile
from wqscan.store import Store
from wqscan.watches import add_watch

#: A fixed mtime well in the past (2023-11-14), so that settle never defers test files.
OLD_NS = 1_700_000_000_123_456_789
#: The names both scanner twins export.
TWIN_NAMES = ("walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules")


def load_twin(name: str):
    """The scanner module for id `c` or `py`; `c` skips only when the variable asks for Python."""
    if name == "py":
        return _scan_py
    if _scan.NO_EXTENSIONS:
        pytest.skip("WQSCAN_NO_EXTENSIONS asks for the pure-Python scanner")
    from wqscan import _scan_c

    return _scan_c


def write(path: Path, content: bytes | str = b"x", mtime_ns: int = OLD_NS) -> Path:
    """Create or overwrite a file (and its parents) and set its mtime exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def watch(store: Store, root: Path, collection: str = "c", **kw: Any) -> str:
    """Register `root` (settle 0 unless given) and return the watch id."""
    kw.setdefault("settle", 0)
    return add_watch(store, str(root), collection, **kw).watch_id


def scan(store: Store, *ids: str, **kw: Any) -> WatchReport:
    """Reconcile the given watches (default: all enabled); returns the first report."""
    return reconcile(store, list(ids), **kw)[0]


def queue(store: Store, status: str | None = "pending") -> list[dict[str, Any]]:
    """Rows of ingestion_queue (by default the pending ones), metadata decoded."""
    sql = "SELECT * FROM ingestion_queue"
    args: tuple = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    cur = store.conn.execute(sql + " ORDER BY file_absolute_path", args)
    rows = []
    for r in cur:
        row = dict(zip([d[0] for d in cur.get_description()], r))
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else None
        rows.append(row)
    return rows


def read_rows(db: Path | str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a query on a fresh read-only connection, as another process would read them
    while wqscan processes write (it waits out a writer's lock instead of failing)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def read_dicts(db: Path | str, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    """read_rows, each row as {column: value}."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        cur = conn.execute(sql, args)
        rows, names = [], None
        for r in cur:
            names = names or [d[0] for d in cur.get_description()]
            rows.append(dict(zip(names, r)))
        return rows
    finally:
        conn.close()


def ops(store: Store) -> dict[str, str]:
    """{relative path: operation} of the pending rows of every watch."""
    return {(r["metadata"] or {}).get("relative_path", r["file_absolute_path"]): r["operation"]
            for r in queue(store)}


def drain(store: Store) -> None:
    """Acknowledge everything pending, as a consumer that completed it would."""
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue WHERE status = 'pending'")
