"""What kind of filesystem a path lies on, read from /proc/self/mountinfo."""
from __future__ import annotations

import os

# Filesystems whose inode numbers or ctimes are not stable (check_stat=auto -> minimal).
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p",
                           "ceph", "glusterfs", "afs", "lustre", "gpfs", "davfs", "virtiofs",
                           "fuse", "ncpfs", "coda"})


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space, ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def fs_type(path: str, mountinfo: str = "/proc/self/mountinfo",
            resolve: bool = True) -> str | None:
    """Type of the filesystem mounted at the longest mount point containing `path`.
    Without `resolve`, symlinks in `path` are not followed: nothing touches the path
    itself, which can block for as long as a hung mount does."""
    path = os.path.realpath(path) if resolve else os.path.abspath(path)
    best, best_type = "", None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, right.split()[0]
    return best_type


def is_network(fstype: str | None) -> bool:
    """Whether inode numbers and ctimes on this filesystem may change under us."""
    if fstype is None:
        return False
    return fstype in NETWORK_TYPES or fstype.startswith("fuse.") or fstype.startswith("nfs")


def check_stat_mode(setting: str, fstype: str | None) -> str:
    """The stat comparison a scan uses: `auto` is `minimal` on network and FUSE mounts."""
    if setting != "auto":
        return setting
    return "minimal" if is_network(fstype) else "full"


def dircache_off(fstype: str | None, follow_symlinks: bool) -> str | None:
    """Why a scan does not use the directory cache here (None: it does). The cache needs a
    directory's mtime and ctime to move with every entry added, removed or renamed, seen
    no later than a listing would see the entry: local filesystems and NFS; FUSE mounts
    (sshfs) and SMB cache attributes and listings by rules of their own, not proven here
    (docs/design.md)."""
    if follow_symlinks:
        return "off: symlinks are followed"
    if is_network(fstype) and not (fstype or "").startswith("nfs"):
        return f"off on {fstype}: its attribute caching is not proven safe for it"
    return None
