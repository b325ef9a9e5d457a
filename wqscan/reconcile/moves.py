"""Which deletes and ingests of one scan are moves: the same content (and inode, unless the
watch compares minimal stat fields) leaving one path and arriving at another."""
from __future__ import annotations

from ..scan.records import Change

MOVE_MEMORY = 100_000  # unpaired deletes (and ingests) remembered for pairing


def move_key(c: Change, minimal: bool) -> tuple:
    """What a delete and an ingest must share to be one move."""
    return (c.hash,) if minimal else (c.hash, c.ino)


class Moves:
    """The files of one scan still waiting for the other half of a move, as the scan meets
    them in key order (a move's ingest may come before or after its delete)."""

    def __init__(self, minimal: bool) -> None:
        self.minimal = minimal
        self.deleted: dict[tuple, str] = {}  # key -> path of a file deleted this scan
        self.ingested: dict[tuple, str] = {}  # key -> path of a file ingested this scan

    def delete(self, c: Change, path: str) -> str | None:
        """A delete of `path`: the path of the ingest it pairs with, else None (and the
        delete waits for one)."""
        key = move_key(c, self.minimal)
        target = self.ingested.pop(key, None)
        if target is None:
            _remember(self.deleted, key, path)
        return target

    def ingest(self, c: Change, path: str, wait: bool) -> str | None:
        """An ingest of `path`: the path of the delete it pairs with (moved_from), else
        None; with `wait`, it then waits for a delete to come."""
        key = move_key(c, self.minimal)
        moved_from = self.deleted.pop(key, None)
        if moved_from is None and wait:
            _remember(self.ingested, key, path)
        return moved_from


def _remember(files: dict[tuple, str], key: tuple, path: str) -> None:
    """Remember a file that may pair as a move, forgetting the oldest beyond MOVE_MEMORY:
    a move whose halves are further apart is queued as a delete and an ingest."""
    files[key] = path
    if len(files) > MOVE_MEMORY:
        del files[next(iter(files))]
