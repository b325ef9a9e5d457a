# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""Compiled scanner: walks a tree directory by directory and diffs it with the snapshot.

Twin of `wqscan/_scan_py.py` (same names, same behaviour, same blob layout). The
listing, stat calls, sorting, the merge with the snapshot row and the file reads
run in C; Python objects are made only for names handed to the filters and for
entries that changed.
"""
from libc.stdint cimport int64_t, uint64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, strlen
from libc.errno cimport errno, ENOENT, ENOTDIR, ELOOP
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import os as _os

import xxhash as _xxhash

from wqscan.records import (
    BLOB_VERSION,
    RACY_NS,
    Change,
    DirResult,
    ScanTotals,
    SnapEntry,
)

__all__ = ["walk", "encode_entries", "decode_entries"]


cdef extern from "<sys/types.h>":
    ctypedef long ino_t
    ctypedef long off_t

cdef extern from "<sys/stat.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    cdef struct stat:
        uint64_t st_dev
        uint64_t st_ino
        unsigned int st_mode
        int64_t st_size
        timespec st_mtim
        timespec st_ctim
    int fstatat(int dirfd, const char *path, stat *buf, int flags)
    int fstat(int fd, stat *buf)
    int S_ISREG(unsigned int m)
    int S_ISDIR(unsigned int m)

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    int open(const char *path, int flags, ...)
    int O_RDONLY, O_DIRECTORY, O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY
    int AT_SYMLINK_NOFOLLOW

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t n)

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    cdef struct dirent:
        unsigned char d_type
        char d_name[256]
    DIR *fdopendir(int fd)
    dirent *readdir(DIR *d)
    int closedir(DIR *d)
    int dirfd(DIR *d)
    unsigned char DT_DIR, DT_REG, DT_LNK, DT_UNKNOWN

cdef extern from "<stdlib.h>" nogil:
    char *realpath(const char *path, char *resolved)

cdef extern from "<string.h>" nogil:
    char *strerror(int errnum)

cdef extern from *:
    """
    #include <errno.h>
    static void wq_clear_errno(void) { errno = 0; }
    """
    void wq_clear_errno() nogil

cdef enum:
    READ_SIZE = 1 << 20
    F_DIR = 1
    F_RACY = 2
    FILE_BYTES = 48  # size, mtime_ns, ctime_ns, inode (8 each) + XXH3-128 (16)
    SLASH = 47

cdef enum:  # entry kinds of a listing
    K_FILE = 0
    K_DIR = 1
    K_OTHER = 3

cdef enum:  # Ent.keep
    SKIP = 0        # filtered out
    MERGE = 1       # takes part in the merge
    OUT_OF_SCOPE = 2  # outside --path: the snapshot entry stays as it is
    NO_STAT = 3     # not stat'able now: the snapshot entry stays as it is

cdef enum:  # outcomes of hashing
    H_OK = 0
    H_DEFERRED = 1
    H_VANISHED = 2
    H_FAILED = 3


cdef struct Ent:
    char *name          # owned, NUL-terminated
    int nlen
    int kind
    int linked          # a followed symlink; st is its target's
    int has_st
    int keep            # passed the filters and the scope
    stat st


cdef struct Old:
    const char *name    # points into the snapshot blob
    int nlen
    int is_dir
    int racy
    int64_t size
    int64_t mtime
    int64_t ctime
    uint64_t ino
    const char *hash


cdef struct Buf:
    char *data
    size_t len
    size_t cap
    int nfiles


cdef int buf_put(Buf *b, const void *src, size_t n) except -1:
    cdef size_t cap
    if b.len + n > b.cap:
        cap = b.cap * 2 if b.cap else 4096
        while cap < b.len + n:
            cap *= 2
        b.data = <char *>realloc(b.data, cap)
        if b.data == NULL:
            raise MemoryError()
        b.cap = cap
    memcpy(b.data + b.len, src, n)
    b.len += n
    return 0


cdef inline void put_le(char *p, uint64_t v, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[i] = <char>(v & 0xff)
        v >>= 8


cdef inline uint64_t get_le(const char *p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n - 1, -1, -1):
        v = (v << 8) | <uint8_t>p[i]
    return v


cdef inline int key_cmp(const char *a, int alen, int adir,
                        const char *b, int blen, int bdir) noexcept nogil:
    """Byte order of two keys, where a directory's key is its name followed by '/'."""
    cdef int n = alen if alen < blen else blen
    cdef int c = memcmp(a, b, n)
    cdef int la = alen + (1 if adir else 0)
    cdef int lb = blen + (1 if bdir else 0)
    cdef int ca, cb
    if c != 0:
        return c
    while n < la and n < lb:
        ca = (<uint8_t>a[n]) if n < alen else SLASH
        cb = (<uint8_t>b[n]) if n < blen else SLASH
        if ca != cb:
            return ca - cb
        n += 1
    return la - lb


cdef int ent_cmp(const void *x, const void *y) noexcept nogil:
    cdef const Ent *a = <const Ent *>x
    cdef const Ent *b = <const Ent *>y
    return key_cmp(a.name, a.nlen, a.kind == K_DIR, b.name, b.nlen, b.kind == K_DIR)


cdef int parse_blob(bytes blob, Old **out) except -1:
    """Points `out` at the entries of a snapshot row; returns their count."""
    cdef const char *p = PyBytes_AS_STRING(blob)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(blob)
    cdef Py_ssize_t pos = 1
    cdef int n = 0, cap = 16
    cdef Old *arr
    cdef Old *tmp
    cdef uint8_t flags
    if end == 0:
        out[0] = NULL
        return 0
    if <uint8_t>p[0] != BLOB_VERSION:
        raise ValueError(f"snapshot row has layout version {<uint8_t>p[0]}, expected {BLOB_VERSION}")
    arr = <Old *>malloc(cap * sizeof(Old))
    if arr == NULL:
        raise MemoryError()
    while pos < end:
        if n == cap:
            cap *= 2
            tmp = <Old *>realloc(arr, cap * sizeof(Old))
            if tmp == NULL:
                free(arr)
                raise MemoryError()
            arr = tmp
        if pos + 3 > end:
            free(arr)
            raise ValueError("corrupt snapshot row: truncated entry header")
        arr[n].nlen = <int>get_le(p + pos, 2)
        flags = <uint8_t>p[pos + 2]
        arr[n].name = p + pos + 3
        pos += 3 + arr[n].nlen
        arr[n].is_dir = flags & F_DIR
        arr[n].racy = (flags & F_RACY) != 0
        if pos + (0 if arr[n].is_dir else FILE_BYTES) > end:
            free(arr)
            raise ValueError("corrupt snapshot row: truncated entry")
        if not arr[n].is_dir:
            arr[n].size = <int64_t>get_le(p + pos, 8)
            arr[n].mtime = <int64_t>get_le(p + pos + 8, 8)
            arr[n].ctime = <int64_t>get_le(p + pos + 16, 8)
            arr[n].ino = get_le(p + pos + 24, 8)
            arr[n].hash = p + pos + 32
            pos += FILE_BYTES
        n += 1
    out[0] = arr
    return n


cdef int put_entry(Buf *b, const char *name, int nlen, int is_dir, int racy, int64_t size,
                   int64_t mtime, int64_t ctime, uint64_t ino, const char *digest) except -1:
    cdef char head[3]
    cdef char body[FILE_BYTES]
    if nlen > 0xFFFF:
        raise ValueError("a name in the snapshot is at most 65535 bytes")
    put_le(head, nlen, 2)
    head[2] = F_DIR if is_dir else (F_RACY if racy else 0)
    buf_put(b, head, 3)
    buf_put(b, name, nlen)
    if not is_dir:
        b.nfiles += 1
        put_le(body, <uint64_t>size, 8)
        put_le(body + 8, <uint64_t>mtime, 8)
        put_le(body + 16, <uint64_t>ctime, 8)
        put_le(body + 24, ino, 8)
        memcpy(body + 32, digest, 16)
        buf_put(b, body, FILE_BYTES)
    return 0


cdef inline int put_old(Buf *b, const Old *o) except -1:
    return put_entry(b, o.name, o.nlen, o.is_dir, o.racy, o.size, o.mtime, o.ctime, o.ino,
                     o.hash)


cdef inline int64_t ns(timespec t) noexcept nogil:
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


def encode_entries(entries):
    """Pack snapshot entries (already in key order) into one row's blob."""
    cdef Buf b
    cdef bytes name, digest
    cdef char version = BLOB_VERSION
    b.data = NULL
    b.len = b.cap = b.nfiles = 0
    try:
        buf_put(&b, &version, 1)
        for e in entries:
            name = e.name.encode()
            if e.is_dir:
                put_entry(&b, name, len(name), 1, 0, 0, 0, 0, 0, NULL)
            else:
                digest = bytes(e.hash)
                if len(digest) != 16:
                    raise ValueError("a snapshot hash has 16 bytes")
                put_entry(&b, name, len(name), 0, e.racy, e.size, e.mtime_ns, e.ctime_ns,
                          e.ino, digest)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


def decode_entries(blob):
    """Unpack a row's blob into its entries, in key order."""
    cdef Old *arr = NULL
    cdef int n, i
    cdef list out = []
    if not blob:
        return out
    n = parse_blob(bytes(blob), &arr)
    try:
        for i in range(n):
            name = arr[i].name[:arr[i].nlen].decode()
            if arr[i].is_dir:
                out.append(SnapEntry(name, True))
            else:
                out.append(SnapEntry(name, False, arr[i].size, arr[i].mtime, arr[i].ctime,
                                     arr[i].ino, arr[i].hash[:16], bool(arr[i].racy)))
        return out
    finally:
        free(arr)


cdef inline bint gone(int err) noexcept nogil:
    return err == ENOENT or err == ENOTDIR or err == ELOOP


cdef str errtext(int err):
    return strerror(err).decode("utf-8", "replace")


cdef str child(str rel, const char *name, int nlen):
    """The relative path of `name` in the directory `rel`."""
    return (rel + "/" if rel else "") + name[:nlen].decode()


cdef class _Walker:
    """One walk: an explicit stack of directories, each merged with its snapshot row."""

    cdef object hooks
    cdef object totals
    cdef bytes root
    cdef str root_str
    cdef int64_t settle_from, racy_from
    cdef int64_t max_size
    cdef int max_depth
    cdef bint follow, minimal
    cdef tuple scope
    cdef char *rbuf
    # counters, copied into ScanTotals at the end
    cdef long files, dirs, filtered, deferred, hashed, errors
    cdef int64_t bytes_hashed

    def __cinit__(self):
        self.rbuf = <char *>malloc(READ_SIZE)
        if self.rbuf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.rbuf)

    def __init__(self, params, hooks):
        self.hooks = hooks
        self.root_str = params.root
        self.root = params.root.encode()
        self.settle_from = params.start_ns - params.settle_ns
        self.racy_from = params.start_ns - RACY_NS
        self.max_depth = -1 if params.max_depth is None else params.max_depth
        self.max_size = -1 if params.max_size is None else params.max_size
        self.follow = params.follow_symlinks
        self.minimal = params.minimal
        self.scope = tuple(params.scope)

    def run(self):
        # a stack entry: relative path, depth, remaining scope, reached through a
        # followed symlink, (dev, inode) of the ancestors, virtual (scoped, not on disk)
        stack = [("", 0, self.scope, False, (), False)]
        while stack:
            rel, depth, scope, via_link, chain, virtual = stack.pop()
            self._dir(stack, rel, depth, scope, via_link, chain, virtual)
        return ScanTotals(self.files, self.dirs, self.filtered, self.deferred, self.hashed,
                          self.bytes_hashed, self.errors)

    cdef void _warn(self, str rel, str message) except *:
        self.errors += 1
        self.hooks.warn(rel, message)

    cdef _dir(self, list stack, str rel, int depth, tuple scope, bint via_link, tuple chain,
              bint virtual):
        cdef str key = rel + "/" if rel else ""
        cdef bytes path = self.root + b"/" + rel.encode() if rel else self.root
        cdef int fd = -1
        cdef int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
        cdef Ent *ents = NULL
        cdef int n = 0, i, err
        cdef stat dst
        if not virtual:
            if rel and not via_link:
                flags |= O_NOFOLLOW
            fd = open(path, flags)
            if fd < 0:
                err = errno
                if not rel:
                    raise OSError(err, errtext(err), self.root_str)
                if gone(err):
                    changes = []
                    self._drop(key, changes)
                    self.hooks.emit(DirResult(key, None, 0, changes, [key]))
                else:
                    self._warn(rel, f"cannot open directory: {errtext(err)}")
                return
        try:
            if fd >= 0:
                if self.follow and fstat(fd, &dst) == 0:
                    chain = chain + ((dst.st_dev, dst.st_ino),)
                n = self._list(fd, rel, chain, &ents)
                if n < 0:
                    return
                self.dirs += 1
            self._merge(stack, fd, rel, key, depth, scope, via_link, chain, ents, n)
        finally:
            for i in range(n):
                free(ents[i].name)
            free(ents)
            if fd >= 0:
                close(fd)

    cdef int _list(self, int fd, str rel, tuple chain, Ent **out) except -2:
        """Lists one directory into `out` (sorted by key, filters applied); -1 if unreadable."""
        cdef int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        cdef DIR *d
        cdef dirent *de
        cdef Ent *ents = NULL
        cdef Ent *e
        cdef int n = 0, cap = 0, i, err
        cdef const char *nm
        cdef size_t ln
        if dfd < 0:
            err = errno
            self._warn(rel, f"cannot list directory: {errtext(err)}")
            return -1
        d = fdopendir(dfd)
        if d == NULL:
            close(dfd)
            self._warn(rel, "cannot list directory")
            return -1
        try:
            while True:
                wq_clear_errno()
                de = readdir(d)
                if de == NULL:
                    if errno != 0:
                        err = errno
                        for i in range(n):
                            free(ents[i].name)
                        free(ents)
                        self._warn(rel, f"cannot list directory: {errtext(err)}")
                        return -1
                    break
                nm = de.d_name
                if nm[0] == 46 and (nm[1] == 0 or (nm[1] == 46 and nm[2] == 0)):
                    continue
                ln = strlen(nm)
                try:
                    nm[:ln].decode("utf-8")
                except UnicodeDecodeError:
                    self._warn(rel, "skipped a name that is not valid UTF-8: "
                               + repr(_os.fsdecode(nm[:ln])))
                    continue
                if n == cap:
                    cap = cap * 2 if cap else 32
                    ents = <Ent *>realloc(ents, cap * sizeof(Ent))
                    if ents == NULL:
                        raise MemoryError()
                e = &ents[n]
                e.name = <char *>malloc(ln + 1)
                memcpy(e.name, nm, ln + 1)
                e.nlen = <int>ln
                e.linked = 0
                e.has_st = 0
                e.keep = SKIP
                n += 1
                if de.d_type == DT_DIR:
                    e.kind = K_DIR
                elif de.d_type == DT_REG:
                    e.kind = K_FILE
                elif de.d_type == DT_LNK:
                    self._link(fd, rel, e, chain)
                else:
                    if de.d_type == DT_UNKNOWN and fstatat(fd, e.name, &e.st,
                                                           AT_SYMLINK_NOFOLLOW) == 0:
                        if S_ISDIR(e.st.st_mode):
                            e.kind = K_DIR
                        elif S_ISREG(e.st.st_mode):
                            e.kind = K_FILE
                            e.has_st = 1
                        elif (e.st.st_mode & 0o170000) == 0o120000:
                            self._link(fd, rel, e, chain)
                        else:
                            e.kind = K_OTHER
                    else:
                        e.kind = K_OTHER
        finally:
            closedir(d)
        if n:
            qsort(ents, n, sizeof(Ent), ent_cmp)
        names = [ents[i].name[:ents[i].nlen].decode() for i in range(n)]
        keep = self.hooks.enter(rel, names, [ents[i].kind == K_DIR for i in range(n)])
        for i in range(n):
            if keep[i] and ents[i].kind != K_OTHER:
                ents[i].keep = MERGE
            else:
                self.filtered += 1
        out[0] = ents
        return n

    cdef void _link(self, int fd, str rel, Ent *e, tuple chain) except *:
        """Classify a symlink: followed to a file or directory inside the root, or skipped."""
        cdef char *real
        cdef bytes full
        e.kind = K_OTHER
        if not self.follow:
            return
        full = self.root + b"/" + (rel.encode() + b"/" if rel else b"") + e.name[:e.nlen]
        real = realpath(full, NULL)
        if real == NULL:
            return  # dangling or a loop
        try:
            if not self._inside(real):
                self.hooks.warn(child(rel, e.name, e.nlen),
                                "symlink leads outside the watch root; skipped")
                return
            if fstatat(-100, real, &e.st, 0) != 0:  # AT_FDCWD
                return
        finally:
            free(real)
        if S_ISDIR(e.st.st_mode):
            if (e.st.st_dev, e.st.st_ino) in chain:
                return  # a link to one of its own ancestors
            e.kind = K_DIR
        elif S_ISREG(e.st.st_mode):
            e.kind = K_FILE
        else:
            return
        e.linked = 1
        e.has_st = 1

    cdef bint _inside(self, const char *real):
        """Whether a resolved path is the root or lies below it."""
        cdef size_t rl = len(self.root)
        if rl == 1:
            return real[0] == SLASH
        return memcmp(real, <const char *>self.root, rl) == 0 and (real[rl] == 0
                                                                    or real[rl] == SLASH) \
            if strlen(real) >= rl else False

    cdef _merge(self, list stack, int fd, str rel, str key, int depth, tuple scope,
                bint via_link, tuple chain, Ent *ents, int n):
        """Merge one directory's listing with its snapshot row; emit what changed."""
        cdef Old *olds = NULL
        cdef int nold = 0, i = 0, j = 0, c, outcome, nfiles = 0, err
        cdef bint files_ok = self.max_depth < 0 or depth + 1 <= self.max_depth
        cdef bint dirs_ok = self.max_depth < 0 or depth + 2 <= self.max_depth
        cdef bint dirty = False, same
        cdef bytes sname = b""
        cdef int nscope = len(scope)
        cdef Ent *e
        cdef Old *o
        cdef Buf out
        cdef char digest[16]
        cdef list changes = []
        cdef list removed = []
        cdef list children = []
        cdef char version = BLOB_VERSION
        blob = self.hooks.load(key)
        out.data = NULL
        out.len = out.cap = out.nfiles = 0
        if nscope:
            sname = scope[0].encode()
        try:
            if blob:
                nold = parse_blob(blob, &olds)
            # mark the listed entries that take part in the merge, stat'ing files
            for i in range(n):
                e = &ents[i]
                if e.keep == SKIP:
                    continue
                if nscope and not (e.nlen == len(sname)
                                   and memcmp(e.name, <const char *>sname, e.nlen) == 0
                                   and (nscope == 1 or e.kind == K_DIR)):
                    e.keep = OUT_OF_SCOPE
                    continue
                if e.kind == K_DIR:
                    if not dirs_ok:
                        e.keep = SKIP
                        self.filtered += 1
                    continue
                if not files_ok:
                    e.keep = SKIP
                    self.filtered += 1
                    continue
                if not e.has_st:
                    if fstatat(fd, e.name, &e.st, AT_SYMLINK_NOFOLLOW) != 0:
                        err = errno
                        if gone(err):
                            e.keep = SKIP
                        else:
                            e.keep = NO_STAT
                            self._warn(child(rel, e.name, e.nlen),
                                       f"cannot stat: {errtext(err)}")
                        continue
                    e.has_st = 1
                if not S_ISREG(e.st.st_mode) or (self.max_size >= 0
                                                  and e.st.st_size > self.max_size):
                    e.keep = SKIP
                    self.filtered += 1
                    continue
                self.files += 1
            buf_put(&out, &version, 1)
            i = j = 0
            while i < n or j < nold:
                # skip listed entries that are not in the merge
                if i < n and ents[i].keep == SKIP:
                    i += 1
                    continue
                if i < n and j < nold:
                    c = key_cmp(ents[i].name, ents[i].nlen, ents[i].kind == K_DIR,
                                olds[j].name, olds[j].nlen, olds[j].is_dir)
                elif i < n:
                    c = -1
                else:
                    c = 1
                if c > 0:
                    # only in the snapshot
                    o = &olds[j]
                    j += 1
                    if nscope and not (o.nlen == len(sname)
                                       and memcmp(o.name, <const char *>sname, o.nlen) == 0
                                       and (nscope == 1 or o.is_dir)):
                        put_old(&out, o)
                        continue
                    if nscope >= 2:
                        put_old(&out, o)  # the scoped ancestor is missing: look below it only
                        children.append((o.name[:o.nlen].decode(), False, True))
                        continue
                    dirty = True
                    if o.is_dir:
                        sub = key + o.name[:o.nlen].decode() + "/"
                        self._drop(sub, changes)
                        removed.append(sub)
                    else:
                        changes.append(Change("delete", key + o.name[:o.nlen].decode(),
                                              o.size, o.mtime, o.ino, o.hash[:16], None))
                    continue
                e = &ents[i]
                i += 1
                o = NULL
                if c == 0:
                    o = &olds[j]
                    j += 1
                if e.keep != MERGE:
                    if o != NULL:
                        put_old(&out, o)
                    continue
                if e.kind == K_DIR:
                    if o == NULL:
                        dirty = True
                    put_entry(&out, e.name, e.nlen, 1, 0, 0, 0, 0, 0, NULL)
                    children.append((e.name[:e.nlen].decode(), e.linked or via_link, False))
                    continue
                if o != NULL and not o.racy and o.size == e.st.st_size \
                        and o.mtime == ns(e.st.st_mtim) and (
                            self.minimal or (o.ctime == ns(e.st.st_ctim)
                                             and o.ino == e.st.st_ino)):
                    put_old(&out, o)
                    continue
                outcome = self._hash(fd, rel, e, digest)
                if outcome == H_OK:
                    dirty = True
                    put_entry(&out, e.name, e.nlen, 0, ns(e.st.st_mtim) > self.racy_from,
                              e.st.st_size, ns(e.st.st_mtim), ns(e.st.st_ctim), e.st.st_ino,
                              digest)
                    if o == NULL:
                        changes.append(Change("ingest", key + e.name[:e.nlen].decode(),
                                              e.st.st_size, ns(e.st.st_mtim), e.st.st_ino,
                                              digest[:16], None))
                    elif o.size != e.st.st_size or memcmp(o.hash, digest, 16) != 0:
                        changes.append(Change("update", key + e.name[:e.nlen].decode(),
                                              e.st.st_size, ns(e.st.st_mtim), e.st.st_ino,
                                              digest[:16], o.hash[:16]))
                elif outcome == H_VANISHED:
                    if o != NULL:
                        dirty = True
                        changes.append(Change("delete", key + o.name[:o.nlen].decode(),
                                              o.size, o.mtime, o.ino, o.hash[:16], None))
                elif o != NULL:
                    put_old(&out, o)  # deferred or unreadable: the snapshot keeps what it had
            if dirty or changes or removed:
                new_blob = PyBytes_FromStringAndSize(out.data, out.len) if dirty else None
                self.hooks.emit(DirResult(key, new_blob, out.nfiles, changes, removed))
        finally:
            free(olds)
            free(out.data)
        rest = scope[1:]
        for name, linked, virtual in reversed(children):
            stack.append((key + name, depth + 1, rest, linked, chain, virtual))

    cdef int _hash(self, int fd, str rel, Ent *e, char *digest) except -1:
        """XXH3-128 of one file into `digest`, or why there is none."""
        cdef int f, err
        cdef stat before, after
        cdef ssize_t got
        cdef int64_t total = 0
        cdef int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        if ns(e.st.st_mtim) > self.settle_from:
            self.deferred += 1
            return H_DEFERRED
        if not e.linked:
            flags |= O_NOFOLLOW
        f = openat(fd, e.name, flags)
        if f < 0:
            err = errno
            if gone(err):
                return H_VANISHED
            self._warn(child(rel, e.name, e.nlen),
                       f"cannot read: {errtext(err)}")
            return H_FAILED
        h = _xxhash.xxh3_128()
        view = memoryview(<char[:READ_SIZE]>self.rbuf)
        try:
            if fstat(f, &before) != 0 or not S_ISREG(before.st_mode) \
                    or before.st_ino != e.st.st_ino:
                self.deferred += 1
                return H_DEFERRED
            while True:
                with nogil:
                    got = read(f, self.rbuf, READ_SIZE)
                if got < 0:
                    err = errno
                    self._warn(child(rel, e.name, e.nlen),
                               f"cannot read: {errtext(err)}")
                    return H_FAILED
                if got == 0:
                    break
                h.update(view[:got])
                total += got
            fstat(f, &after)
        finally:
            close(f)
        self.hashed += 1
        self.bytes_hashed += total
        if total != e.st.st_size or after.st_size != e.st.st_size \
                or ns(after.st_mtim) != ns(e.st.st_mtim):
            self.deferred += 1
            return H_DEFERRED
        d = h.digest()
        memcpy(digest, <const char *>d, 16)
        return H_OK

    cdef _drop(self, str key, list changes):
        """Deletes for every file recorded at or below the snapshot key `key`."""
        cdef Old *olds = NULL
        cdef int n, i
        for row_key, blob in self.hooks.subtree(key):
            n = parse_blob(blob, &olds)
            try:
                for i in range(n):
                    if not olds[i].is_dir:
                        changes.append(Change("delete",
                                              row_key + olds[i].name[:olds[i].nlen].decode(),
                                              olds[i].size, olds[i].mtime, olds[i].ino,
                                              olds[i].hash[:16], None))
            finally:
                free(olds)
                olds = NULL


def walk(params, hooks):
    """Walk the tree under `params.root` (or its `scope`), emitting each changed directory."""
    return _Walker(params, hooks).run()
