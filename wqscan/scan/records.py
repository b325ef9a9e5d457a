"""Records shared by both scanner twins and the code that drives them.

Defined once, in plain Python, so that `_scan_c` and `_scan_py` produce and
accept the very same types. They are NamedTuples and slotted classes rather
than dataclasses: importing dataclasses (with inspect) would cost about 14 ms of
the 100 ms a start of `wqscan` may take.
"""
from __future__ import annotations

import errno
from typing import Iterable, NamedTuple, Protocol

#: An entry recorded with an mtime this close to the scan is re-hashed next time.
RACY_NS = 2_000_000_000
#: errno values by which a filesystem says it is failing (a dead server, a bad disk), not
#: that one entry is unreadable: a scan that meets one fails (ESTALE, a file replaced on
#: an NFS server, and EACCES stay warnings).
IO_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EIO", "ENOTCONN", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "EHOSTDOWN", "EHOSTUNREACH",
    "ENETDOWN", "ENETUNREACH", "ENOLINK", "ECOMM", "EREMOTEIO") if hasattr(errno, name))
#: The warning for a name that is not UTF-8, reported at the name's path (decoded with
#: surrogateescape: text output shows its bytes as \xNN).
NOT_UTF8 = "skipped: the name is not valid UTF-8"
#: A walk reports its progress this often (nanoseconds), also while it hashes a big file.
PROGRESS_NS = 500_000_000
#: `ScanParams.eager_from_ns` of a first scan: every file is hashed as it is listed.
EAGER_ALL = -(1 << 63)
#: First byte of every snapshot blob; bumped when the layout changes.
BLOB_VERSION = 1


class ScanParams(NamedTuple):
    """What one walk needs to know besides the hooks."""

    root: str  # absolute, symlinks resolved
    start_ns: int  # wall-clock start of the scan (settle and racy are relative to it)
    settle_ns: int = 0
    max_depth: int | None = None  # files deeper than this are out of scope; root children = 1
    max_size: int | None = None
    follow_symlinks: bool = False
    minimal: bool = False  # check_stat=minimal: compare size and mtime only
    scope: tuple[str, ...] = ()  # path components of --path below the root
    include: tuple[str, ...] = ()  # include patterns (gitignore syntax); none = every file
    ignore: tuple[str, ...] = ()  # ignore patterns (gitignore syntax)
    use_gitignore: bool = True
    threads: int = 1  # directories listed at once (the compiled twin; the pure one uses 1)
    # The compiled twin's workers hash, as they list, the files whose status changed (their
    # ctime, which a write, a touch or a rename moves and no one can set back) at or after
    # this time (EAGER_ALL: all, on a first scan), while the calling thread merges; the
    # merge takes a hash it needs from them. None: the merge hashes what it needs itself.
    eager_from_ns: int | None = None
    progress_ns: int = PROGRESS_NS  # between two progress reports; 0: after each directory
    # Take the names of a directory that has not changed from the directory cache
    # (`ScanHooks.listings`) rather than list it again; ignored when following symlinks.
    dircache: bool = False


class SnapEntry(NamedTuple):
    """One file in a directory's snapshot row, with its stat data and hash."""

    name: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    hash: bytes
    racy: bool = False


class Change(NamedTuple):
    """An operation the scan derived for one file (path relative to the root)."""

    op: str  # "ingest" | "update" | "delete"
    path: str
    size: int
    mtime_ns: int
    ino: int
    hash: bytes  # XXH3-128 digest; for a delete the last known one
    previous_hash: bytes | None  # for an update: the snapshot's hash


class DirResult(NamedTuple):
    """What changed in one directory: its new snapshot row and the operations."""

    key: str  # "" for the root, else "a/b/"
    blob: bytes | None  # the new snapshot row; None when it is dropped
    nfiles: int
    changes: list[Change]
    removed: list[str]  # keys of snapshot rows to delete


class ScanTotals:
    """Counters of one walk."""

    __slots__ = ("files", "dirs", "filtered", "deferred", "hashed", "bytes_hashed", "errors")

    def __init__(self, files: int = 0, dirs: int = 0, filtered: int = 0, deferred: int = 0,
                 hashed: int = 0, bytes_hashed: int = 0, errors: int = 0) -> None:
        self.files = files  # in-scope files seen
        self.dirs = dirs  # directories listed
        self.filtered = filtered  # entries seen but out of scope
        self.deferred = deferred  # files left for later (settle, changing while hashed)
        self.hashed = hashed
        self.bytes_hashed = bytes_hashed
        self.errors = errors  # unreadable directories or files, bad names

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScanTotals) and self._values() == other._values()

    def __repr__(self) -> str:
        return "ScanTotals(" + ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__) + ")"


class ScanHooks(Protocol):
    """Callbacks through which a walk reads the snapshot and reports."""

    def rows(self) -> Iterable[tuple[str, bytes]]:
        """The snapshot rows (key, blob) of the scanned part, in key order."""

    def listings(self) -> Iterable[tuple[str, bytes]]:
        """The directory cache's entries (key, entry) of the scanned part, in key order
        (scan/listings.py); read only when `ScanParams.dircache`."""

    def listing(self, key: str, entry: bytes | None) -> None:
        """Directory `key` was listed anew: its entry to keep, or None to forget the one
        it had (changed too recently to be trusted, or gone)."""

    def repo(self, rel: str) -> None:
        """Directory `rel` holds a `.git` entry (a project root for tenant and branch)."""

    def emit(self, result: DirResult) -> None:
        """Receives, in key order, each directory whose snapshot or operations changed."""

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        """A local problem (unreadable entry, bad name) and its errno, if it is one; the
        walk goes on."""

    def progress(self, files: int, dirs: int, bytes_hashed: int) -> None:
        """Counts so far, every `progress_ns` (PROGRESS_NS), for a progress line; the bytes
        hashed include those of a file still being hashed."""
