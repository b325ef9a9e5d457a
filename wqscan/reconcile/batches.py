"""The walk's results on their way to the committer, in batches of bounded size: passed on
as they come when the mass-delete guard cannot trip, else held until the walk ends and the
guard has decided (in memory, and beyond HOLD_CHANGES in a spill file)."""
from __future__ import annotations

import itertools
from functools import partial
from typing import Callable

from ..scan.records import DirResult
from ..store.spill import Spill
from .moves import move_key

CHUNK_CHANGES = 5000  # operations per transaction
CHUNK_DIRS = 2000  # snapshot rows per transaction
HOLD_CHANGES = 20000  # operations held in memory until the guard decides; beyond, spilled


class Batches:
    """The directory results of one walk not yet committed. `streaming`: commit each full
    batch at once (a snapshot the guard cannot trip on); else hold everything until
    `flush`, so that a tripped guard writes nothing."""

    def __init__(self, commit: Callable[[list[DirResult]], None], streaming: bool,
                 minimal: bool) -> None:
        self.commit = commit  # writes one batch (one transaction)
        self.streaming = streaming
        self.minimal = minimal  # moves are keyed without the inode
        self.pending: list[DirResult] = []
        self.pending_changes = 0
        self.spill: Spill | None = None  # results beyond HOLD_CHANGES, until the guard decides

    def add(self, result: DirResult) -> None:
        """Take one directory's result; commit or spill what is pending once it is a batch."""
        self.pending.append(result)
        self.pending_changes += len(result.changes)
        if self.streaming:
            if self.pending_changes >= CHUNK_CHANGES or len(self.pending) >= CHUNK_DIRS:
                batch, self.pending, self.pending_changes = self.pending, [], 0
                self.commit(batch)
        elif self.pending_changes >= HOLD_CHANGES or len(self.pending) >= CHUNK_DIRS:
            self._spill()

    def spilled(self) -> Spill:
        """Everything held, in the spill file (where the guard counts moves and git's
        deletes)."""
        self._spill()
        assert self.spill is not None
        return self.spill

    def flush(self) -> None:
        """Commit (or, on a dry run, list) everything held, in batches."""
        batch: list[DirResult] = []
        size = 0
        for r in itertools.chain(self.spill or (), self.pending):
            batch.append(r)
            size += len(r.changes)
            if size >= CHUNK_CHANGES or len(batch) >= CHUNK_DIRS:
                self.commit(batch)
                batch, size = [], 0
        self.commit(batch)
        self.pending, self.pending_changes = [], 0

    def close(self) -> None:
        """Remove the spill file, if there is one."""
        if self.spill is not None:
            self.spill.close()

    def _spill(self) -> None:
        """Move what is pending to the spill file: held results stay bounded in memory."""
        if self.spill is None:
            self.spill = Spill()
        self.spill.add(self.pending, partial(move_key, minimal=self.minimal))
        self.pending, self.pending_changes = [], 0
