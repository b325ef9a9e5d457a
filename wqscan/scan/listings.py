"""The directory cache's entries, shared by both scanner twins (docs/design.md).

A directory whose own stat data equal those recorded when it was last listed, whose
listing was not racy, and whose rules (the watch's settings and every `.gitignore` from
the root down to it) are the same, has the same names as then: the walk takes them from
its entry instead of reading and filtering the directory again. An entry holds:

    version      u8   (LISTING_VERSION)
    mtime_ns     i64  the directory's own stat data, read before it was listed
    ctime_ns     i64
    inode        u64
    size         i64
    fingerprint  u64  of the rules in force (`seed`, then `chain` per .gitignore)
    flags        u8   HAS_GIT | HAS_GITIGNORE (before filtering)
    filtered     u32  names the filters left out (so that the totals stay the same)
    then, for each name the filters let through, in key order:
    kind         u8   KIND_FILE or KIND_DIR
    length       u16
    name         UTF-8 bytes

All numbers little-endian. The compiled twin writes and reads the same bytes.
"""
from __future__ import annotations

import os
import struct
from typing import NamedTuple

import xxhash

from .records import ScanParams

LISTING_VERSION = 1
KIND_FILE, KIND_DIR = 0, 1
HAS_GIT, HAS_GITIGNORE = 1, 2
NAME_MAX = 255  # bytes of a name on the filesystems the cache is on

_HEAD = struct.Struct("<BqqQqQBI")
_NAME = struct.Struct("<BH")

DirStat = tuple[int, int, int, int]  # mtime_ns, ctime_ns, inode, size


class Listing(NamedTuple):
    """One directory's entry in the cache."""

    stat: DirStat
    fingerprint: int
    flags: int
    filtered: int
    names: list[tuple[str, int]]  # (name, KIND_*) of what the filters let through


def dir_stat(st: os.stat_result) -> DirStat:
    """What of a directory's stat data must not have moved for its entry to hold."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size)


def racy(st: os.stat_result, racy_from_ns: int) -> bool:
    """Whether the directory changed so close to the scan that a change after its listing
    could leave the same stat data (a coarse clock stamps both alike): not cached. The
    ctime counts too: resetting the mtime (tar, rsync) moves it."""
    return max(st.st_mtime_ns, st.st_ctime_ns) > racy_from_ns


def seed(params: ScanParams) -> int:
    """The fingerprint of the watch's own rules (its root, patterns, ignores, whether it
    reads .gitignore files, its stat comparison): a change of any invalidates every
    entry."""
    text = repr((LISTING_VERSION, params.root, tuple(params.include), tuple(params.ignore),
                 bool(params.use_gitignore), bool(params.minimal)))
    return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogateescape"))


def chain(fingerprint: int, gitignore: bytes) -> int:
    """The fingerprint below a directory whose `.gitignore` holds `gitignore`."""
    return xxhash.xxh3_64_intdigest(gitignore, seed=fingerprint)


def encode_listing(stat: DirStat, fingerprint: int, flags: int, filtered: int,
                   names: list[tuple[str, int]]) -> bytes:
    parts = [_HEAD.pack(LISTING_VERSION, *stat, fingerprint, flags, filtered)]
    for name, kind in names:
        raw = name.encode()
        parts.append(_NAME.pack(kind, len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_listing(blob: bytes) -> Listing | None:
    """The entry in `blob`; None for one this version cannot read, or that could not have
    been written (a name no listing gives, names out of key order): listed anew."""
    if len(blob) < _HEAD.size or blob[0] != LISTING_VERSION:
        return None
    _, mtime, ctime, ino, size, fp, flags, filtered = _HEAD.unpack_from(blob)
    names, at, last = [], _HEAD.size, b""
    try:
        while at < len(blob):
            kind, n = _NAME.unpack_from(blob, at)
            raw = blob[at + _NAME.size:at + _NAME.size + n]
            key = raw + b"/" if kind == KIND_DIR else raw
            if kind not in (KIND_FILE, KIND_DIR) or len(raw) != n or not 0 < n <= NAME_MAX \
                    or b"/" in raw or b"\0" in raw or raw in (b".", b"..") \
                    or (names and key <= last):
                return None
            names.append((raw.decode(), kind))
            at, last = at + _NAME.size + n, key
    except (struct.error, UnicodeDecodeError):
        return None
    return Listing((mtime, ctime, ino, size), fp, flags, filtered, names)
