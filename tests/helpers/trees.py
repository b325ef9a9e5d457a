"""Trees with exact mtimes: files written and stamped, a big generated tree, content hashes."""
from __future__ import annotations

import os
from pathlib import Path

import xxhash

#: A fixed mtime well in the past (2023-11-14), so that settle never defers test files.
OLD_NS = 1_700_000_000_123_456_789


def write(path: Path, content: bytes | str = b"x", mtime_ns: int = OLD_NS) -> Path:
    """Create or overwrite a file (and its parents) and set its mtime exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def write_file(path: str, data: bytes, mtime_ns: int) -> None:
    """Create or overwrite a file in place (its parent exists) and set its mtime exactly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def big_tree_content(i: int, version: int = 0) -> bytes:
    """What make_big_tree writes in its file number `i` (`version` 0)."""
    return b"file %d version %d\n" % (i, version)


def make_big_tree(root: Path | str, dirs: int, files_per_dir: int) -> dict[str, bytes]:
    """Create `root` with `dirs` x `files_per_dir` small files dNNN/fNNN.txt, old and
    distinct mtimes (OLD_NS + i us); returns {absolute path below the resolved root:
    content}."""
    os.mkdir(root)
    base = os.path.realpath(root)
    files: dict[str, bytes] = {}
    for d in range(dirs):
        dpath = f"{base}/d{d:03d}"
        os.mkdir(dpath)
        for f in range(files_per_dir):
            i = d * files_per_dir + f
            p = f"{dpath}/f{f:03d}.txt"
            files[p] = big_tree_content(i)
            write_file(p, files[p], OLD_NS + i * 1_000)
    return files


def h(content: bytes | str) -> str:
    """The content hash wqscan records for `content` (XXH3-128, hex; str as UTF-8)."""
    return xxhash.xxh3_128_hexdigest(content.encode() if isinstance(content, str) else content)
