"""Committing a scan's batches: each one transaction holding the snapshot rows of its
directories together with the queue rows of their changes, so that a crash loses neither
half alone."""
from __future__ import annotations

import json

from ..errors import WqscanError
from ..model import Watch
from ..queue.writes import Row, annotate_move, enqueue
from ..scan.labels import Labels
from ..scan.records import DirResult
from ..service import leases
from ..store import Store
from .options import ScanOptions
from .report import WatchReport
from .root import Root
from .rows import Late, Rows


class Committer:
    """Writes the batches of one scan (on a dry run, lists their operations in the report
    instead), after checking the root; renews the lease held by `holder` with each."""

    def __init__(self, store: Store, watch: Watch, report: WatchReport, rows: Rows,
                 labels: Labels, root: Root, options: ScanOptions, holder: str | None) -> None:
        self.store, self.watch, self.report, self.rows = store, watch, report, rows
        self.labels, self.root, self.holder = labels, root, holder
        self.dry_run = options.dry_run

    def commit(self, batch: list[DirResult]) -> None:
        """Write one batch (nothing if it is empty)."""
        if not batch:
            return
        rows, late = self.rows.build(batch)
        if self.dry_run:
            self._list(rows)
            return
        self.root.before_commit()
        try:
            self._write(batch, rows, late)
        except WqscanError:
            self.report.queue_errors += 1
            raise

    def _list(self, rows: list[Row]) -> None:
        """The operations of a dry run, as `reconcile --dry-run --json` shows them."""
        for row in rows:
            meta = json.loads(row.metadata)
            self.report.operations.append(
                {"operation": row.operation, "path": row.file_absolute_path,
                 "priority": row.priority, "tenant_id": row.tenant_id, "branch": row.branch,
                 "relative_path": meta["relative_path"], "content_hash": meta["content_hash"],
                 **({"moved_from": meta["moved_from"]} if "moved_from" in meta else {})})

    def _write(self, batch: list[DirResult], rows: list[Row], late: Late) -> None:
        """One transaction: the snapshot rows of a batch with its queue rows (run again
        whole while the database answers busy)."""
        wid = self.watch.watch_id

        def body() -> int:
            self.store.write_snapshot(
                wid, [key for r in batch for key in r.removed],
                [(r.key, r.nfiles, r.blob) for r in batch if r.blob is not None])
            written = 0
            if self.watch.auto_ingest:
                written = enqueue(self.store, rows).changed
                for path, moved_from in late:
                    annotate_move(self.store, self.watch.collection, path, moved_from)
                self.labels.write()
            self.store.add_stats(wid, {"events_received": len(rows),
                                       "events_processed": written})
            if self.holder is not None:
                leases.renew(self.store, wid, self.holder)
            return written

        self.report.written += self.store.transact(body)
        self.labels.written()
