"""One scan of one watch: the walk (the scanner twin), and the collaborators it reports to
wired together: the sink, the batches, the guard, the rows and the committer."""
from __future__ import annotations

import os
import time

from .. import _scan
from ..clock import parse_iso
from ..errors import StoreUnreachable, UsageError, WatchFailed
from ..model import Watch
from ..scan.filters import check_patterns
from ..scan.fsinfo import check_stat_mode, dircache_off, fs_type, is_network
from ..scan.labels import Labels
from ..scan.records import EAGER_ALL, RACY_NS, ScanParams
from ..store import Store
from ..watches.deletes import Coverage
from .batches import Batches
from .commit import Committer
from .guard import Guard
from .listings import Listings
from .options import ScanOptions
from .projects import Projects
from .report import WatchReport, record
from .root import Root
from .rows import Rows
from .sink import Sink, Warnings

NETWORK_THREADS = 16
LOCAL_THREADS_MAX = 8


def default_threads(network: bool) -> int:
    """Directories listed at once when a watch does not say: many on a network or FUSE
    mount, where each stat waits for a round trip; one per core on a local disk."""
    return NETWORK_THREADS if network else max(1, min(LOCAL_THREADS_MAX, os.cpu_count() or 1))


def scan_once(store: Store, watch: Watch, scope: tuple[str, ...], report: WatchReport,
              options: ScanOptions, holder: str | None) -> WatchReport:
    """Scan the watch into `report`; a scan that fails says why there (and is recorded
    unless a dry run), and raises only when the store cannot be reached."""
    start_ns = time.time_ns()
    t0 = time.perf_counter()
    try:
        Scan(store, watch, scope, report, options, start_ns, holder).run()
    except StoreUnreachable:  # nothing can be recorded: the command's exit code says it
        raise
    except UsageError as e:  # a bad stored setting: reported, and the exit code says so
        report.ok, report.reason, report.config_error = False, str(e), True
    except WatchFailed as e:
        report.ok, report.reason = False, str(e)
    except Exception as e:  # a scan that could not finish fails its watch, not the run
        report.ok, report.reason = False, f"scan failed: {type(e).__name__}: {e}"
    report.duration = time.perf_counter() - t0
    if not options.dry_run:
        record(store, watch, report, start_ns)
    return report


class Scan:
    """One scan of one watch (of `scope` below its root, if given): checks the root, walks,
    lets the guard decide, commits; `holder` holds the watch's lease."""

    def __init__(self, store: Store, watch: Watch, scope: tuple[str, ...], report: WatchReport,
                 options: ScanOptions, start_ns: int, holder: str | None) -> None:
        self.store, self.watch, self.scope, self.report = store, watch, scope, report
        self.options, self.start_ns, self.holder = options, start_ns, holder
        check_patterns(watch.patterns)
        check_patterns(watch.ignores, "ignore pattern")
        fstype = fs_type(watch.path)
        self.minimal = check_stat_mode(watch.check_stat, fstype) == "minimal"
        self.dircache = dircache_off(fstype, watch.follow_symlinks) is None
        self.threads = options.threads or watch.threads or default_threads(is_network(fstype))
        self.coverage = Coverage(store, watch)  # other watches of the collection over it
        self.labels = Labels(store, watch.watch_id)  # what each file was queued with
        self.root = Root(watch.path, allow_empty=options.allow_mass_delete)
        self.warnings = Warnings(watch.watch_id, report, self.root, options.on_warning)

    def run(self) -> None:
        """Walk the tree and commit what changed, unless the root or the guard says no."""
        wid, store, options = self.watch.watch_id, self.store, self.options
        self.root.open()
        scope_key = "/".join(self.scope) + "/" if self.scope else ""
        snapshot_files = store.snapshot_files(wid, scope_key)
        total_files = store.snapshot_files(wid) if self.scope else snapshot_files
        self.root.expect(total_files, snapshot_files)
        last = self.watch.last_scan
        guard = Guard(self.root.path, snapshot_files, parse_iso(last) if last else None)
        # A snapshot the guard cannot trip on commits its batches as the walk goes.
        streaming = not options.dry_run and (options.allow_mass_delete or not guard.trips(
            snapshot_files))
        projects = Projects(self.root.path, self.warnings)
        rows = Rows(store, self.watch, self.labels, self.coverage, projects, self.minimal,
                    track_ingests=snapshot_files > 0)
        committer = Committer(store, self.watch, self.report, rows, self.labels, self.root,
                              options, self.holder)
        batches = Batches(committer.commit, streaming, self.minimal)
        listings = Listings(store, wid, self.scope, options.dry_run)
        sink = Sink(store, wid, self.scope, self.report, options, projects, batches,
                    listings, self.warnings)
        try:
            try:
                self.report.totals = _scan.walk(self._params(total_files), sink)
            except OSError as e:
                raise WatchFailed(f"root {self.root.path} unavailable: {e.strerror}") from None
            self.root.check_io()
            if not streaming:
                self._guard(guard, batches)
            batches.flush()
            listings.flush()
        finally:
            batches.close()

    def _params(self, total_files: int) -> ScanParams:
        """What the walk needs of the watch's settings (`total_files`: in its snapshot)."""
        w = self.watch
        # Files changed since shortly before the last scan ended are the ones the merge is
        # likely to hash (their stat data differ from the snapshot's); without a snapshot
        # or a scan that ended well, every file is.
        eager = EAGER_ALL if not total_files or not w.last_scan \
            else parse_iso(w.last_scan) - RACY_NS
        return ScanParams(
            root=w.path, start_ns=self.start_ns, settle_ns=int(w.settle * 1e9),
            max_depth=w.depth_limit, max_size=w.max_file_size,
            follow_symlinks=w.follow_symlinks, minimal=self.minimal, scope=self.scope,
            include=w.patterns, ignore=w.ignores, use_gitignore=w.use_gitignore,
            threads=self.threads, eager_from_ns=eager, dircache=self.dircache)

    def _guard(self, guard: Guard, batches: Batches) -> None:
        """Fail the watch when the scan would delete too much of the snapshot; what it
        holds goes to the spill file, where the guard counts moves and git's deletes."""
        deletes = self.report.delete
        if self.options.allow_mass_delete or not guard.trips(deletes):
            return
        guard.check(deletes, batches.spilled())
