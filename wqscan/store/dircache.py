"""Rows of `wq_dircache`: the directory cache, one entry per directory listed when it had
not changed for a while (scan/listings.py holds their layout). Only an accelerator: an
entry lost or dropped makes the next scan list that directory again."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from .snapshot import key_end

if TYPE_CHECKING:
    from .contract import Tables


class DirCacheRows:
    """The directory cache part of `Store`."""

    def listings(self: "Tables", watch_id: str, scope: Sequence[str] = ()
                 ) -> Iterator[tuple[str, bytes]]:
        """(key, entry) in key order: all of a watch's, or those of a scope's subtree."""
        if not self.own_tables():
            return iter(())
        if not scope:
            return self.engine.long_read("SELECT dir, listing FROM wq_dircache "
                                         "WHERE watch_id = ? ORDER BY dir", (watch_id,))
        key = "/".join(scope) + "/"
        return self.engine.long_read("SELECT dir, listing FROM wq_dircache WHERE watch_id = ? "
                                     "AND dir >= ? AND dir < ? ORDER BY dir",
                                     (watch_id, key, key_end(key)))

    def write_listings(self: "Tables", watch_id: str, dropped: Iterable[str],
                       rows: Iterable[tuple[str, bytes]]) -> None:
        """Delete the entries of `dropped` directories, then upsert (key, entry)."""
        self.engine.dir_rows.replace("wq_dircache", ("listing",), watch_id, dropped, rows)
