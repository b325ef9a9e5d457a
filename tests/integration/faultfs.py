"""faultfs: a passthrough FUSE filesystem that answers with an errno for chosen paths, so
that tests can meet a failing filesystem (a dead server's EIO) for real, not simulated.

usage: faultfs.py SRC_DIR MOUNTPOINT FAULTS_FILE   (runs in the foreground, under the
network lab's Python, which has mfusepy)

FAULTS_FILE holds lines `PATH ERRNO_NAME` (PATH relative to the mount, `.` for its root);
it is read again on every request, so faults come and go without a remount. Looking up,
listing or opening a faulty path (or anything below it) fails with that errno; a line
`PATH ERRNO_NAME read` fails only reading the file's contents, `PATH ERRNO_NAME list` only
listing the directory.
"""
import errno
import os
import stat
import sys

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy as fuse  # noqa: E402


class FaultFS(fuse.Operations):
    use_ns = True

    def __init__(self, root: str, faults: str) -> None:
        self.root, self.faults = os.path.realpath(root), faults

    def _p(self, path: str, op: str = "") -> str:
        """The source path, or the errno a fault names for `path` or an ancestor of it
        (for operation `op` only, if the fault names one)."""
        rel = path.strip("/") or "."
        try:
            with open(self.faults) as f:
                lines = [ln.split() for ln in f if ln.strip()]
        except FileNotFoundError:
            lines = []
        for where, name, *only in lines:
            if (rel == where or where == "." or rel.startswith(where + "/")) \
                    and (not only or only[0] == op):
                raise fuse.FuseOSError(getattr(errno, name))
        return self.root + path

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._p(path))
        d = {k: getattr(st, k) for k in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid",
                                          "st_size", "st_blocks", "st_rdev", "st_blksize")}
        d.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return d

    def readdir(self, path, fh):
        full = self._p(path, "list")
        yield ".", {"st_mode": stat.S_IFDIR, "st_ino": os.lstat(full).st_ino}, 0
        yield "..", {"st_mode": stat.S_IFDIR}, 0
        for name in os.listdir(full):
            st = os.lstat(os.path.join(full, name))
            yield name, {"st_mode": stat.S_IFMT(st.st_mode), "st_ino": st.st_ino}, 0

    def open(self, path, flags):
        return os.open(self._p(path), flags)

    def read(self, path, size, offset, fh):
        self._p(path, "read")
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        return os.close(fh)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fuse.FUSE(FaultFS(sys.argv[1], sys.argv[3]), sys.argv[2], foreground=True,
              nothreads=False, fsname="faultfs:" + os.path.realpath(sys.argv[1]),
              subtype="faultfs", use_ino=True, entry_timeout=0, attr_timeout=0)
