"""Rows of `wq_labels`: for each snapshot directory, the tenant and branch its files were
last queued with (JSON: `""` the directory's usual pair, a name one that differs), so that
a delete carries the pair its file was ingested under, not the current checkout's."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from . import Store

_BATCH = 500  # values in one IN (...) list


class LabelRows:
    """The label part of `Store`."""

    def labels(self: "Store", watch_id: str, keys: Sequence[str]) -> dict[str, str]:
        """The labels text of those directories (keys) that have one."""
        if not self.own_tables():
            return {}
        found = {}
        for i in range(0, len(keys), _BATCH):
            part = keys[i:i + _BATCH]
            found.update(self.conn.execute(
                "SELECT dir, labels FROM wq_labels WHERE watch_id = ? AND dir IN "
                f"({', '.join('?' for _ in part)})", (watch_id, *part)))
        return found

    def write_labels(self: "Store", watch_id: str, dropped: Iterable[str],
                     rows: Iterable[tuple[str, str]]) -> None:
        """Delete the labels of `dropped` directories, then upsert (key, labels text)."""
        self.conn.executemany("DELETE FROM wq_labels WHERE watch_id = ? AND dir = ?",
                              [(watch_id, key) for key in dropped])
        self.conn.executemany(
            "INSERT INTO wq_labels (watch_id, dir, labels) VALUES (?, ?, ?) "
            "ON CONFLICT (watch_id, dir) DO UPDATE SET labels = excluded.labels",
            [(watch_id, *row) for row in rows])
