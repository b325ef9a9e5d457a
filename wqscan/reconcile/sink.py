"""What a walk reports, received for one scan: the snapshot it reads, the project roots it
meets, the directory results it emits, its warnings and its progress."""
from __future__ import annotations

from typing import Iterable

from ..scan.records import IO_ERRNOS, DirResult
from ..store import Store
from .batches import Batches
from .listings import Listings
from .options import ScanOptions, Warn
from .projects import Projects
from .report import MAX_KEPT_WARNINGS, WatchReport
from .root import Root


class Warnings:
    """The warnings of one scan: kept in the report (the first MAX_KEPT_WARNINGS), told to
    `on_warning`, and those that are I/O errors counted against the root."""

    def __init__(self, watch_id: str, report: WatchReport, root: Root,
                 on_warning: Warn | None) -> None:
        self.wid, self.report, self.root, self.on_warning = watch_id, report, root, on_warning

    def __call__(self, rel: str, message: str, err: int = 0) -> None:
        """A local problem at `rel` (relative to the root), with its errno if it is one."""
        if err in IO_ERRNOS:
            self.root.io_error(f"{rel or '.'}: {message}")
        if len(self.report.warnings) < MAX_KEPT_WARNINGS:  # a name not UTF-8 with \xNN
            self.report.warnings.append(f"{rel or '.'}: {message}".encode(
                "utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        if self.on_warning is not None:
            self.on_warning(self.wid, rel, message)


class Sink:
    """The hooks of one walk (a `ScanHooks`): operations counted in the report, results
    handed to the batches, directory cache entries to the listings, project roots to the
    projects, warnings to the warnings."""

    def __init__(self, store: Store, watch_id: str, scope: tuple[str, ...],
                 report: WatchReport, options: ScanOptions, projects: Projects,
                 batches: Batches, listings: Listings, warnings: Warnings) -> None:
        self.store, self.wid, self.scope, self.report = store, watch_id, scope, report
        self.on_progress = options.on_progress
        self.projects, self.batches, self.warnings = projects, batches, warnings
        self.cache = listings

    def rows(self) -> Iterable[tuple[str, bytes]]:
        """The snapshot rows of the scanned part, in key order."""
        return self.store.snapshot_rows(self.wid, self.scope)

    def listings(self) -> Iterable[tuple[str, bytes]]:
        """The directory cache's entries of the scanned part, in key order."""
        return self.cache.entries()

    def listing(self, key: str, entry: bytes | None) -> None:
        """A directory listed anew: its cache entry, or None to forget it."""
        self.cache.put(key, entry)

    def repo(self, rel: str) -> None:
        """Directory `rel` holds `.git`: a project root."""
        self.projects.add(rel)

    def emit(self, result: DirResult) -> None:
        """One directory's result: its operations counted, the result batched."""
        for c in result.changes:
            if c.op == "ingest":
                self.report.ingest += 1
            elif c.op == "update":
                self.report.update += 1
            else:
                self.report.delete += 1
        self.batches.add(result)

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        """A local problem the walk went past."""
        self.warnings(rel, message, err)

    def progress(self, files: int, dirs: int, bytes_hashed: int) -> None:
        """Counts so far, with the operations found, for a progress line."""
        if self.on_progress is not None:
            r = self.report
            self.on_progress(self.wid, files, dirs, r.ingest + r.update + r.delete,
                             bytes_hashed)
