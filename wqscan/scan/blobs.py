"""The snapshot blob layout in Python: the pure twin's codec (the compiled twin's is
`ext/blob.pxi`; both write and read the same bytes). A blob is BLOB_VERSION, then per
file, sorted by name: name length and flags, the name, then size, mtime, ctime, inode
and the XXH3-128 digest."""
from __future__ import annotations

import struct
from typing import Iterable

from .records import BLOB_VERSION, SnapEntry

_HEAD = struct.Struct("<HB")  # name length, flags
_FILE = struct.Struct("<qqqQ16s")  # size, mtime_ns, ctime_ns, inode, XXH3-128
_F_RACY = 2


def encode_entries(entries: Iterable[SnapEntry]) -> bytes:
    """Pack a directory's snapshot entries (already sorted by name) into one blob."""
    out = [bytes((BLOB_VERSION,))]
    for e in entries:
        name = e.name.encode()
        if len(name) > 0xFFFF:
            raise ValueError("a name in the snapshot is at most 65535 bytes")
        if len(e.hash) != 16:
            raise ValueError("a snapshot hash has 16 bytes")
        out.append(_HEAD.pack(len(name), _F_RACY if e.racy else 0) + name)
        out.append(_FILE.pack(e.size, e.mtime_ns, e.ctime_ns, e.ino, e.hash))
    return b"".join(out)


def decode_entries(blob: bytes) -> list[SnapEntry]:
    """Unpack a row's blob into its entries, sorted by name."""
    if not blob:
        return []
    if blob[0] != BLOB_VERSION:
        raise ValueError(f"snapshot row has layout version {blob[0]}, expected {BLOB_VERSION}")
    entries: list[SnapEntry] = []
    pos, end = 1, len(blob)
    while pos < end:
        if pos + _HEAD.size > end:
            raise ValueError("corrupt snapshot row: truncated entry header")
        n, flags = _HEAD.unpack_from(blob, pos)
        pos += _HEAD.size
        if pos + n + _FILE.size > end:
            raise ValueError("corrupt snapshot row: truncated entry")
        name = blob[pos:pos + n].decode()
        pos += n
        size, mtime, ctime, ino, digest = _FILE.unpack_from(blob, pos)
        pos += _FILE.size
        entries.append(SnapEntry(name, size, mtime, ctime, ino, digest, bool(flags & _F_RACY)))
    return entries
