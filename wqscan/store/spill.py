"""Scan results held on disk while the mass-delete guard cannot decide yet.

A scan of a watch whose snapshot can trip the guard commits nothing until its walk ends;
what it found waits here rather than in memory, so that a scan with 500k changes stays as
small as one with none, and the guard counts (moves, deletes git made itself) in SQL
rather than in memory. The file is SQLite's private temporary database: unlinked as it is
created, gone when the scan ends or is killed.
"""
from __future__ import annotations

import marshal
from typing import Callable, Iterable, Iterator

import apsw

from ..scan.records import Change, DirResult

SPILL_CACHE_KIB = 4096  # KiB of the spill kept in memory (SQLite's page cache)
_CHUNK = 10_000  # rows per executemany of a stream


class Spill:
    """DirResults in the order they were added; their deletes (directory key, name) and
    ingests with the move key of each, what a delete and an ingest share when they are one
    move."""

    def __init__(self) -> None:
        self.conn = apsw.Connection("")  # "": a private temporary file
        self.conn.pragma("cache_size", -SPILL_CACHE_KIB)
        self.conn.execute(
            "CREATE TABLE results(seq INTEGER PRIMARY KEY, data BLOB NOT NULL);"
            # counted: a delete the guard counts (not one that git made itself)
            "CREATE TABLE changes(key BLOB NOT NULL, is_delete INTEGER NOT NULL, dir TEXT, "
            "name TEXT, counted INTEGER NOT NULL DEFAULT 1);"
            # what git held at the last scan and holds now, and where it may confirm
            "CREATE TABLE held_before(path TEXT PRIMARY KEY) WITHOUT ROWID;"
            "CREATE TABLE held_now(path TEXT PRIMARY KEY) WITHOUT ROWID;"
            "CREATE TABLE confirmable(dir TEXT PRIMARY KEY) WITHOUT ROWID")
        self.count = 0

    def add(self, results: list[DirResult], move_key: Callable[[Change], tuple]) -> None:
        """Hold these results; their deletes and ingests are kept by `move_key`."""
        with self.conn:
            self.conn.executemany("INSERT INTO results(data) VALUES (?)", [
                (marshal.dumps((r.key, r.blob, r.nfiles, [tuple(c) for c in r.changes],
                                r.removed)),) for r in results])
            self.conn.executemany("INSERT INTO changes(key, is_delete, dir, name) "
                                  "VALUES (?, ?, ?, ?)", [
                (marshal.dumps(move_key(c)), c.op == "delete",
                 *((r.key, c.path[len(r.key):]) if c.op == "delete" else (None, None)))
                for r in results for c in r.changes if c.op in ("delete", "ingest")])
        self.count += len(results)

    def deleted_dirs(self) -> list[str]:
        """The keys of the directories that lost files, in key order."""
        return [d for (d,) in self.conn.execute(
            "SELECT DISTINCT dir FROM changes WHERE is_delete ORDER BY dir")]

    def hold(self, paths: Iterable[str], before: bool) -> None:
        """Paths (relative to the root) git held at the last scan (`before`), or holds now,
        as git lists them: streamed, in chunks, never all in memory."""
        sql = f"INSERT OR IGNORE INTO {'held_before' if before else 'held_now'} VALUES (?)"
        with self.conn:
            batch: list[tuple[str]] = []
            for path in paths:
                batch.append((path,))
                if len(batch) >= _CHUNK:
                    self.conn.executemany(sql, batch)
                    batch = []
            self.conn.executemany(sql, batch)

    def confirm(self, confirmable: Iterable[str]) -> int:
        """Mark as not counted the deletes, in these directories, of paths git held at the
        last scan and no longer holds; returns how many deletes are still counted."""
        with self.conn:
            self.conn.executemany("INSERT OR IGNORE INTO confirmable VALUES (?)",
                                  [(d,) for d in confirmable])
            self.conn.execute(
                "UPDATE changes SET counted = 0 WHERE is_delete "
                "AND dir IN (SELECT dir FROM confirmable) "
                "AND dir || name IN (SELECT path FROM held_before) "
                "AND dir || name NOT IN (SELECT path FROM held_now)")
        return self.conn.execute("SELECT count(*) FROM changes WHERE is_delete AND counted"
                                 ).fetchall()[0][0]

    def moves(self) -> int:
        """How many counted deletes pair with an ingest of the same key."""
        return self.conn.execute(
            "SELECT coalesce(sum(min(d, i)), 0) FROM (SELECT sum(is_delete AND counted) AS d, "
            "sum(NOT is_delete) AS i FROM changes GROUP BY key)").fetchall()[0][0]

    def __iter__(self) -> Iterator[DirResult]:
        for (data,) in self.conn.execute("SELECT data FROM results ORDER BY seq"):
            key, blob, nfiles, changes, removed = marshal.loads(data)
            yield DirResult(key, blob, nfiles, [Change(*c) for c in changes], removed)

    def close(self) -> None:
        self.conn.close()
