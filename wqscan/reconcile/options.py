"""How one run scans each of its watches: `reconcile`'s keyword arguments as one record,
passed whole to the parts of a scan that read them."""
from __future__ import annotations

from typing import Callable, NamedTuple

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
