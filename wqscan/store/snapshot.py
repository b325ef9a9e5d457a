"""Rows of `wq_snapshot`: one per scanned directory holding in-scope files, its entries
packed by the scanner and keyed by the directory's path relative to the root plus `/`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .dialect import in_parts

if TYPE_CHECKING:
    from .contract import Connection, Tables


class SnapshotRows:
    """The snapshot part of `Store`."""

    def snapshot_rows(self: "Tables", watch_id: str, scope: Sequence[str] = ()
                      ) -> Iterator[tuple[str, bytes]]:
        """(key, blob) rows in key order: all of them, or for a scope (path components)
        the rows of its ancestors and of its subtree."""
        if not self.own_tables():
            return iter(())
        if not scope:
            return self.engine.long_read("SELECT dir, entries FROM wq_snapshot "
                                         "WHERE watch_id = ? ORDER BY dir", (watch_id,))
        ancestors = ["/".join(scope[:i]) + "/" if i else "" for i in range(len(scope))]
        key = "/".join(scope) + "/"
        marks = ", ".join("?" for _ in ancestors)
        return self.engine.long_read(
            f"SELECT dir, entries FROM wq_snapshot WHERE watch_id = ? AND (dir IN ({marks}) "
            "OR (dir >= ? AND dir < ?)) ORDER BY dir",
            (watch_id, *ancestors, key, key_end(key)))

    def snapshot_blob(self: "Tables", watch_id: str, key: str) -> bytes | None:
        """The packed entries of one directory (its key), if the snapshot holds it."""
        if not self.own_tables():
            return None
        return self.engine.dir_rows.one("wq_snapshot", "entries", watch_id, key)

    def snapshot_files(self: "Tables", watch_id: str, key: str = "") -> int:
        """Number of files recorded at or below `key`."""
        if not self.own_tables():
            return 0
        sql, args = "SELECT coalesce(sum(nfiles), 0) FROM wq_snapshot WHERE watch_id = ?", \
            (watch_id,)
        if key:
            sql, args = sql + " AND dir >= ? AND dir < ?", (watch_id, key, key_end(key))
        return int(self.conn.execute(sql, args).fetchall()[0][0])

    def drop_snapshot(self: "Tables", watch_id: str) -> None:
        """Forget every file of a watch: its next scan is a first scan."""
        for table in ("wq_snapshot", "wq_labels", "wq_dircache"):
            self.conn.execute(f"DELETE FROM {table} WHERE watch_id = ?", (watch_id,))

    def write_snapshot(self: "Tables", watch_id: str, dropped: Iterable[str],
                       rows: Iterable[tuple[str, int, bytes]]) -> None:
        """Delete the rows of the `dropped` directories, then upsert (key, nfiles, blob)."""
        self.engine.dir_rows.replace("wq_snapshot", ("nfiles", "entries"), watch_id, dropped,
                                     rows)


class PlainDirRows:
    """Rows keyed by (watch, directory key) found by the key itself (SQLite: any length
    of key fits its index)."""

    def __init__(self, conn: "Connection") -> None:
        self.conn = conn

    def one(self, table: str, column: str, watch_id: str, key: str) -> Any:
        for (value,) in self.conn.execute(f"SELECT {column} FROM {table} WHERE watch_id = ? "
                                          "AND dir = ?", (watch_id, key)):
            return value
        return None

    def many(self, table: str, column: str, watch_id: str, keys: Sequence[str]
             ) -> dict[str, Any]:
        found = {}
        for part, marks in in_parts(keys):
            found.update(self.conn.execute(
                f"SELECT dir, {column} FROM {table} WHERE watch_id = ? AND dir IN ({marks})",
                (watch_id, *part)))
        return found

    def replace(self, table: str, columns: Sequence[str], watch_id: str,
                dropped: Iterable[str], rows: Iterable[tuple]) -> None:
        """Delete the rows of the `dropped` keys, then upsert rows (key, *columns)."""
        self.conn.executemany(f"DELETE FROM {table} WHERE watch_id = ? AND dir = ?",
                              [(watch_id, key) for key in dropped])
        self.conn.executemany(
            f"INSERT INTO {table} (watch_id, dir, {', '.join(columns)}) VALUES "
            f"(?, ?, {', '.join('?' for _ in columns)}) ON CONFLICT (watch_id, dir) DO UPDATE "
            "SET " + ", ".join(f"{c} = excluded.{c}" for c in columns),
            [(watch_id, *row) for row in rows])


def key_end(key: str) -> str:
    """The smallest key after every key that starts with `key` (which ends in '/')."""
    return key[:-1] + "0"  # '0' is the byte after '/'
