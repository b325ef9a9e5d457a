"""Hashing an open file's contents with XXH3-128 through the xxhash package's Python API:
how the pure scanner hashes, and the compiled one when it cannot use xxhash's C functions
(both twins then read a file the very same way)."""
from __future__ import annotations

import os
from typing import Callable

import xxhash

READ = 1 << 20  # bytes per read


def read_digest(fd: int, progress: Callable[[int, int], None]) -> tuple[bytes, int]:
    """(XXH3-128 digest, bytes read) of an open file read to its end; `progress(total,
    chunk)` is called after each read, so a big file reports while it is read."""
    h = xxhash.xxh3_128()
    total = 0
    while chunk := os.read(fd, READ):
        h.update(chunk)
        total += len(chunk)
        progress(total, len(chunk))
    return h.digest(), total
