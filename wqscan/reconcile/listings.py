"""The directory cache of one scan: the entries the walk reads, and those it recorded,
written in transactions of their own (they are true of the tree, not of the snapshot, so
they need not commit with it)."""
from __future__ import annotations

from typing import Iterable, Sequence

from ..store import Store

CHUNK_LISTINGS = 2000  # entries per transaction


class Listings:
    """The entries one walk recorded (`put`), written CHUNK_LISTINGS at a time and the rest
    at `flush`; a dry run writes none."""

    def __init__(self, store: Store, watch_id: str, scope: Sequence[str],
                 dry_run: bool) -> None:
        self.store, self.wid, self.scope, self.dry_run = store, watch_id, scope, dry_run
        self.pending: list[tuple[str, bytes | None]] = []

    def entries(self) -> Iterable[tuple[str, bytes]]:
        """The entries of the scanned part, in key order (read only by a walk that uses the
        cache: `ScanParams.dircache`)."""
        return self.store.listings(self.wid, self.scope)

    def put(self, key: str, entry: bytes | None) -> None:
        """Directory `key` was listed anew: its entry (None: forget its old one)."""
        if self.dry_run:
            return
        self.pending.append((key, entry))
        if len(self.pending) >= CHUNK_LISTINGS:
            self.flush()

    def flush(self) -> None:
        """Write what is pending, in one transaction."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        dropped = [k for k, e in batch if e is None]
        rows = [(k, e) for k, e in batch if e is not None]
        self.store.transact(lambda: self.store.write_listings(self.wid, dropped, rows))
