"""Pure-Python scanner: walks a tree directory by directory and diffs it with the snapshot.

Twin of `ext/_scan_c.pyx` (same names, same behaviour, same blob layout); the rest
of the package reaches either one through `wqscan._scan` only.

Each directory is listed once, its entries are stat'ed once, sorted by key (a
directory's key is its name plus "/", so the keys of a depth-first walk come out
in the byte order of the snapshot's primary key) and merged with that
directory's snapshot row. Only one directory's entries are in memory at a time.
"""
from __future__ import annotations

import errno
import os
import stat
import struct
from typing import Iterable

import xxhash

from .records import (
    BLOB_VERSION,
    RACY_NS,
    Change,
    DirResult,
    ScanHooks,
    ScanParams,
    ScanTotals,
    SnapEntry,
)

__all__ = ["walk", "encode_entries", "decode_entries"]

_HEAD = struct.Struct("<HB")  # name length, flags
_FILE = struct.Struct("<qqqQ16s")  # size, mtime_ns, ctime_ns, inode, XXH3-128
_F_DIR, _F_RACY = 1, 2
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_READ = 1 << 20

# entry kinds of a listing
_FILE_K, _DIR_K, _LINK_K, _OTHER_K = 0, 1, 2, 3
# outcomes of hashing
_OK, _DEFERRED, _VANISHED, _FAILED = 0, 1, 2, 3
# a listed entry: name, kind, stat of a followed symlink's target (else None), followed?
_Listed = tuple[str, int, "os.stat_result | None", bool]


def encode_entries(entries: Iterable[SnapEntry]) -> bytes:
    """Pack snapshot entries (already in key order) into one row's blob."""
    out = [bytes((BLOB_VERSION,))]
    for e in entries:
        name = e.name.encode()
        if len(name) > 0xFFFF:
            raise ValueError("a name in the snapshot is at most 65535 bytes")
        if not e.is_dir and len(e.hash) != 16:
            raise ValueError("a snapshot hash has 16 bytes")
        if e.is_dir:
            out.append(_HEAD.pack(len(name), _F_DIR) + name)
        else:
            out.append(_HEAD.pack(len(name), _F_RACY if e.racy else 0) + name)
            out.append(_FILE.pack(e.size, e.mtime_ns, e.ctime_ns, e.ino, e.hash))
    return b"".join(out)


def decode_entries(blob: bytes) -> list[SnapEntry]:
    """Unpack a row's blob into its entries, in key order."""
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
        name = blob[pos:pos + n].decode()
        pos += n
        if pos + (0 if flags & _F_DIR else _FILE.size) > end:
            raise ValueError("corrupt snapshot row: truncated entry")
        if flags & _F_DIR:
            entries.append(SnapEntry(name, True))
        else:
            size, mtime, ctime, ino, digest = _FILE.unpack_from(blob, pos)
            pos += _FILE.size
            entries.append(SnapEntry(name, False, size, mtime, ctime, ino, digest,
                                     bool(flags & _F_RACY)))
    return entries


def _key(name: str, is_dir: bool) -> bytes:
    return name.encode() + b"/" if is_dir else name.encode()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Walker:
    """One walk: an explicit stack of directories, each merged with its snapshot row."""

    def __init__(self, params: ScanParams, hooks: ScanHooks) -> None:
        self.p = params
        self.hooks = hooks
        self.totals = ScanTotals()
        self.settle_from = params.start_ns - params.settle_ns
        self.racy_from = params.start_ns - RACY_NS

    def run(self) -> ScanTotals:
        # a stack entry: relative path, depth, remaining scope, reached through a
        # followed symlink, (dev, inode) of the ancestors, virtual (scoped, not on disk)
        stack: list[tuple[str, int, tuple[str, ...], bool, tuple, bool]] = [
            ("", 0, self.p.scope, False, (), False)]
        while stack:
            self._dir(stack, *stack.pop())
        return self.totals

    def _warn(self, rel: str, message: str) -> None:
        self.totals.errors += 1
        self.hooks.warn(rel, message)

    # -- one directory ---------------------------------------------------------------

    def _dir(self, stack: list, rel: str, depth: int, scope: tuple[str, ...],
             via_link: bool, chain: tuple, virtual: bool) -> None:
        key = rel + "/" if rel else ""
        path = os.path.join(self.p.root, rel) if rel else self.p.root
        listing: list[_Listed] = []
        fd = -1
        if not virtual:
            try:
                fd = os.open(path, _OPEN_DIR | (0 if via_link or not rel else os.O_NOFOLLOW))
            except OSError as e:
                if not rel:
                    raise
                if e.errno in _GONE:
                    changes: list[Change] = []
                    self._drop(key, changes)
                    self.hooks.emit(DirResult(key, None, 0, changes, [key]))
                else:
                    self._warn(rel, f"cannot open directory: {e.strerror}")
                return
        try:
            if fd >= 0:
                if self.p.follow_symlinks:
                    st = os.fstat(fd)
                    chain += ((st.st_dev, st.st_ino),)
                try:
                    listing = self._list(fd, rel, path, chain)
                except OSError as e:
                    self._warn(rel, f"cannot list directory: {e.strerror}")
                    return
                self.totals.dirs += 1
            self._merge(stack, fd, rel, key, depth, scope, via_link, chain, listing)
        finally:
            if fd >= 0:
                os.close(fd)

    def _list(self, fd: int, rel: str, path: str, chain: tuple) -> list[_Listed]:
        """Names of one directory with their kind, filtered; symlinks resolved if followed."""
        raw: list[_Listed] = []
        with os.scandir(fd) as it:
            for e in it:
                name = e.name
                try:
                    name.encode()
                except UnicodeEncodeError:
                    self._warn(rel, f"skipped a name that is not valid UTF-8: {name!r}")
                    continue
                if e.is_dir(follow_symlinks=False):
                    raw.append((name, _DIR_K, None, False))
                elif e.is_file(follow_symlinks=False):
                    raw.append((name, _FILE_K, None, False))
                elif e.is_symlink():
                    raw.append(self._link(rel, path, name, chain))
                else:
                    raw.append((name, _OTHER_K, None, False))
        raw.sort(key=lambda r: _key(r[0], r[1] == _DIR_K))
        keep = self.hooks.enter(rel, [r[0] for r in raw], [r[1] == _DIR_K for r in raw])
        listing = []
        for r, k in zip(raw, keep):
            if k and r[1] != _OTHER_K:
                listing.append(r)
            else:
                self.totals.filtered += 1
        return listing

    def _link(self, rel: str, path: str, name: str, chain: tuple) -> _Listed:
        """Classify a symlink: followed to a file or directory inside the root, or skipped."""
        skip = (name, _OTHER_K, None, False)
        if not self.p.follow_symlinks:
            return skip
        try:
            target = os.path.realpath(os.path.join(path, name), strict=True)
        except OSError:
            return skip  # dangling or a loop
        if not _inside(target, self.p.root):
            self.hooks.warn(os.path.join(rel, name), "symlink leads outside the watch root; skipped")
            return skip
        try:
            st = os.stat(target)
        except OSError:
            return skip
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in chain:
                return skip  # a link to one of its own ancestors
            return (name, _DIR_K, st, True)
        if stat.S_ISREG(st.st_mode):
            return (name, _FILE_K, st, True)
        return skip

    def _merge(self, stack: list, fd: int, rel: str, key: str, depth: int,
               scope: tuple[str, ...], via_link: bool, chain: tuple,
               listing: list[_Listed]) -> None:
        """Merge one directory's listing with its snapshot row; emit what changed."""
        p = self.p
        old = {_key(e.name, e.is_dir): e for e in decode_entries(self.hooks.load(key) or b"")}
        files_ok = p.max_depth is None or depth + 1 <= p.max_depth
        dirs_ok = p.max_depth is None or depth + 2 <= p.max_depth
        considered: set[bytes] | None = None  # with --path: the only keys looked at here
        if len(scope) >= 2:
            considered = {scope[0].encode() + b"/"}
        elif len(scope) == 1:
            considered = {scope[0].encode(), scope[0].encode() + b"/"}
        new: dict[bytes, _Listed] = {}
        unknown: set[bytes] = set()  # in scope but not stat'able now: the snapshot entry stays
        for name, kind, st, linked in listing:
            k = _key(name, kind == _DIR_K)
            if considered is not None and k not in considered:
                continue
            if kind == _DIR_K:
                if dirs_ok:
                    new[k] = (name, kind, st, linked)
                else:
                    self.totals.filtered += 1
                continue
            if not files_ok:
                self.totals.filtered += 1
                continue
            if st is None:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in _GONE:
                        unknown.add(k)
                        self._warn(os.path.join(rel, name), f"cannot stat: {e.strerror}")
                    continue
            if not stat.S_ISREG(st.st_mode) or (p.max_size is not None and st.st_size > p.max_size):
                self.totals.filtered += 1
                continue
            self.totals.files += 1
            new[k] = (name, kind, st, linked)

        out: list[SnapEntry] = []
        changes: list[Change] = []
        removed: list[str] = []
        children: list[tuple[str, bool, bool]] = []  # name, through a symlink, virtual
        dirty = False
        for k in sorted(old.keys() | new.keys()):
            o = old.get(k)
            if (considered is not None and k not in considered) or k in unknown:
                if o is not None:
                    out.append(o)
                continue
            n = new.get(k)
            if n is None:
                assert o is not None
                if len(scope) >= 2:
                    out.append(o)  # the scoped ancestor is missing: look below it only
                    children.append((o.name, False, True))
                    continue
                dirty = True
                if o.is_dir:
                    sub = key + o.name + "/"
                    self._drop(sub, changes)
                    removed.append(sub)
                else:
                    changes.append(Change("delete", key + o.name, o.size, o.mtime_ns, o.ino,
                                          o.hash, None))
                continue
            name, kind, st, linked = n
            if kind == _DIR_K:
                dirty = dirty or o is None
                out.append(SnapEntry(name, True))
                children.append((name, linked or via_link, False))
                continue
            assert st is not None
            if o is not None and not o.racy and o.size == st.st_size \
                    and o.mtime_ns == st.st_mtime_ns and (
                        p.minimal or (o.ctime_ns == st.st_ctime_ns and o.ino == st.st_ino)):
                out.append(o)
                continue
            outcome, digest = self._hash(fd, rel, name, st, linked)
            if outcome == _OK:
                dirty = True
                out.append(SnapEntry(name, False, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                     st.st_ino, digest, st.st_mtime_ns > self.racy_from))
                if o is None:
                    changes.append(Change("ingest", key + name, st.st_size, st.st_mtime_ns,
                                          st.st_ino, digest, None))
                elif o.size != st.st_size or o.hash != digest:
                    changes.append(Change("update", key + name, st.st_size, st.st_mtime_ns,
                                          st.st_ino, digest, o.hash))
            elif outcome == _VANISHED:
                if o is not None:
                    dirty = True
                    changes.append(Change("delete", key + name, o.size, o.mtime_ns, o.ino,
                                          o.hash, None))
            elif o is not None:
                out.append(o)  # deferred or unreadable: the snapshot keeps what it had

        if dirty or changes or removed:
            blob = encode_entries(out) if dirty else None
            nfiles = sum(1 for e in out if not e.is_dir)
            self.hooks.emit(DirResult(key, blob, nfiles, changes, removed))
        for name, linked, virtual in reversed(children):
            stack.append((key + name, depth + 1, scope[1:], linked, chain, virtual))

    def _hash(self, fd: int, rel: str, name: str, st: os.stat_result,
              follow: bool) -> tuple[int, bytes]:
        """XXH3-128 of one file, or why there is none (deferred, vanished, failed)."""
        if st.st_mtime_ns > self.settle_from:
            self.totals.deferred += 1
            return _DEFERRED, b""
        try:
            f = os.open(name, _OPEN_FILE | (0 if follow else os.O_NOFOLLOW), dir_fd=fd)
        except OSError as e:
            if e.errno in _GONE:
                return _VANISHED, b""
            self._warn(os.path.join(rel, name), f"cannot read: {e.strerror}")
            return _FAILED, b""
        try:
            before = os.fstat(f)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != st.st_ino:
                self.totals.deferred += 1
                return _DEFERRED, b""
            h = xxhash.xxh3_128()
            total = 0
            while True:
                chunk = os.read(f, _READ)
                if not chunk:
                    break
                h.update(chunk)
                total += len(chunk)
            after = os.fstat(f)
        except OSError as e:
            self._warn(os.path.join(rel, name), f"cannot read: {e.strerror}")
            return _FAILED, b""
        finally:
            os.close(f)
        self.totals.hashed += 1
        self.totals.bytes_hashed += total
        if total != st.st_size or after.st_size != st.st_size \
                or after.st_mtime_ns != st.st_mtime_ns:
            self.totals.deferred += 1
            return _DEFERRED, b""
        return _OK, h.digest()

    def _drop(self, key: str, changes: list[Change]) -> None:
        """Deletes for every file recorded at or below the snapshot key `key`."""
        for row_key, blob in self.hooks.subtree(key):
            for e in decode_entries(blob):
                if not e.is_dir:
                    changes.append(Change("delete", row_key + e.name, e.size, e.mtime_ns,
                                          e.ino, e.hash, None))


def walk(params: ScanParams, hooks: ScanHooks) -> ScanTotals:
    """Walk the tree under `params.root` (or its `scope`), emitting each changed directory."""
    return _Walker(params, hooks).run()
