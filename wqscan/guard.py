"""The mass-delete guard: a scan that would delete most of a watch's snapshot (a share
that went away) writes nothing, unless its deletes are moves within the tree or git's
own doing (a checkout, merge or rebase took the files away)."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from .errors import WatchFailed
from .gitinfo import GitUnreadable, has_git, tracked_paths
from .store.spill import Spill

GUARD_MIN = 100  # the guard needs at least this many deletes...
GUARD_FRACTION = 0.5  # ...that are at least this share of the (scoped) snapshot


class Guard:
    """Decides, once a walk has ended, whether its deletes may be written."""

    def __init__(self, root: str, snapshot_files: int) -> None:
        self.root = root
        self.snapshot_files = snapshot_files  # of the scanned part (the --path subtree)
        self.work_trees: dict[str, str] = {}  # directory -> nearest one holding .git, or ""

    def trips(self, deletes: int) -> bool:
        """Whether so many deletes are too many for this snapshot."""
        return deletes >= GUARD_MIN and deletes >= GUARD_FRACTION * self.snapshot_files

    def check(self, deletes: int, spill: Spill) -> None:
        """Fail the watch when, of the `deletes` held in `spill`, too many are neither moves
        nor deletes that git confirms (see git_made)."""
        if not self.trips(deletes) or not self.trips(deletes - spill.moves()):
            return
        unreadable: list[str] = []
        counted = spill.confirm(self._confirmable(spill, unreadable))
        left = counted - spill.moves()
        if not self.trips(left):
            return
        why = [f"{deletes - counted} more are git's own"] if counted < deletes else []
        if unreadable:
            why.append(f"git could not confirm the rest ({unreadable[0]})")
        raise WatchFailed(f"mass-delete guard: the scan would delete {left} of "
                          f"{self.snapshot_files} files"
                          + (f" ({'; '.join(why)})" if why else "")
                          + "; nothing written (--allow-mass-delete to accept)")

    def _confirmable(self, spill: Spill, unreadable: list[str]) -> list[str]:
        """The directories (keys) whose deletes git may confirm: git's deletes. A
        directory's file is git's to delete when the nearest work tree holding it has a
        `.git` that answers, no submodule git still holds contains it, and the directory
        is not left behind empty (git removes the directories it empties; an unmounted
        share leaves an empty mountpoint). Which of their files git still holds is put in
        `spill` with one `git ls-files` per work tree."""
        by_tree: dict[str, list[str]] = {}
        for key in spill.deleted_dirs():
            tree = self._work_tree(key)
            if tree:
                by_tree.setdefault(tree, []).append(key)
        confirmable: list[str] = []
        for tree, keys in by_tree.items():
            inside = tree == self.root or tree.startswith(self.root.rstrip("/") + "/")
            # git names paths from its work tree: from the root's subtree in it, or below
            prefix = os.path.relpath(tree, self.root) + "/" if inside and tree != self.root \
                else ""
            below = "" if inside else os.path.relpath(self.root, tree)
            try:
                spill.track(_relative(tracked_paths(tree, below), prefix, below))
            except GitUnreadable as e:
                unreadable.append(f"{tree}: {e}")
                continue
            confirmable += [k for k in keys if not self._held_submodule(spill, prefix, k)
                            and not self._left_empty(k)]
        return confirmable

    def _work_tree(self, key: str) -> str:
        """The nearest directory at or above the directory `key` that holds `.git` now
        (a directory that is gone holds nothing), or ""."""
        path = os.path.join(self.root, key[:-1]) if key else self.root
        chain = []
        found = ""
        while True:
            known = self.work_trees.get(path)
            if known is not None:
                found = known
                break
            chain.append(path)
            if has_git(path):
                found = path
                break
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for p in chain:
            self.work_trees[p] = found
        return found

    @staticmethod
    def _held_submodule(spill: Spill, prefix: str, key: str) -> bool:
        """Whether a directory lies in a submodule its work tree (at `prefix`) still holds:
        git lists a submodule as one path, so a listed path above the directory is one."""
        parts = key[len(prefix):-1].split("/") if key != prefix else []
        return any(spill.is_tracked(prefix + "/".join(parts[:n]))
                   for n in range(1, len(parts) + 1))

    def _left_empty(self, key: str) -> bool:
        """Whether the nearest directory still there at or above directory `key` is empty:
        git removes every directory it empties, up to the first one left with entries."""
        path = os.path.join(self.root, key) if key else self.root
        while not os.path.lexists(path) and path != self.root:
            path = os.path.dirname(path.rstrip("/"))
        try:
            with os.scandir(path) as it:
                return next(it, None) is None
        except OSError:
            return False  # not a directory, or unreadable (whose files are not deleted)


def _relative(paths: Iterable[str], prefix: str, below: str) -> Iterator[str]:
    """Git's paths (relative to its work tree) as paths relative to the watch root."""
    if below:
        cut = len(below) + 1
        return (p[cut:] for p in paths if p.startswith(below + "/"))
    return (prefix + p for p in paths)
