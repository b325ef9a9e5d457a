"""The deletes a watch queues when it lets go of its files (removed with `--emit-deletes`,
moved to another tree or collection), and the files another watch still covers.

Apart from the rest of `wqscan.watches`, which `reconcile` reads at every start: these need
the scanner, the queue writes and git, which a run without watches never loads."""
from __future__ import annotations

import os
from typing import Iterator

from .. import _scan
from ..clock import iso_from_ns
from ..model import DELETE_PRIORITY, Watch
from ..queue.writes import Enqueued, Row, RowMaker, enqueue
from ..scan import gitinfo
from ..scan.labels import Labels
from ..scan.records import Change
from ..store import Store
from . import list_watches, overlap


def queue_deletes(store: Store, watch: Watch) -> Enqueued:
    """A delete of every file of the watch's snapshot that no other watch of its collection
    covers, into its collection (nothing for a watch that queues nothing)."""
    return enqueue(store, list(_delete_rows(store, watch))) if watch.auto_ingest else Enqueued()


def forget_tree(store: Store, old: Watch) -> Enqueued:
    """The watch leaves its tree or collection: a delete of every file it queued goes into
    the old collection, and the snapshot goes, so that the next scan ingests afresh."""
    done = queue_deletes(store, old)
    store.drop_snapshot(old.watch_id)
    return done


def _delete_rows(store: Store, watch: Watch) -> Iterator[Row]:
    maker = RowMaker(watch, iso_from_ns(store.clock_ns()))
    coverage = Coverage(store, watch)
    projects: dict[str, gitinfo.Project] = {}
    rows = list(store.snapshot_rows(watch.watch_id))
    labels = Labels(store, watch.watch_id)
    labels.load([key for key, _ in rows])
    for key, blob in rows:
        directory = os.path.join(watch.path, key)
        root = gitinfo.project_root_above(directory.rstrip("/"), watch.path)
        project = projects.get(root)
        if project is None:
            project = projects[root] = gitinfo.describe(root, lambda p, m: None)
        for e in _scan.decode_entries(blob):
            if coverage.covers(maker.prefix + key + e.name):
                continue
            change = Change("delete", key + e.name, e.size, e.mtime_ns, e.ino, e.hash, None)
            tenant, branch = labels.of(key, e.name) or (project.tenant_id, project.branch)
            yield maker.row(change, tenant, branch, DELETE_PRIORITY)


class Coverage:
    """Whether another watch of the same collection still holds a file in its snapshot, so
    that no delete takes away a document it covers (watches that overlap are refused, but
    other programs and older versions may have made some)."""

    def __init__(self, store: Store, watch: Watch) -> None:
        self.store = store
        self.others = [w for w in list_watches(store) if w.watch_id != watch.watch_id
                       and w.collection == watch.collection and overlap(w.path, watch.path)]
        self.names: dict[tuple[str, str], set[str]] = {}

    def covers(self, path: str) -> bool:
        for other in self.others:
            prefix = other.path.rstrip("/") + "/"
            if not path.startswith(prefix):
                continue
            directory, _, name = path[len(prefix):].rpartition("/")
            key = directory + "/" if directory else ""
            names = self.names.get((other.watch_id, key))
            if names is None:
                blob = self.store.snapshot_blob(other.watch_id, key)
                names = {e.name for e in _scan.decode_entries(blob)} if blob else set()
                self.names[other.watch_id, key] = names
            if name in names:
                return True
        return False
