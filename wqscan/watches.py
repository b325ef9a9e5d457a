"""Registering and managing watches: add, list, show, remove, enable, disable."""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Iterator

from . import _scan, gitinfo
from .clock import now_iso
from .errors import UsageError
from .filters import compile_patterns
from .model import CHECK_STAT_MODES, DEFAULT_IGNORES, DELETE_PRIORITY, Watch
from .queue import Row, RowMaker, enqueue
from .records import Change
from .store import Store

_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_THREADS = 256


def list_watches(store: Store) -> list[Watch]:
    """Every watch, by id."""
    return [Watch.from_row(r) for r in store.watch_rows()]


def get_watch(store: Store, watch_id: str) -> Watch:
    """One watch; an unknown id is a usage error."""
    row = store.watch_row(watch_id)
    if row is None:
        raise UsageError(f"no watch with id {watch_id!r}")
    return Watch.from_row(row)


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
    root = _resolve_root(path, must_exist)
    if not collection or not collection.strip():
        raise UsageError("--collection must not be empty")
    patterns = list(patterns)
    ignore_list = (list(DEFAULT_IGNORES) if default_ignores else []) + \
        [i for i in ignores if not (default_ignores and i in DEFAULT_IGNORES)]
    compile_patterns(patterns)
    compile_patterns(ignore_list, "ignore pattern")
    rules = []
    for glob, n in priority_rules:
        compile_patterns([glob], "priority glob")
        if not 0 <= n <= 10:
            raise UsageError(f"priority {n} for {glob!r} is outside 0..10")
        rules.append((glob, n))
    if max_depth is not None and max_depth < 1:
        raise UsageError(f"--max-depth must be at least 1, not {max_depth}")
    if not interval > 0:
        raise UsageError(f"--interval must be positive, not {interval}")
    if not settle >= 0:
        raise UsageError(f"--settle must not be negative, not {settle}")
    if max_file_size is not None and max_file_size < 0:
        raise UsageError(f"--max-file-size must not be negative, not {max_file_size}")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be positive, not {timeout}")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, not {threads}")
    if check_stat not in CHECK_STAT_MODES:
        raise UsageError(f"--check-stat must be one of {', '.join(CHECK_STAT_MODES)}")
    if metadata is not None and not isinstance(metadata, dict):
        raise UsageError("--metadata must be a JSON object")
    if watch_id and not _ID_OK.match(watch_id):
        raise UsageError(f"bad watch id {watch_id!r}: use letters, digits, '.', '_', '-'")
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
            raise UsageError(f"a watch with id {watch.watch_id!r} exists already")
        now = now_iso()
        store.insert_watch({**watch.to_row(), "created_at": now, "updated_at": now})
    return get_watch(store, watch.watch_id)


def define_watch(store: Store, watch: Watch, config_file: str) -> None:
    """Create or update a watch defined by a configuration file (inside the caller's
    transaction); its last scan and statistics stay."""
    _refuse_duplicate(store, watch)
    row = {**watch.to_row(), "config_file": config_file, "updated_at": now_iso()}
    if store.watch_row(watch.watch_id) is None:
        store.insert_watch({**row, "created_at": row["updated_at"]})
    else:
        del row["watch_id"]
        store.update_watch(watch.watch_id, row)


def retire_watches(store: Store, config_file: str, keep: set[str]) -> list[str]:
    """Disable the watches a configuration file created and no longer lists."""
    gone = [w.watch_id for w in list_watches(store)
            if w.config_file == config_file and w.watch_id not in keep and w.enabled]
    for wid in gone:
        store.update_watch(wid, {"enabled": 0, "updated_at": now_iso()})
    return gone


def _refuse_duplicate(store: Store, watch: Watch) -> None:
    for other in list_watches(store):
        if other.watch_id != watch.watch_id and other.path == watch.path \
                and other.collection == watch.collection:
            raise UsageError(f"{watch.path} is already watched into collection "
                             f"{watch.collection!r} by watch {other.watch_id!r}")


def set_enabled(store: Store, watch_id: str, enabled: bool) -> Watch:
    """Turn scheduled scans of a watch on or off."""
    with store.write():
        get_watch(store, watch_id)
        store.update_watch(watch_id, {"enabled": int(enabled), "updated_at": now_iso()})
    return get_watch(store, watch_id)


def remove_watch(store: Store, watch_id: str, emit_deletes: bool = False) -> int:
    """Unregister a watch (snapshot and statistics go too; queue rows stay). With
    `emit_deletes`, first queue a delete for every file of its snapshot; returns how many."""
    queued = 0
    with store.write():
        watch = get_watch(store, watch_id)
        if emit_deletes and watch.auto_ingest:
            queued = enqueue(store, list(_delete_rows(store, watch)))
        store.delete_watch(watch_id)
    return queued


def _delete_rows(store: Store, watch: Watch) -> Iterator[Row]:
    maker = RowMaker(watch)
    projects: dict[str, gitinfo.Project] = {}
    for key, blob in list(store.snapshot_rows(watch.watch_id)):
        directory = os.path.join(watch.path, key)
        root = gitinfo.project_root_above(directory.rstrip("/"), watch.path)
        project = projects.get(root)
        if project is None:
            project = projects[root] = gitinfo.describe(root, lambda p, m: None)
        for e in _scan.decode_entries(blob):
            change = Change("delete", key + e.name, e.size, e.mtime_ns, e.ino, e.hash, None)
            yield maker.row(change, project.tenant_id, project.branch, DELETE_PRIORITY)


def _resolve_root(path: str, must_exist: bool = True) -> str:
    if not path:
        raise UsageError("the path must not be empty")
    root = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
    if not os.path.exists(root):
        if must_exist:
            raise UsageError(f"path {path} does not exist")
        return root  # a share not mounted yet: its scans fail until it is there
    if not os.path.isdir(root):
        raise UsageError(f"path {path} is not a directory")
    return root


def _derive_id(root: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(root) or "root").strip("-.")
    base = base.lower() or "watch"
    if not base[0].isalnum():
        base = "w" + base
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate
