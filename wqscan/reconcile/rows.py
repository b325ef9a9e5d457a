"""The queue rows of a scan's batches: each change with its file's tenant and branch, its
priority, the pair a delete was queued with, and moves paired across the whole scan."""
from __future__ import annotations

from itertools import repeat

from ..clock import iso_from_ns
from ..model import DEFAULT_PRIORITY, DELETE_PRIORITY, Watch
from ..queue.writes import Row, RowMaker
from ..scan.filters import compile_patterns, first_match
from ..scan.labels import Labels
from ..scan.records import Change, DirResult
from ..store import Store
from ..watches.deletes import Coverage
from .moves import Moves
from .projects import Projects

Late = list[tuple[str, str]]  # (path of an ingest written earlier, the path it moved from)


def labels_gone(labels: Labels, result: DirResult) -> None:
    """The directories a result takes out of the snapshot lose their labels."""
    for key in result.removed:
        labels.drop(key)


class Rows:
    """Builds the queue rows of one scan, batch by batch. `track_ingests`: the snapshot
    held files before (not a first scan), so files have labels and an ingest may still
    pair with a delete in a later batch."""

    def __init__(self, store: Store, watch: Watch, labels: Labels, coverage: Coverage,
                 projects: Projects, minimal: bool, track_ingests: bool) -> None:
        self.store, self.watch, self.labels, self.projects = store, watch, labels, projects
        self.coverage = coverage  # other watches of the collection over the tree
        self.track_ingests = track_ingests
        self.moves = Moves(minimal)
        self.priorities: list | None = None  # compiled when the first operation needs them

    def build(self, batch: list[DirResult]) -> tuple[list[Row], Late]:
        """Queue rows for a batch, with moves paired; also the moves of ingests committed
        in earlier batches, found only now."""
        # queue times by the store's clock: the server's where several hosts queue rows
        maker = RowMaker(self.watch, iso_from_ns(self.store.clock_ns()),
                         expected=sum(len(r.changes) for r in batch))
        rows: list[Row] = []
        in_batch: dict[str, tuple[int, Change]] = {}  # ingests that may still get moved_from
        late: Late = []
        rules = self.watch.priority_rules
        labels = self.labels
        if self.track_ingests:  # files of an earlier snapshot have labels
            labels.load([r.key for r in batch if r.changes])
        for r in batch:
            if not r.changes:
                labels_gone(labels, r)
                continue
            project = self.projects.of(r.key[:-1])
            pair = (project.tenant_id, project.branch)
            if not self.track_ingests:
                labels.queued_dir(r.key, pair)
                if not self.moves.deleted and all(c.op == "ingest" for c in r.changes):
                    priorities = ([self._priority(c.path) for c in r.changes] if rules
                                  else repeat(DEFAULT_PRIORITY))
                    rows += maker.ingests(r.changes, pair[0], pair[1], priorities)
                    labels_gone(labels, r)
                    continue  # the common case of a first scan: nothing to pair
            for c in r.changes:
                path = maker.prefix + c.path
                moved_from = None
                name = c.path[len(r.key):]
                if c.op == "delete":
                    tenant, branch = labels.of(r.key, name) or pair  # as it was queued
                    labels.gone(r.key, name)
                    if self.coverage.others and self.coverage.covers(path):
                        continue  # another watch of the collection still holds the document
                    priority = DELETE_PRIORITY
                    target = self.moves.delete(c, path)
                    if target in in_batch:  # an ingest of this batch gets its moved_from
                        i, ingest = in_batch.pop(target)
                        rows[i] = rows[i]._replace(metadata=maker.metadata(ingest, path))
                    elif target is not None:  # ...or is annotated after its batch was written
                        late.append((target, path))
                else:
                    tenant, branch = pair
                    labels.queued(r.key, name, pair)
                    priority = self._priority(c.path) if rules else DEFAULT_PRIORITY
                    if c.op == "ingest":
                        moved_from = self.moves.ingest(c, path, wait=self.track_ingests)
                        if moved_from is None and self.track_ingests:
                            in_batch[path] = (len(rows), c)
                rows.append(maker.row(c, tenant, branch, priority, moved_from))
            labels_gone(labels, r)
        return rows, late

    def _priority(self, rel: str) -> int:
        """The priority of the first of the watch's priority rules matching `rel`."""
        if self.priorities is None:
            self.priorities = [(compile_patterns([g], "priority glob"), n)
                               for g, n in self.watch.priority_rules]
        return first_match(self.priorities, rel, DEFAULT_PRIORITY)
