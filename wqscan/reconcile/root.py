"""The watch root a scan stands on: checked before the walk and before each commit, so
that an unmounted, emptied or replaced share, or a filesystem answering I/O errors, writes
nothing rather than deletes."""
from __future__ import annotations

import os
import stat

from ..errors import WatchFailed


class Root:
    """The root directory of one scan: its identity when the scan began, and the I/O errors
    the filesystem under it answered. With `allow_empty` (--allow-mass-delete), a root
    left empty is accepted."""

    def __init__(self, path: str, allow_empty: bool) -> None:
        self.path = path
        self.allow_empty = allow_empty
        self.id = (0, 0)  # (device, inode) when the scan began
        self.scoped_files = 0  # snapshot files of the scanned part
        self.io_errors = 0  # answers of a failing filesystem (EIO, a dead server)
        self.first_io_error = ""

    def open(self) -> None:
        """Check the root before the walk, and remember which directory it is."""
        self.id = self._identity()

    def expect(self, total_files: int, scoped_files: int) -> None:
        """The snapshot holds `total_files`, `scoped_files` of them in the scanned part: fail
        now if the root is empty while it holds any (an unmounted share leaves an empty
        mountpoint), and at a recheck if it empties while the scanned part holds any."""
        self.scoped_files = scoped_files
        if total_files and not self.allow_empty and not self._has_entries():
            raise WatchFailed(f"root {self.path} is empty while the snapshot holds "
                              f"{total_files} files (unmounted share?); nothing written")

    def io_error(self, where: str) -> None:
        """The filesystem answered an I/O error at `where` (a relative path and message)."""
        self.io_errors += 1
        self.first_io_error = self.first_io_error or where

    def check_io(self) -> None:
        """A filesystem that answers with I/O errors fails the scan: what it said cannot be
        trusted, so nothing more is written (the entries it failed on are kept)."""
        if self.io_errors:
            raise WatchFailed(f"the filesystem answered {self.io_errors} I/O error(s) (first: "
                              f"{self.first_io_error}; a dead server or a failing disk?); "
                              "nothing more written, no entry deleted")

    def before_commit(self) -> None:
        """Before each commit: the filesystem answered no I/O error, and the root is still
        the directory the scan started in, not emptied while the scanned part holds files."""
        self.check_io()
        if self._identity() != self.id:
            raise WatchFailed(f"root {self.path} changed during the scan (unmounted or "
                              "replaced); nothing more written")
        if self.scoped_files and not self.allow_empty and not self._has_entries():
            raise WatchFailed(f"root {self.path} became empty during the scan; "
                              "nothing more written")

    def _identity(self) -> tuple[int, int]:
        """(device, inode) of the root, failing the watch if it is not a readable directory."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise WatchFailed(f"root {self.path} unavailable: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise WatchFailed(f"root {self.path} is not a directory")
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise WatchFailed(f"root {self.path} is not readable")
        return st.st_dev, st.st_ino

    def _has_entries(self) -> bool:
        try:
            with os.scandir(self.path) as it:
                return next(it, None) is not None
        except OSError as e:
            raise WatchFailed(f"root {self.path} unreadable: {e.strerror}") from None
