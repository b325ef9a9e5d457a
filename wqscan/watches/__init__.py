"""Registering and managing watches: add, list, show, remove, enable, disable."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from ..clock import now_iso
from ..errors import UsageError
from ..model import Watch
from ..settings import BY_NAME, DEFAULT_IGNORES, SETTINGS, STORED
from ..store import Store

if TYPE_CHECKING:
    from ..queue.writes import Enqueued
# The functions that queue deletes import `.deletes` (and with it the scanner, the queue
# writes and git) when called, and the pattern check the scanner's rules: `reconcile`
# reads the watches at every start without them.

_ID_OK = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # compiled on first use (re caches it): start-up time


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


def make_watch(path: str, collection: str, *, watch_id: str = "", must_exist: bool = True,
               **settings: Any) -> Watch:
    """A validated watch from add's options (the command line's and the YAML file's): the
    settings by name, each taking its default where not given (settings.py). `ignores` are
    added to the default list unless `default_ignores` is false."""
    unknown = set(settings) - set(BY_NAME)
    if unknown:
        raise TypeError(f"not watch settings: {sorted(unknown)}")
    root = _resolve_root(path, must_exist)
    if not (collection and collection.strip()):
        raise UsageError("--collection must not be empty", "collection")
    values = {s.name: settings.get(s.name, s.default) for s in SETTINGS}
    values["collection"] = collection
    keep_defaults = values.pop("default_ignores")
    values["ignores"] = (list(DEFAULT_IGNORES) if keep_defaults else []) + \
        [i for i in values["ignores"] if not (keep_defaults and i in DEFAULT_IGNORES)]
    _check_patterns(list(values["patterns"]), "pattern", "patterns")
    _check_patterns(values["ignores"], "ignore pattern", "ignores")
    for glob, n in values["priority_rules"]:
        _check_patterns([glob], "priority glob", "priority_rules")
        if not 0 <= n <= 10:
            raise UsageError(f"priority {n} for '{glob}' is outside 0..10", "priority_rules")
    for s in STORED:
        problem = s.check(values[s.name])
        if problem:
            raise UsageError(problem, s.name)
    if watch_id and not re.fullmatch(_ID_OK, watch_id):
        raise UsageError(f"bad watch id '{watch_id}': use letters, digits, '.', '_', '-'",
                         "watch_id")
    for s in STORED:
        if s.kind in ("globs", "rules"):
            values[s.name] = tuple(tuple(v) if s.kind == "rules" else v
                                   for v in values[s.name])
        elif s.kind == "seconds" and values[s.name] is not None:
            values[s.name] = float(values[s.name])
    values["metadata"] = dict(values["metadata"] or {})
    return Watch(watch_id=watch_id, path=root, **values)


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
    definer = _definer(store, old)
    if not _same_file(old.config_file, config_file) and definer is not None:
        raise UsageError(f"id '{watch.watch_id}' is taken: watch {watch.watch_id} "
                         f"({old.path}) is {definer}; give this one another id")
    if old.path != watch.path and not os.path.isdir(watch.path):
        # the new root is not there (a share away: a symlink on it resolves to nothing):
        # the watch stays where it is until it is, rather than wipe its collection
        watch = watch._replace(path=old.path)
        row["path"] = old.path
    if (old.path, old.collection) != (watch.path, watch.collection):
        from .deletes import forget_tree

        forget_tree(store, old)
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
        if other.watch_id == watch.watch_id or not overlap(other.path, watch.path):
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


def overlap(a: str, b: str) -> bool:
    """Whether one of two roots contains the other."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


class Edit(NamedTuple):
    """What `set_watch` did: the watch as it is now, the settings that changed (none: it
    already had them), and the deletes queued into the collection it had before."""

    watch: Watch
    changed: tuple[str, ...]
    deletes: Enqueued
    old_collection: str


def set_watch(store: Store, watch_id: str, **changes: Any) -> Edit:
    """Change settings of a watch (by name, as make_watch takes them: `ignores` are those
    added to the default list), keeping its snapshot and statistics, so that its next scan queues
    exactly the files that enter or leave its scope. A new collection first queues a delete
    of every file into the old one and forgets the snapshot: the next scan ingests them all
    into the new one."""
    from ..queue.writes import Enqueued
    from .deletes import forget_tree

    unknown = set(changes) - set(BY_NAME)
    if unknown:
        raise ValueError(f"not watch settings: {sorted(unknown)}")
    with store.write():
        old = get_watch(store, watch_id)
        _refuse_defined_by_file(store, old, "edit it there")
        settings = {s.name: getattr(old, s.name) for s in STORED}
        settings.update(ignores=[i for i in old.ignores if i not in DEFAULT_IGNORES],
                        default_ignores=all(i in old.ignores for i in DEFAULT_IGNORES))

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
        deletes = forget_tree(store, old) if new.collection != old.collection else Enqueued()
        row = {**new.to_row(), "config_file": old.config_file, "updated_at": now_iso()}
        del row["watch_id"]
        store.update_watch(watch_id, row)
    return Edit(get_watch(store, watch_id), changed, deletes, old.collection)


def _same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name one configuration file (reached by two paths, say)."""
    if a == b:
        return True
    try:
        return a is not None and b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _definer(store: Store, watch: Watch) -> str | None:
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
    definer = _definer(store, watch)
    if watch.config_file and definer is not None:
        raise UsageError(f"watch {watch.watch_id} is {definer}, which would undo this: "
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
    from ..queue.writes import Enqueued
    from .deletes import queue_deletes

    queued = Enqueued()
    with store.write():
        watch = get_watch(store, watch_id)
        _refuse_defined_by_file(store, watch, "remove it from that file, or set "
                                "`enabled: false` there")
        if emit_deletes:
            queued = queue_deletes(store, watch)
        store.delete_watch(watch_id)
    return queued


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
    from ..scan.filters import compile_patterns

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
