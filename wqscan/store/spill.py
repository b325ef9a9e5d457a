"""Scan results held on disk while the mass-delete guard cannot decide yet.

A scan of a watch whose snapshot can trip the guard commits nothing until its walk ends;
what it found waits here rather than in memory once there is much of it, so that a scan
with 500k changes stays as small as one with none. The file is SQLite's private temporary
database: unlinked as it is created, gone when the scan ends or is killed.
"""
from __future__ import annotations

import marshal
from typing import Callable, Iterator

import apsw

from ..records import Change, DirResult

CACHE_KIB = 4096  # pages of the spill kept in memory


class Spill:
    """DirResults in the order they were added, and the move keys of their changes."""

    def __init__(self) -> None:
        self.conn = apsw.Connection("")  # "": a private temporary file
        self.conn.pragma("cache_size", -CACHE_KIB)
        self.conn.execute("CREATE TABLE results(seq INTEGER PRIMARY KEY, data BLOB NOT NULL);"
                          "CREATE TABLE moves(key BLOB NOT NULL, op INTEGER NOT NULL)")
        self.count = 0

    def add(self, results: list[DirResult], move_key: Callable[[Change], tuple]) -> None:
        """Hold these results; their deletes and ingests are kept by `move_key`, what a
        delete and an ingest share when they are one move."""
        with self.conn:
            self.conn.executemany("INSERT INTO results(data) VALUES (?)", [
                (marshal.dumps((r.key, r.blob, r.nfiles, [tuple(c) for c in r.changes],
                                r.removed)),) for r in results])
            self.conn.executemany("INSERT INTO moves VALUES (?, ?)", [
                (marshal.dumps(move_key(c)), c.op == "delete") for r in results
                for c in r.changes
                if c.op in ("delete", "ingest")])
        self.count += len(results)

    def moves(self) -> int:
        """How many deletes pair with an ingest of the same key."""
        return self.conn.execute(
            "SELECT coalesce(sum(min(d, i)), 0) FROM (SELECT sum(op) AS d, "
            "sum(1 - op) AS i FROM moves GROUP BY key)").fetchall()[0][0]

    def __iter__(self) -> Iterator[DirResult]:
        for (data,) in self.conn.execute("SELECT data FROM results ORDER BY seq"):
            key, blob, nfiles, changes, removed = marshal.loads(data)
            yield DirResult(key, blob, nfiles, [Change(*c) for c in changes], removed)

    def close(self) -> None:
        self.conn.close()
