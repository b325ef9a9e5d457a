"""Records shared by both scanner twins and the code that drives them.

Defined once, in plain Python, so that `_scan_c` and `_scan_py` produce and
accept the very same types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Protocol

#: An entry recorded with an mtime this close to the scan is re-hashed next time.
RACY_NS = 2_000_000_000
#: First byte of every snapshot blob; bumped when the layout changes.
BLOB_VERSION = 1


@dataclass(frozen=True, slots=True)
class ScanParams:
    """What one walk needs to know besides the hooks."""

    root: str  # absolute, symlinks resolved
    start_ns: int  # wall-clock start of the scan (settle and racy are relative to it)
    settle_ns: int = 0
    max_depth: int | None = None  # files deeper than this are out of scope; root children = 1
    max_size: int | None = None
    follow_symlinks: bool = False
    minimal: bool = False  # check_stat=minimal: compare size and mtime only
    scope: tuple[str, ...] = ()  # path components of --path below the root


class SnapEntry(NamedTuple):
    """One name in a directory's snapshot: a file with its stat data, or a subdirectory."""

    name: str
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    hash: bytes = b""
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


@dataclass(slots=True)
class DirResult:
    """What changed in one directory: its new snapshot row and the operations."""

    key: str  # "" for the root, else "a/b/"
    blob: bytes | None  # new snapshot row; None when the row is unchanged
    nfiles: int
    changes: list[Change] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # subtree keys whose rows are dropped


@dataclass(slots=True)
class ScanTotals:
    """Counters of one walk."""

    files: int = 0  # in-scope files seen
    dirs: int = 0  # directories listed
    filtered: int = 0  # entries seen but out of scope
    deferred: int = 0  # files left for a later scan (settle, changing while hashed)
    hashed: int = 0
    bytes_hashed: int = 0
    errors: int = 0  # unreadable directories or files, bad names


class ScanHooks(Protocol):
    """Callbacks through which a walk reads the snapshot, asks the filters and reports."""

    def enter(self, rel: str, names: list[str], is_dir: list[bool]) -> list[bool]:
        """Called once per listed directory; True for each name that is not filtered out."""

    def load(self, key: str) -> bytes | None:
        """The snapshot row of one directory, or None."""

    def subtree(self, key: str) -> Iterable[tuple[str, bytes]]:
        """Every snapshot row at or below `key`, in key order."""

    def emit(self, result: DirResult) -> None:
        """Receives each directory whose snapshot or operations changed, parents first."""

    def warn(self, rel: str, message: str) -> None:
        """A local problem (unreadable entry, bad name); the walk goes on."""
