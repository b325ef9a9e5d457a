"""Where a followed symlink leads, checked to stay inside the watch root (the pure
scanner twin; the compiled one does the same in C)."""
from __future__ import annotations

import os
import stat


def beneath_stat(root: str, rel: str) -> os.stat_result | None:
    """Stat `rel` below `root` by walking down one name at a time, following no symlink:
    what is found is inside the root even if a directory on the way was just swapped
    for a link. None when that fails."""
    fd = -1
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        for name in filter(None, rel.split("/")):
            parent, fd = fd, -1
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                return None
        return os.fstat(fd)
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
