"""The mass-delete guard: a scan that would delete most of a watch's snapshot (a share
that went away) writes nothing, unless its deletes are moves within the tree or git's
own doing (a checkout, merge or rebase took the files away)."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from ..errors import WatchFailed
from ..scan.gitinfo import GitUnreadable, WorkTree, has_git
from ..store.spill import Spill

GUARD_MIN = 100  # the guard needs at least this many deletes...
GUARD_FRACTION = 0.5  # ...that are at least this share of the (scoped) snapshot


class Guard:
    """Decides, once a walk has ended, whether its deletes may be written. `last_scan_ns`
    is when the snapshot was last brought up to date (None: never whole), from which git
    can tell what it held then."""

    def __init__(self, root: str, snapshot_files: int, last_scan_ns: int | None) -> None:
        self.root = root
        self.snapshot_files = snapshot_files  # of the scanned part (the --path subtree)
        self.last_scan_ns = last_scan_ns

    def trips(self, deletes: int) -> bool:
        """Whether so many deletes are too many for this snapshot."""
        return deletes >= GUARD_MIN and deletes >= GUARD_FRACTION * self.snapshot_files

    def check(self, deletes: int, spill: Spill) -> None:
        """Fail the watch when, of the `deletes` held in `spill` (which trip the guard),
        too many are neither moves nor deletes git made (see `_confirmable`)."""
        if not self.trips(deletes - spill.moves()):
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
        """The directories (keys) whose deletes git may confirm, with what git holds put
        in `spill`. A file is git's to delete when the nearest work tree holding its
        directory has a `.git` that answers, a commit checked out at the last scan or since
        held it, neither the commit checked out now nor the index does (a checkout, merge
        or rebase removes only what git held: a file it never tracked that vanished is a
        share's doing), and its directory is not left behind empty (git removes the
        directories it empties; an unmounted share leaves an empty mountpoint). Questions
        per work tree, not per file: its reflog, the files of each of those commits, what
        it holds now."""
        if self.last_scan_ns is None:
            unreadable.append("no whole scan to compare with")
            return []
        by_tree: dict[str, list[str]] = {}
        trees: dict[str, str] = {}
        for key in spill.deleted_dirs():
            tree = _work_tree(os.path.join(self.root, key[:-1]) if key else self.root, trees)
            if tree:
                by_tree.setdefault(tree, []).append(key)
        confirmable: list[str] = []
        for tree, keys in by_tree.items():
            inside = tree == self.root or tree.startswith(self.root.rstrip("/") + "/")
            # git names paths from its work tree: from the root's subtree in it, or below
            prefix = os.path.relpath(tree, self.root) + "/" if inside and tree != self.root \
                else ""
            below = "" if inside else os.path.relpath(self.root, tree)
            git = WorkTree(tree)
            wanted = set(keys)  # only the files of directories that lost some are looked up
            try:
                for commit in git.heads_since(self.last_scan_ns):
                    spill.hold(_relative(git.held_by(commit, below), prefix, below, wanted),
                               True)
                spill.hold(_relative(git.held_now(below), prefix, below, wanted), False)
            except GitUnreadable as e:
                unreadable.append(f"{tree}: {e}")
                continue
            confirmable += [k for k in keys if not self._left_empty(k)]
        return confirmable

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


def _relative(paths: Iterable[str], prefix: str, below: str, dirs: set[str]
              ) -> Iterator[str]:
    """Git's paths (relative to its work tree) as paths relative to the watch root, of
    files in the directories (keys) `dirs`."""
    cut = len(below) + 1 if below else 0
    for p in paths:
        if below and not p.startswith(below + "/"):
            continue
        rel = prefix + p[cut:]
        if rel[:rel.rfind("/") + 1] in dirs:
            yield rel


def _work_tree(path: str, known: dict[str, str]) -> str:
    """The nearest directory at or above `path` holding `.git` now (one that is gone holds
    nothing), or ""; what each directory passed on the way leads to is remembered in
    `known`, so that sibling directories cost one look each."""
    chain = []
    found = ""
    while True:
        if path in known:
            found = known[path]
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
        known[p] = found
    return found
