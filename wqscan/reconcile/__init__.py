"""One scan of watches: walk and diff, check the mass-delete guard, commit operations
together with the snapshot rows that caused them."""
from __future__ import annotations

import itertools
import json
import os
import stat
import time
from functools import partial
from typing import Callable, Iterable, NamedTuple

from .. import _scan
from ..clock import iso_from_ns, parse_iso
from ..errors import UsageError, WatchFailed, WatchHeld, WqscanError
from ..model import DEFAULT_PRIORITY, DELETE_PRIORITY, Watch
from ..queue.writes import Row, RowMaker, annotate_move, enqueue
from ..scan import gitinfo
from ..scan.filters import check_patterns, compile_patterns, first_match
from ..scan.fsinfo import check_stat_mode, fs_type, is_network
from ..scan.labels import Labels
from ..scan.records import IO_ERRNOS, Change, DirResult, ScanParams
from ..service import leases
from ..store import Store
from ..store.spill import Spill
from ..watches import Coverage, below, containing, get_watch, list_watches
from .guard import Guard
from .moves import Moves, move_key
from .report import MAX_KEPT_WARNINGS, WatchReport, record

NETWORK_THREADS = 16
LOCAL_THREADS_MAX = 8
CHUNK_CHANGES = 5000  # operations per transaction
CHUNK_DIRS = 2000  # snapshot rows per transaction
HOLD_CHANGES = 20000  # operations held in memory until the guard decides; beyond, spilled
SETTLE_POLL = 0.5  # seconds at least between scans that wait for deferred files to settle

Warn = Callable[[str, str, str], None]  # watch_id, relative path, message
#: watch_id, files, directories, operations, bytes hashed
Progress = Callable[[str, int, int, int, int], None]


class ScanOptions(NamedTuple):
    """How one run scans each of its watches (reconcile's keyword arguments)."""

    dry_run: bool = False  # list the operations, write nothing
    allow_mass_delete: bool = False
    on_warning: Warn | None = None
    threads: int | None = None  # instead of each watch's own setting
    wait: float = 0.0  # seconds to wait for a watch another process holds
    on_progress: Progress | None = None


def select(store: Store, ids: list[str], path: str | None) -> list[tuple[Watch, tuple[str, ...]]]:
    """The watches to scan with the scope of each: named ones (even disabled), else all
    enabled; with `path`, those containing it (only its subtree scanned), else those whose
    root lies below it (scanned whole). A path inside a watch's tree that a symlink leads
    out of it names no watch."""
    watches = [get_watch(store, i) for i in ids] if ids else \
        [w for w in list_watches(store) if w.enabled]
    if path is None:
        return [(w, ()) for w in watches]
    chosen = containing(watches, path)
    given = os.path.abspath(path)
    if not chosen and not any(given.startswith(w.path.rstrip("/") + "/") for w in watches):
        chosen = [(w, ()) for w in below(watches, path)]
    if not chosen:
        raise UsageError(f"no {'named' if ids else 'enabled'} watch contains {path} or lies "
                         "below it")
    return chosen


def reconcile(store: Store, ids: list[str] | None = None, path: str | None = None,
              dry_run: bool = False, allow_mass_delete: bool = False,
              on_warning: Warn | None = None, threads: int | None = None,
              wait: float = 0.0, on_progress: Progress | None = None,
              until_settled: float = 0.0,
              on_watch: Callable[[Watch | None], None] | None = None) -> list[WatchReport]:
    """Scan the chosen watches once each; a failed watch is reported, not raised.
    `threads` overrides each watch's own setting; a watch another process is scanning is
    waited for up to `wait` seconds, then reported as held. With `until_settled`, a watch
    whose scan deferred files (too recently modified) is scanned again once its settle time
    has passed, for up to that many seconds, so that a git checkout's files are all queued
    by the one run a hook starts; a file still being written stays deferred. `on_watch`
    is told of each scan as it starts (the watch) and ends (None)."""
    options = ScanOptions(dry_run, allow_mass_delete, on_warning, threads, wait, on_progress)

    def scan(w: Watch, scope: tuple[str, ...]) -> WatchReport:
        if on_watch is not None:
            on_watch(w)
        try:
            return scan_watch(store, w, scope, options)
        finally:
            if on_watch is not None:
                on_watch(None)

    reports = []
    for w, scope in select(store, list(ids or ()), path):
        started = time.monotonic()
        report = scan(w, scope)
        while report.ok and report.totals.deferred and not dry_run:
            pause = max(w.settle, SETTLE_POLL)
            if time.monotonic() + pause > started + until_settled:
                break
            time.sleep(pause)
            report.add(scan(w, scope))
            report.duration = time.monotonic() - started  # every pass, and the waits
        reports.append(report)
    return reports


def default_threads(network: bool) -> int:
    """Directories listed at once when a watch does not say: many on a network or FUSE
    mount, where each stat waits for a round trip; one per core on a local disk."""
    return NETWORK_THREADS if network else max(1, min(LOCAL_THREADS_MAX, os.cpu_count() or 1))


def scan_watch(store: Store, watch: Watch, scope: tuple[str, ...] = (),
               options: ScanOptions = ScanOptions()) -> WatchReport:
    """One scan of one watch (of `scope` below its root, if given), holding its lease."""
    report = WatchReport(watch.watch_id)
    if options.dry_run:  # writes nothing, so needs no lease
        return _scan_once(store, watch, scope, report, options, None)
    try:
        with leases.hold(store, watch.watch_id, options.wait) as owner:
            return _scan_once(store, watch, scope, report, options, owner)
    except WatchHeld as e:
        report.ok, report.held, report.reason = False, True, str(e)
        return report
    except WatchFailed as e:  # the lease could not be written: the database is busy
        report.ok, report.reason = False, str(e)
        report.queue_errors += 1
        record(store, watch, report, time.time_ns())
        return report


def labels_gone(labels: Labels, result: DirResult) -> None:
    """The directories a result takes out of the snapshot lose their labels."""
    for key in result.removed:
        labels.drop(key)


def _scan_once(store: Store, watch: Watch, scope: tuple[str, ...], report: WatchReport,
               options: ScanOptions, owner: str | None) -> WatchReport:
    start_ns = time.time_ns()
    t0 = time.perf_counter()
    try:
        _Scan(store, watch, scope, report, options, start_ns, owner).run()
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


class _Scan:
    """The hooks of one walk, and the batches it commits."""

    def __init__(self, store: Store, watch: Watch, scope: tuple[str, ...], report: WatchReport,
                 options: ScanOptions, start_ns: int, owner: str | None) -> None:
        self.store, self.watch, self.scope, self.report = store, watch, scope, report
        self.dry_run, self.allow = options.dry_run, options.allow_mass_delete
        self.on_warning = options.on_warning
        self.root = watch.path
        self.wid = watch.watch_id
        check_patterns(watch.patterns)
        check_patterns(watch.ignores, "ignore pattern")
        self.priorities: list | None = None  # compiled when the first operation needs them
        fstype = fs_type(self.root)
        network = is_network(fstype)
        self.minimal = check_stat_mode(watch.check_stat, fstype) == "minimal"
        self.threads = options.threads or watch.threads or default_threads(network)
        self.start_ns = start_ns
        self.owner = owner  # of the lease, renewed with each commit
        self.on_progress = options.on_progress
        self.coverage = Coverage(store, watch)  # other watches of the collection over it
        self.labels = Labels(store, watch.watch_id)  # what each file was queued with
        self.io_errors = 0  # answers of a failing filesystem (EIO, a dead server)
        self.first_io_error = ""
        self.git_dirs: set[str] = set()
        self.projects: dict[str, gitinfo.Project] = {}
        self.project_of_dir: dict[str, str] = {}
        self.above_root = ""
        self.pending: list[DirResult] = []
        self.pending_changes = 0
        self.spill: Spill | None = None  # results beyond HOLD_CHANGES, until the guard decides
        self.moves = Moves(self.minimal)
        self.root_id = (0, 0)
        self.snapshot_files = 0
        self.streaming = False
        self.track_ingests = False

    # -- the scan ---------------------------------------------------------------------

    def run(self) -> None:
        self.root_id = self._check_root()
        scope_key = "/".join(self.scope) + "/" if self.scope else ""
        self.snapshot_files = self.store.snapshot_files(self.wid, scope_key)
        total_files = self.store.snapshot_files(self.wid) if self.scope else self.snapshot_files
        if total_files and not self.allow and not self._root_has_entries():
            raise WatchFailed(f"root {self.root} is empty while the snapshot holds "
                              f"{total_files} files (unmounted share?); nothing written")
        self.track_ingests = self.snapshot_files > 0
        last = self.watch.last_scan
        self.guard = Guard(self.root, self.snapshot_files, parse_iso(last) if last else None)
        # A snapshot the guard cannot trip on commits its batches as the walk goes.
        self.streaming = not self.dry_run and (self.allow or not self.guard.trips(
            self.snapshot_files))
        self.above_root = gitinfo.project_root_above(self.root)
        w = self.watch
        params = ScanParams(
            root=self.root, start_ns=self.start_ns, settle_ns=int(w.settle * 1e9),
            max_depth=w.depth_limit, max_size=w.max_file_size, follow_symlinks=w.follow_symlinks,
            minimal=self.minimal, scope=self.scope, include=w.patterns,
            ignore=w.ignores, use_gitignore=w.use_gitignore, threads=self.threads,
            eager_hash=total_files == 0)
        try:
            try:
                self.report.totals = _scan.walk(params, self)
            except OSError as e:
                raise WatchFailed(f"root {self.root} unavailable: {e.strerror}") from None
            self._check_io()
            if not self.streaming:
                self._guard()
            self._flush()
        finally:
            if self.spill is not None:
                self.spill.close()

    def _guard(self) -> None:
        """Fail the watch when the scan would delete too much of the snapshot; what it
        holds goes to the spill file, where the guard counts moves and git's deletes."""
        if self.allow or not self.guard.trips(self.report.delete):
            return
        self._spill()
        assert self.spill is not None
        self.guard.check(self.report.delete, self.spill)

    def _check_root(self) -> tuple[int, int]:
        """(device, inode) of the root, failing the watch if it is not a readable directory."""
        try:
            st = os.stat(self.root)
        except OSError as e:
            raise WatchFailed(f"root {self.root} unavailable: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise WatchFailed(f"root {self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise WatchFailed(f"root {self.root} is not readable")
        return st.st_dev, st.st_ino

    def _root_has_entries(self) -> bool:
        try:
            with os.scandir(self.root) as it:
                return next(it, None) is not None
        except OSError as e:
            raise WatchFailed(f"root {self.root} unreadable: {e.strerror}") from None

    # -- hooks --------------------------------------------------------------------------

    def rows(self) -> Iterable[tuple[str, bytes]]:
        return self.store.snapshot_rows(self.wid, self.scope)

    def repo(self, rel: str) -> None:
        self.git_dirs.add(rel)

    def emit(self, result: DirResult) -> None:
        for c in result.changes:
            if c.op == "ingest":
                self.report.ingest += 1
            elif c.op == "update":
                self.report.update += 1
            else:
                self.report.delete += 1
        self.pending.append(result)
        self.pending_changes += len(result.changes)
        if self.streaming:
            if self.pending_changes >= CHUNK_CHANGES or len(self.pending) >= CHUNK_DIRS:
                self._commit()
        elif self.pending_changes >= HOLD_CHANGES or len(self.pending) >= CHUNK_DIRS:
            self._spill()

    def _spill(self) -> None:
        """Move what is pending to the spill file: held results stay bounded in memory."""
        if self.spill is None:
            self.spill = Spill()
        self.spill.add(self.pending, partial(move_key, minimal=self.minimal))
        self.pending, self.pending_changes = [], 0

    def progress(self, files: int, dirs: int, bytes_hashed: int) -> None:
        if self.on_progress is not None:
            r = self.report
            self.on_progress(self.wid, files, dirs, r.ingest + r.update + r.delete,
                             bytes_hashed)

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        if err in IO_ERRNOS:
            self.io_errors += 1
            self.first_io_error = self.first_io_error or f"{rel or '.'}: {message}"
        if len(self.report.warnings) < MAX_KEPT_WARNINGS:  # a name not UTF-8 with \xNN
            self.report.warnings.append(f"{rel or '.'}: {message}".encode(
                "utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        if self.on_warning is not None:
            self.on_warning(self.wid, rel, message)

    # -- commits ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Commit (or, on a dry run, list) what is pending, in chunks."""
        batch: list[DirResult] = []
        size = 0
        for r in itertools.chain(self.spill or (), self.pending):
            batch.append(r)
            size += len(r.changes)
            if size >= CHUNK_CHANGES or len(batch) >= CHUNK_DIRS:
                self._commit(batch)
                batch, size = [], 0
        self._commit(batch)
        self.pending, self.pending_changes = [], 0

    def _commit(self, batch: list[DirResult] | None = None) -> None:
        if batch is None:
            batch, self.pending, self.pending_changes = self.pending, [], 0
        if not batch:
            return
        rows, late = self._rows(batch)
        if self.dry_run:
            for row in rows:
                meta = json.loads(row.metadata)
                self.report.operations.append(
                    {"operation": row.operation, "path": row.file_absolute_path,
                     "priority": row.priority, "tenant_id": row.tenant_id, "branch": row.branch,
                     "relative_path": meta["relative_path"], "content_hash": meta["content_hash"],
                     **({"moved_from": meta["moved_from"]} if "moved_from" in meta else {})})
            return
        self._check_io()
        self._recheck_root()
        try:
            self._write(batch, rows, late)
        except WqscanError:
            self.report.queue_errors += 1
            raise

    def _write(self, batch: list[DirResult], rows: list[Row],
               late: list[tuple[str, str]]) -> None:
        """One transaction: the snapshot rows of a batch with its queue rows (run again
        whole while the database answers busy)."""
        def body() -> int:
            self.store.write_snapshot(
                self.wid, [key for r in batch for key in r.removed],
                [(r.key, r.nfiles, r.blob) for r in batch if r.blob is not None])
            written = 0
            if self.watch.auto_ingest:
                written = enqueue(self.store, rows).changed
                for path, moved_from in late:
                    annotate_move(self.store, self.watch.collection, path, moved_from)
                self.labels.write()
            self.store.add_stats(self.wid, {"events_received": len(rows),
                                            "events_processed": written})
            if self.owner is not None:
                leases.renew(self.store, self.wid, self.owner)
            return written

        self.report.written += self.store.transact(body)
        self.labels.written()

    def _check_io(self) -> None:
        """A filesystem that answers with I/O errors fails the scan: what it said cannot be
        trusted, so nothing more is written (the entries it failed on are kept)."""
        if self.io_errors:
            raise WatchFailed(f"the filesystem answered {self.io_errors} I/O error(s) (first: "
                              f"{self.first_io_error}; a dead server or a failing disk?); "
                              "nothing more written, no entry deleted")

    def _recheck_root(self) -> None:
        """Before each commit: the root is still the directory the scan started in."""
        if self._check_root() != self.root_id:
            raise WatchFailed(f"root {self.root} changed during the scan (unmounted or "
                              "replaced); nothing more written")
        if self.snapshot_files and not self.allow and not self._root_has_entries():
            raise WatchFailed(f"root {self.root} became empty during the scan; "
                              "nothing more written")

    def _rows(self, batch: list[DirResult]) -> tuple[list[Row], list[tuple[str, str]]]:
        """Queue rows for a batch, with moves paired; also the moves of ingests committed
        in earlier batches, found only now."""
        # queue times by the store's clock: the server's where several hosts queue rows
        maker = RowMaker(self.watch, iso_from_ns(self.store.clock_ns()),
                         expected=sum(len(r.changes) for r in batch))
        rows: list[Row] = []
        in_batch: dict[str, tuple[int, Change]] = {}  # ingests that may still get moved_from
        late: list[tuple[str, str]] = []
        rules = self.watch.priority_rules
        labels = self.labels
        if self.track_ingests:  # files of an earlier snapshot have labels
            labels.load([r.key for r in batch if r.changes])
        for r in batch:
            if not r.changes:
                labels_gone(labels, r)
                continue
            project = self._project(r.key[:-1])
            pair = (project.tenant_id, project.branch)
            if not self.track_ingests:
                labels.queued_dir(r.key, pair)
            for c in r.changes:
                if c.op == "ingest" and not self.moves.deleted and not self.track_ingests:
                    rows.append(maker.row(c, project.tenant_id, project.branch,
                                          self._priority(c.path) if rules else DEFAULT_PRIORITY))
                    continue  # the common case of a first scan: nothing to pair
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
        if self.priorities is None:
            self.priorities = [(compile_patterns([g], "priority glob"), n)
                               for g, n in self.watch.priority_rules]
        return first_match(self.priorities, rel, DEFAULT_PRIORITY)

    def _project(self, rel_dir: str) -> gitinfo.Project:
        """Tenant and branch for files of a directory: its nearest project root's."""
        root = self.project_of_dir.get(rel_dir)
        if root is None:
            d = rel_dir
            while True:
                if d in self.git_dirs:
                    root = os.path.join(self.root, d) if d else self.root
                    break
                if not d:
                    root = self.above_root
                    break
                d = d.rpartition("/")[0]
            self.project_of_dir[rel_dir] = root
        project = self.projects.get(root)
        if project is None:
            project = self.projects[root] = gitinfo.describe(root, self.warn)
        return project

