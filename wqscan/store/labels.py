"""Rows of `wq_labels`: for each snapshot directory, the tenant and branch its files were
last queued with (JSON: `""` the directory's usual pair, a name one that differs), so that
a delete carries the pair its file was ingested under, not the current checkout's."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from .contract import Tables


class LabelRows:
    """The label part of `Store`."""

    def labels(self: "Tables", watch_id: str, keys: Sequence[str]) -> dict[str, str]:
        """The labels text of those directories (keys) that have one."""
        if not self.own_tables():
            return {}
        return self.engine.dir_rows.many("wq_labels", "labels", watch_id, keys)

    def write_labels(self: "Tables", watch_id: str, dropped: Iterable[str],
                     rows: Iterable[tuple[str, str]]) -> None:
        """Delete the labels of `dropped` directories, then upsert (key, labels text)."""
        self.engine.dir_rows.replace("wq_labels", ("labels",), watch_id, dropped, rows)
