"""Registering and managing watches: add, list, show, remove, enable, disable."""
from __future__ import annotations

import math
import os
import re
from typing import Any, Iterable, Iterator, NamedTuple

from .. import _scan
from ..clock import iso_from_ns, now_iso
from ..errors import UsageError
from ..model import CHECK_STAT_MODES, DEFAULT_IGNORES, DELETE_PRIORITY, Watch
from ..queue.writes import Enqueued, Row, RowMaker, enqueue
from ..scan import gitinfo
from ..scan.filters import compile_patterns
from ..scan.labels import Labels
from ..scan.records import Change
from ..store import Store

_ID_OK = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # compiled on first use (re caches it): start-up time
MAX_THREADS = 256


def list_watches(store: Store) -> list[Watch]:
    """Every watch, by id."""
    return [Watch.from_row(r) for r in store.watch_rows()]


def get_watch(store: Store, watch_id: str) -> Watch:
    """One watch; an unknown id is a usage error."""
    row = store.watch_row(watch_id)
    if row is None:
        raise UsageError(f"no watch with id '{watch_id}'")
    return Watch.from_row(row)


def containing(watches: Iterable[Watch], path: str) -> list[tuple[Watch, tuple[str, ...]]]:
    """The watches whose tree contains `path`, each with the path's components below its
    root (the scope of a `--path` scan)."""
    target = os.path.realpath(os.path.abspath(path))
    chosen = []
    for w in watches:
        if target == w.path or target.startswith(w.path.rstrip("/") + "/"):
            rel = os.path.relpath(target, w.path)
            chosen.append((w, () if rel == "." else tuple(rel.split("/"))))
    return chosen


def below(watches: Iterable[Watch], path: str) -> list[Watch]:
    """The watches whose root lies strictly below `path`."""
    prefix = os.path.realpath(os.path.abspath(path)).rstrip("/") + "/"
    return [w for w in watches if w.path.startswith(prefix)]


MAX_SECONDS = 315_360_000  # ten years: intervals, settle times and timeouts
MAX_DEPTH = 100_000
MAX_FILE_SIZE = 2 ** 62
MAX_NESTING = 64  # of --metadata


def _plain_json(value: Any, depth: int = 0) -> bool:
    """JSON that every consumer can read back: finite numbers, bounded nesting."""
    if depth > MAX_NESTING:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    return True


def make_watch(path: str, collection: str, *, watch_id: str = "", patterns: Iterable[str] = (),
               ignores: Iterable[str] = (), default_ignores: bool = True, recursive: bool = True,
               max_depth: int | None = None, interval: float = 60.0, settle: float = 2.0,
               priority_rules: Iterable[tuple[str, int]] = (), max_file_size: int | None = None,
               use_gitignore: bool = True, follow_symlinks: bool = False,
               check_stat: str = "auto", enabled: bool = True,
               metadata: dict[str, Any] | None = None, threads: int | None = None,
               timeout: float | None = None, auto_ingest: bool = True,
               must_exist: bool = True) -> Watch:
    """A validated watch from add's options (the command line's and the YAML file's)."""
    def check(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise UsageError(message, field)

    root = _resolve_root(path, must_exist)
    check(bool(collection and collection.strip()), "collection", "--collection must not be empty")
    patterns = list(patterns)
    ignore_list = (list(DEFAULT_IGNORES) if default_ignores else []) + \
        [i for i in ignores if not (default_ignores and i in DEFAULT_IGNORES)]
    _check_patterns(patterns, "pattern", "patterns")
    _check_patterns(ignore_list, "ignore pattern", "ignores")
    rules = []
    for glob, n in priority_rules:
        _check_patterns([glob], "priority glob", "priority_rules")
        check(0 <= n <= 10, "priority_rules", f"priority {n} for '{glob}' is outside 0..10")
        rules.append((glob, n))
    check(max_depth is None or 1 <= max_depth <= MAX_DEPTH, "max_depth",
          f"--max-depth must be between 1 and {MAX_DEPTH}, not {max_depth}")
    check(0 < interval <= MAX_SECONDS, "interval",
          f"--interval must be above 0 and at most {MAX_SECONDS} (10 years), not {interval}")
    check(0 <= settle <= MAX_SECONDS, "settle",
          f"--settle must be between 0 and {MAX_SECONDS} (10 years), not {settle}")
    check(max_file_size is None or 0 <= max_file_size <= MAX_FILE_SIZE, "max_file_size",
          f"--max-file-size must be between 0 and {MAX_FILE_SIZE}, not {max_file_size}")
    check(timeout is None or 0 < timeout <= MAX_SECONDS, "timeout",
          f"--timeout must be above 0 and at most {MAX_SECONDS} (10 years), not {timeout}")
    check(threads is None or 1 <= threads <= MAX_THREADS, "threads",
          f"--threads must be between 1 and {MAX_THREADS}, not {threads}")
    check(check_stat in CHECK_STAT_MODES, "check_stat",
          f"--check-stat must be one of {', '.join(CHECK_STAT_MODES)}")
    check(metadata is None or isinstance(metadata, dict), "metadata",
          "--metadata must be a JSON object")
    check(metadata is None or _plain_json(metadata), "metadata",
          "--metadata must hold plain JSON: no NaN or infinity, nested at most "
          f"{MAX_NESTING} deep")
    check(not watch_id or bool(re.fullmatch(_ID_OK, watch_id)), "watch_id",
          f"bad watch id '{watch_id}': use letters, digits, '.', '_', '-'")
    return Watch(watch_id=watch_id, path=root, collection=collection, patterns=tuple(patterns),
                 ignore_patterns=tuple(ignore_list), auto_ingest=auto_ingest,
                 recursive=recursive, recursive_depth=max_depth,
                 debounce_seconds=float(settle), poll_interval_seconds=float(interval),
                 enabled=enabled, metadata=dict(metadata or {}), priority_rules=tuple(rules),
                 max_file_size=max_file_size, use_gitignore=use_gitignore,
                 follow_symlinks=follow_symlinks, check_stat=check_stat, threads=threads,
                 scan_timeout_seconds=timeout)


def add_watch(store: Store, path: str, collection: str, *, watch_id: str | None = None,
              **options: Any) -> Watch:
    """Validate and register a watch (options as make_watch's); returns it with its
    (possibly derived) id."""
    watch = make_watch(path, collection, watch_id=watch_id or "", **options)
    with store.write():
        _refuse_duplicate(store, watch)
        taken = store.watch_ids()
        if not watch.watch_id:
            watch = watch._replace(watch_id=_derive_id(watch.path, taken))
        elif watch.watch_id in taken:
            raise UsageError(f"a watch with id '{watch.watch_id}' exists already")
        now = now_iso()
        store.insert_watch({**watch.to_row(), "created_at": now, "updated_at": now})
    return get_watch(store, watch.watch_id)


def define_watch(store: Store, watch: Watch, config_file: str) -> None:
    """Create or update a watch defined by a configuration file (inside the caller's
    transaction): every setting is the file's, a key it leaves out taking its default;
    the last scan and statistics stay. An id another file or `wqscan add` owns is refused.
    A new path or collection first queues a delete of every file into the old collection
    and forgets the snapshot (as `set --collection` does): the next scan ingests the tree
    the watch now names."""
    _refuse_duplicate(store, watch)
    row = {**watch.to_row(), "config_file": config_file, "config_retired": 0,
           "updated_at": now_iso()}
    old_row = store.watch_row(watch.watch_id)
    if old_row is None:
        store.insert_watch({**row, "created_at": row["updated_at"]})
        return
    old = Watch.from_row(old_row)
    owner = _owner(store, old)
    if not _same_file(old.config_file, config_file) and owner is not None:
        raise UsageError(f"id '{watch.watch_id}' is taken: watch {watch.watch_id} "
                         f"({old.path}) is {owner}; give this one another id")
    if old.path != watch.path and not os.path.isdir(watch.path):
        # the new root is not there (a share away: a symlink on it resolves to nothing):
        # the watch stays where it is until it is, rather than wipe its collection
        watch = watch._replace(path=old.path)
        row["path"] = old.path
    if (old.path, old.collection) != (watch.path, watch.collection):
        _forget_tree(store, old)
    del row["watch_id"]
    store.update_watch(watch.watch_id, row)


def retire_watches(store: Store, config_file: str, keep: set[str]) -> list[str]:
    """Disable the watches a configuration file created and no longer lists (disabled
    ones too: they are no longer the file's to refuse `remove` or another id for)."""
    gone = [w.watch_id for w in list_watches(store)
            if _same_file(w.config_file, config_file) and w.watch_id not in keep
            and not (store.watch_row(w.watch_id) or {}).get("config_retired")]
    for wid in gone:
        store.update_watch(wid, {"enabled": 0, "config_retired": 1, "updated_at": now_iso()})
    return gone


def _refuse_duplicate(store: Store, watch: Watch) -> None:
    """Watches of one collection may not overlap: a file two of them cover would be queued
    twice, and removing one would delete a document the other still holds. In a queue keyed
    by path alone, a file can be queued for one collection only."""
    for other in list_watches(store):
        if other.watch_id == watch.watch_id or not _overlap(other.path, watch.path):
            continue
        if other.collection == watch.collection:
            what = "is already watched by" if other.path == watch.path else \
                "overlaps the tree of"
            raise UsageError(f"{watch.path} {what} watch '{other.watch_id}' "
                             f"({other.path}) in collection '{watch.collection}': one watch "
                             "per tree and collection (widen or narrow that one instead)")
        if store.layout.keyed_by_path:
            raise UsageError(f"{watch.path} overlaps watch '{other.watch_id}' ({other.path}) "
                             f"of collection '{other.collection}': the {store.layout.name} "
                             "layout queues each file for one collection only")


def _overlap(a: str, b: str) -> bool:
    """Whether one of two roots contains the other."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


#: The settings `set_watch` changes, by make_watch's names.
EDITABLE = ("collection", "patterns", "ignores", "default_ignores", "recursive", "max_depth",
            "interval", "settle", "priority_rules", "max_file_size", "use_gitignore",
            "follow_symlinks", "check_stat", "enabled", "metadata", "threads", "timeout",
            "auto_ingest")


class Edit(NamedTuple):
    """What `set_watch` did: the watch as it is now, the settings that changed (none: it
    already had them), and the deletes queued into the collection it had before."""

    watch: Watch
    changed: tuple[str, ...]
    deletes: Enqueued
    old_collection: str


def set_watch(store: Store, watch_id: str, **changes: Any) -> Edit:
    """Change settings of a watch (make_watch's names: `ignores` are those added to the
    default list), keeping its snapshot and statistics, so that its next scan queues
    exactly the files that enter or leave its scope. A new collection first queues a delete
    of every file into the old one and forgets the snapshot: the next scan ingests them all
    into the new one."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not watch settings: {sorted(unknown)}")
    with store.write():
        old = get_watch(store, watch_id)
        _refuse_defined_by_file(store, old, "edit it there")
        settings = dict(
            collection=old.collection, patterns=old.patterns,
            ignores=[i for i in old.ignore_patterns if i not in DEFAULT_IGNORES],
            default_ignores=all(i in old.ignore_patterns for i in DEFAULT_IGNORES),
            recursive=old.recursive, max_depth=old.recursive_depth,
            interval=old.poll_interval_seconds, settle=old.debounce_seconds,
            priority_rules=old.priority_rules, max_file_size=old.max_file_size,
            use_gitignore=old.use_gitignore, follow_symlinks=old.follow_symlinks,
            check_stat=old.check_stat, enabled=old.enabled, metadata=old.metadata,
            threads=old.threads, timeout=old.scan_timeout_seconds, auto_ingest=old.auto_ingest)

        def made(**these: Any) -> Watch:
            both = {**settings, **these}
            return make_watch(old.path, both.pop("collection"), watch_id=watch_id,
                              must_exist=False, **both)

        before = made().to_row()
        new = made(**changes)
        changed = tuple(sorted(k for k in changes if made(**{k: changes[k]}).to_row() != before))
        if not changed:
            return Edit(old, (), Enqueued(), old.collection)
        _refuse_duplicate(store, new)
        deletes = _forget_tree(store, old) if new.collection != old.collection else Enqueued()
        row = {**new.to_row(), "config_file": old.config_file, "updated_at": now_iso()}
        del row["watch_id"]
        store.update_watch(watch_id, row)
    return Edit(get_watch(store, watch_id), changed, deletes, old.collection)


def _forget_tree(store: Store, old: Watch) -> Enqueued:
    """The watch leaves its tree or collection: a delete of every file it queued goes into
    the old collection, and the snapshot goes, so that the next scan ingests afresh."""
    done = enqueue(store, list(_delete_rows(store, old))) if old.auto_ingest else Enqueued()
    store.drop_snapshot(old.watch_id)
    return done


def _same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name one configuration file (reached by two paths, say)."""
    if a == b:
        return True
    try:
        return a is not None and b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _owner(store: Store, watch: Watch) -> str | None:
    """Who defines a watch now: a configuration file that exists and still lists it, or
    `wqscan add`; None for one whose file dropped it or is gone."""
    if not watch.config_file:
        return "added with wqscan add"
    retired = (store.watch_row(watch.watch_id) or {}).get("config_retired")
    if retired or not os.path.exists(watch.config_file):
        return None
    return f"defined by {watch.config_file}"


def _refuse_defined_by_file(store: Store, watch: Watch, advice: str) -> None:
    """A watch a YAML file still defines is changed there: the next command loading the
    file would undo (or re-create) what was done here."""
    owner = _owner(store, watch)
    if watch.config_file and owner is not None:
        raise UsageError(f"watch {watch.watch_id} is {owner}, which would undo this: "
                         f"{advice}")


def set_enabled(store: Store, watch_id: str, enabled: bool) -> Watch:
    """Turn scheduled scans of a watch on or off (one a YAML file defines: in that file)."""
    with store.write():
        _refuse_defined_by_file(store, get_watch(store, watch_id),
                                f"set `enabled: {'true' if enabled else 'false'}` there")
        store.update_watch(watch_id, {"enabled": int(enabled), "updated_at": now_iso()})
    return get_watch(store, watch_id)


def remove_watch(store: Store, watch_id: str, emit_deletes: bool = False) -> Enqueued:
    """Unregister a watch (snapshot and statistics go too; queue rows stay). With
    `emit_deletes`, first queue a delete for every file of its snapshot; returns what
    those deletes did."""
    queued = Enqueued()
    with store.write():
        watch = get_watch(store, watch_id)
        _refuse_defined_by_file(store, watch, "remove it from that file, or set "
                                "`enabled: false` there")
        if emit_deletes and watch.auto_ingest:
            queued = enqueue(store, list(_delete_rows(store, watch)))
        store.delete_watch(watch_id)
    return queued


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
                       and w.collection == watch.collection and _overlap(w.path, watch.path)]
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


def _resolve_root(path: str, must_exist: bool = True) -> str:
    if not path:
        raise UsageError("the path must not be empty", "path")
    root = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
    if root == "/":
        raise UsageError("the whole filesystem cannot be a watch: it holds /proc, /sys and "
                         "/dev, whose files are not documents and may block a read; watch "
                         "the directories that hold documents", "path")
    if not os.path.exists(root):
        if must_exist:
            raise UsageError(f"path {path} does not exist (--allow-missing accepts a share "
                             "not mounted yet)", "path")
        return root  # a share not mounted yet: its scans fail until it is there
    if not os.path.isdir(root):
        raise UsageError(f"path {path} is not a directory", "path")
    return root


def _check_patterns(patterns: list[str], what: str, field: str) -> None:
    try:
        compile_patterns(patterns, what)
    except UsageError as e:
        raise UsageError(str(e), field) from None


def _derive_id(root: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(root) or "root").strip("-.")
    base = base.lower() or "watch"
    if not base[0].isalnum():
        base = "w" + base
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate
