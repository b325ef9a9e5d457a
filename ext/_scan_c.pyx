# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""Compiled scanner: walks a tree directory by directory and diffs it with the snapshot.

Twin of `wqscan/_scan_py.py` (same names, same behaviour, same blob layout).

Worker threads (`params.threads`) take directories from a heap ordered by key,
open them, read them with getdents64, apply the filters, stat the files and, on a
first scan, hash them; all in C without the GIL. The calling thread takes the
directories in key order, which is the order of the snapshot rows, merges each
listing with its row and hands Python only what changed. A directory waited for
and not yet started is listed by the calling thread itself, and workers stop
getting ahead once a budget of listed entries is reached, so memory stays
bounded by the directories in flight, not by the tree.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memchr, strchr, strlen
from libc.errno cimport errno, ENOENT, ENOTDIR, ELOOP, ENOMEM, EAGAIN
from posix.resource cimport RLIMIT_NOFILE, getrlimit, rlimit
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import bisect as _bisect
import os as _os
import stat as _stat

import xxhash as _xxhash
import xxhash._xxhash as _xxhash_c

from wqscan.records import (BLOB_VERSION, RACY_NS, Change, DirResult,
                            ScanTotals, SnapEntry)
from wqscan.filters import Rule

__all__ = ["walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules"]


cdef extern from "wq_match.h" nogil:
    ctypedef struct wq_rule:
        const char *glob
        int len
        unsigned char negate, dir_only, anchored, literal
    int wq_match(const char *glob, size_t glen, const char *text, size_t tlen)
    int wq_parse_rule(const char *s, size_t n, wq_rule *r)
    int wq_last(const wq_rule *rules, int count, const char *name, size_t nlen,
                const char *path, size_t plen, int is_dir)
    int wq_valid_utf8(const char *s, size_t n)

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
    int S_ISLNK(unsigned int m)

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    int O_RDONLY, O_DIRECTORY, O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_PATH
    int AT_SYMLINK_NOFOLLOW, AT_FDCWD

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t n)
    long syscall(long number, ...)

cdef extern from "<sys/syscall.h>" nogil:
    long SYS_getdents64

cdef extern from "<stdlib.h>" nogil:
    char *realpath(const char *path, char *resolved)
    void qsort_r(void *base, size_t nmemb, size_t size,
                 int (*compar)(const void *, const void *, void *) noexcept nogil, void *arg)

cdef extern from "<string.h>" nogil:
    char *strerror(int errnum)

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_NOW, RTLD_NOLOAD

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_create(pthread_t *t, void *attr, void *(*fn)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t t, void **ret)
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const timespec *t)
    int pthread_cond_broadcast(pthread_cond_t *c)
    pthread_t pthread_self()
    int pthread_equal(pthread_t a, pthread_t b)

cdef extern from *:
    """
    #include <time.h>
    static long long wq_clock_ns(int monotonic) {
        struct timespec t;
        clock_gettime(monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME, &t);
        return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    }
    static void wq_add_bytes(long long *p, long long n) {
        __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
    }
    static long long wq_load_bytes(long long *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static int wq_take_fd(int *held, int most) {
        if (__atomic_add_fetch(held, 1, __ATOMIC_RELAXED) <= most) return 1;
        __atomic_sub_fetch(held, 1, __ATOMIC_RELAXED);
        return 0;
    }
    static void wq_give_fd(int *held) { __atomic_sub_fetch(held, 1, __ATOMIC_RELAXED); }
    """
    long long wq_clock_ns(int monotonic) nogil
    void wq_add_bytes(long long *p, long long n) nogil
    long long wq_load_bytes(long long *p) nogil
    int wq_take_fd(int *held, int most) nogil
    void wq_give_fd(int *held) nogil

cdef extern from *:
    """
    #include <errno.h>
    #include <dirent.h>
    static void wq_clear_errno(void) { errno = 0; }
    struct wq_dirent64 {
        unsigned long long d_ino; long long d_off; unsigned short d_reclen;
        unsigned char d_type; char d_name[];
    };
    typedef struct { unsigned long long low64, high64; } wq_h128;
    typedef void *(*wq_create_fn)(void);
    typedef int (*wq_free_fn)(void *);
    typedef int (*wq_reset_fn)(void *);
    typedef int (*wq_update_fn)(void *, const void *, size_t);
    typedef wq_h128 (*wq_digest_fn)(const void *);
    static wq_create_fn wq_xxh_create; static wq_free_fn wq_xxh_free;
    static wq_reset_fn wq_xxh_reset; static wq_update_fn wq_xxh_update;
    static wq_digest_fn wq_xxh_digest;
    """
    void wq_clear_errno() nogil
    cdef struct wq_dirent64:
        unsigned short d_reclen
        unsigned char d_type
        char d_name[1]
    ctypedef struct wq_h128:
        unsigned long long low64
        unsigned long long high64
    ctypedef void *(*wq_create_fn)() noexcept nogil
    ctypedef int (*wq_free_fn)(void *) noexcept nogil
    ctypedef int (*wq_reset_fn)(void *) noexcept nogil
    ctypedef int (*wq_update_fn)(void *, const void *, size_t) noexcept nogil
    ctypedef wq_h128 (*wq_digest_fn)(const void *) noexcept nogil
    wq_create_fn wq_xxh_create
    wq_free_fn wq_xxh_free
    wq_reset_fn wq_xxh_reset
    wq_update_fn wq_xxh_update
    wq_digest_fn wq_xxh_digest
    unsigned char DT_DIR, DT_REG, DT_LNK, DT_UNKNOWN


cdef enum:
    READ_SIZE = 1 << 20
    DENTS_SIZE = 1 << 16
    F_RACY = 2
    FILE_BYTES = 48  # size, mtime_ns, ctime_ns, inode (8 each) + XXH3-128 (16)
    SLASH = 47
    AHEAD_BUDGET = 1 << 16  # listed entries the workers may keep ahead of the merge
    GITIGNORE_MAX = 1 << 20

cdef enum:  # kinds of a listed entry
    K_FILE = 0
    K_DIR = 1
    K_OTHER = 3

cdef enum:  # Ent.keep
    SKIP = 0          # filtered out, or a vanished file
    MERGE = 1         # takes part in the merge
    OUT_OF_SCOPE = 2  # outside --path: the snapshot entry stays as it is
    NO_STAT = 3       # not stat'able now: the snapshot entry stays as it is

cdef enum:  # outcomes of hashing
    H_NONE = 0
    H_OK = 1
    H_DEFERRED = 2
    H_VANISHED = 3
    H_FAILED = 4

cdef enum:  # job states
    PENDING = 0
    CLAIMED = 1
    DONE = 2

cdef enum:  # warnings a worker records for the calling thread to report
    W_UTF8 = 1      # text: the raw name
    W_OUTSIDE = 2   # text: the link's relative path
    W_STAT = 3      # text: relative path, err
    W_READ = 4
    W_OPEN = 5      # text: empty (the directory itself)
    W_LIST = 6
    W_REPLACED = 7  # text: empty; the directory opened is not the one listed


# -- hashing through the xxhash package's own C symbols --------------------------------

cdef bint HAVE_XXH = False


cdef void _bind_xxhash() noexcept:
    """Find XXH3-128's streaming functions in the loaded xxhash extension, so workers
    hash without the GIL; without them the calling thread hashes through Python."""
    global HAVE_XXH, wq_xxh_create, wq_xxh_free, wq_xxh_reset, wq_xxh_update, wq_xxh_digest
    path = _os.fsencode(_xxhash_c.__file__)
    cdef void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        return
    wq_xxh_create = <wq_create_fn>dlsym(h, "XXH3_createState")
    wq_xxh_free = <wq_free_fn>dlsym(h, "XXH3_freeState")
    wq_xxh_reset = <wq_reset_fn>dlsym(h, "XXH3_128bits_reset")
    wq_xxh_update = <wq_update_fn>dlsym(h, "XXH3_128bits_update")
    wq_xxh_digest = <wq_digest_fn>dlsym(h, "XXH3_128bits_digest")
    HAVE_XXH = (wq_xxh_create != NULL and wq_xxh_free != NULL and wq_xxh_reset != NULL
                and wq_xxh_update != NULL and wq_xxh_digest != NULL)


_bind_xxhash()


cdef inline void put_be(char *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = <char>(v & 0xff)
        v >>= 8


# -- records of one walk ----------------------------------------------------------------

cdef struct Ent:
    int name          # offset of the name in the job's arena
    int nlen
    uint8_t kind
    uint8_t linked    # a followed symlink; the stat data are its target's
    uint8_t keep
    uint8_t has_st
    uint8_t hstate
    int herr
    int64_t nread     # bytes read by hashing
    int64_t size
    int64_t mtime
    int64_t ctime
    uint64_t ino
    uint64_t dev
    char hash[16]


cdef struct GiNode:  # the .gitignore rules in force in a directory (shared, immutable)
    GiNode *parent
    GiNode *next_alloc
    int baselen       # length of the key of the .gitignore's directory
    wq_rule *rules
    int count
    char *text        # owns the globs


cdef struct Warn:
    Warn *next
    int kind
    int err
    int len
    char text[1]      # allocated longer


cdef struct Job:
    Job *reg_prev
    Job *reg_next
    int heap_idx
    uint8_t state
    uint8_t via_link
    uint8_t virtual
    uint8_t has_git
    uint8_t has_id    # id_dev/id_ino: what the parent's listing saw at this path
    uint64_t id_dev
    uint64_t id_ino
    int fd            # the directory, opened by the parent's listing relative to its fd; or -1
    char *rel         # relative path without the trailing '/'
    int rellen
    int depth
    int scope_idx     # index of the next --path component, or -1
    uint64_t *chain   # (dev, inode) pairs of the ancestors (with follow_symlinks)
    int nchain
    GiNode *gi
    int inc_best
    # results
    int err           # errno when the directory could not be opened or listed
    Ent *ents
    int nents
    char *arena
    Job **children
    int nchildren
    Warn *warns
    Warn *warns_tail
    long files, filtered, deferred, hashed, nerrors
    int64_t bytes_hashed


cdef struct Shared:
    # configuration
    const char *root
    int rootlen
    int rootfd
    int held_fds      # Job.fd open now (atomic)...
    int max_held_fds  # ...and at most; beyond, a directory is opened by its path
    int64_t settle_from
    int64_t racy_from
    int64_t max_size
    int max_depth
    bint follow
    bint use_gitignore
    bint eager_hash
    wq_rule *ignore
    int nignore
    wq_rule *incl
    int nincl
    char **scope
    int *scope_len
    int nscope
    # threads and jobs
    pthread_mutex_t mu
    pthread_cond_t work_cv
    pthread_cond_t done_cv
    Job **heap
    int nheap
    int capheap
    Job registry      # sentinel of the list of live jobs
    GiNode *gitignores
    long ahead
    int idle          # workers waiting for work
    Job *awaited      # the job the calling thread is waiting for
    bint stop
    bint oom
    long long read_bytes  # read by hash_file so far, on any thread (atomic): progress
    long long progress_ns  # between two progress reports
    long long next_progress  # monotonic time of the next one (the calling thread's)
    pthread_t main_thread  # the calling thread, which alone may report
    void *walker  # the _Walker, whose _tick reports


cdef inline int64_t ns(timespec t) noexcept nogil:
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline void ent_stat(Ent *e, stat *st) noexcept nogil:
    e.has_st = 1
    e.size = st.st_size
    e.mtime = ns(st.st_mtim)
    e.ctime = ns(st.st_ctim)
    e.ino = st.st_ino
    e.dev = st.st_dev


cdef inline bint gone(int err) noexcept nogil:
    return err == ENOENT or err == ENOTDIR or err == ELOOP


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


cdef int ent_cmp(const void *x, const void *y, void *arena) noexcept nogil:
    cdef const Ent *a = <const Ent *>x
    cdef const Ent *b = <const Ent *>y
    cdef const char *base = <const char *>arena
    return key_cmp(base + a.name, a.nlen, a.kind == K_DIR, base + b.name, b.nlen,
                   b.kind == K_DIR)


cdef inline int job_cmp(Job *a, Job *b) noexcept nogil:
    return key_cmp(a.rel, a.rellen, 1, b.rel, b.rellen, 1)


# -- the heap of directories waiting to be listed (guarded by Shared.mu) ----------------

cdef inline void heap_swap(Shared *s, int i, int j) noexcept nogil:
    cdef Job *t = s.heap[i]
    s.heap[i] = s.heap[j]
    s.heap[j] = t
    s.heap[i].heap_idx = i
    s.heap[j].heap_idx = j


cdef void heap_up(Shared *s, int i) noexcept nogil:
    cdef int p
    while i > 0:
        p = (i - 1) // 2
        if job_cmp(s.heap[i], s.heap[p]) >= 0:
            break
        heap_swap(s, i, p)
        i = p


cdef void heap_down(Shared *s, int i) noexcept nogil:
    cdef int l, r, m
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < s.nheap and job_cmp(s.heap[l], s.heap[m]) < 0:
            m = l
        if r < s.nheap and job_cmp(s.heap[r], s.heap[m]) < 0:
            m = r
        if m == i:
            return
        heap_swap(s, i, m)
        i = m


cdef int heap_push(Shared *s, Job *j) noexcept nogil:
    cdef Job **h
    if s.nheap == s.capheap:
        h = <Job **>realloc(s.heap, (s.capheap * 2 + 64) * sizeof(Job *))
        if h == NULL:
            return -1
        s.heap = h
        s.capheap = s.capheap * 2 + 64
    s.heap[s.nheap] = j
    j.heap_idx = s.nheap
    s.nheap += 1
    heap_up(s, s.nheap - 1)
    return 0


cdef void heap_remove(Shared *s, Job *j) noexcept nogil:
    cdef int i = j.heap_idx
    if i < 0:
        return
    s.nheap -= 1
    if i != s.nheap:
        s.heap[i] = s.heap[s.nheap]
        s.heap[i].heap_idx = i
        heap_down(s, i)
        heap_up(s, i)
    j.heap_idx = -1


# -- jobs --------------------------------------------------------------------------------

cdef Job *job_new(Shared *s, const char *rel, int rellen) noexcept nogil:
    """A directory to visit, linked into the registry (under Shared.mu or single-threaded)."""
    cdef Job *j = <Job *>calloc(1, sizeof(Job))
    if j == NULL:
        return NULL
    j.rel = <char *>malloc(rellen + 1)
    if j.rel == NULL:
        free(j)
        return NULL
    memcpy(j.rel, rel, rellen)
    j.rel[rellen] = 0
    j.rellen = rellen
    j.heap_idx = -1
    j.fd = -1
    j.scope_idx = -1
    j.inc_best = -1
    j.reg_next = s.registry.reg_next
    j.reg_prev = &s.registry
    s.registry.reg_next.reg_prev = j
    s.registry.reg_next = j
    return j


cdef void job_clear(Job *j) noexcept nogil:
    """Free what a job's listing holds."""
    cdef Warn *w
    cdef Warn *nxt
    free(j.ents)
    free(j.arena)
    free(j.children)
    j.ents = NULL
    j.arena = NULL
    j.children = NULL
    j.nents = j.nchildren = 0
    w = j.warns
    while w != NULL:
        nxt = w.next
        free(w)
        w = nxt
    j.warns = j.warns_tail = NULL


cdef void job_free(Shared *s, Job *j) noexcept nogil:
    if j.fd >= 0:  # never listed (the walk stopped)
        close(j.fd)
        wq_give_fd(&s.held_fds)
    j.reg_prev.reg_next = j.reg_next
    j.reg_next.reg_prev = j.reg_prev
    job_clear(j)
    free(j.chain)
    free(j.rel)
    free(j)


cdef void warn_add(Shared *s, Job *j, int kind, int err, const char *text,
                   int len) noexcept nogil:
    cdef Warn *w = <Warn *>malloc(sizeof(Warn) + len)
    if w == NULL:
        s.oom = True
        return
    w.next = NULL
    w.kind = kind
    w.err = err
    w.len = len
    memcpy(w.text, text, len)
    w.text[len] = 0
    if j.warns_tail == NULL:
        j.warns = w
    else:
        j.warns_tail.next = w
    j.warns_tail = w


cdef void warn_child(Shared *s, Job *j, int kind, int err, const char *name,
                     int nlen) noexcept nogil:
    """A warning about `name` in the job's directory, with its relative path as text."""
    cdef char *buf = <char *>malloc(j.rellen + nlen + 2)
    cdef int n = 0
    if buf == NULL:
        s.oom = True
        return
    if j.rellen:
        memcpy(buf, j.rel, j.rellen)
        buf[j.rellen] = b'/'
        n = j.rellen + 1
    memcpy(buf + n, name, nlen)
    warn_add(s, j, kind, err, buf, n + nlen)
    free(buf)


# -- .gitignore files --------------------------------------------------------------------

cdef GiNode *gitignore_load(Shared *s, int dirfd, GiNode *parent, int baselen) noexcept nogil:
    """The rules of the directory's .gitignore on top of `parent`, or `parent` if none."""
    cdef int fd = openat(dirfd, ".gitignore", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    cdef char *text
    cdef ssize_t got, total = 0
    if fd < 0:
        return parent
    text = <char *>malloc(GITIGNORE_MAX)
    if text == NULL:
        close(fd)
        s.oom = True
        return parent
    while total < GITIGNORE_MAX:
        got = read(fd, text + total, GITIGNORE_MAX - total)
        if got <= 0:
            break
        total += got
    close(fd)
    cdef GiNode *g = rules_from_text(text, total)
    if g == NULL:
        return parent
    g.parent = parent
    g.baselen = baselen
    pthread_mutex_lock(&s.mu)
    g.next_alloc = s.gitignores
    s.gitignores = g
    pthread_mutex_unlock(&s.mu)
    return g


cdef GiNode *rules_from_text(char *text, ssize_t total) noexcept nogil:
    """Parse the lines of `text` (which the node takes over); NULL when no rule results."""
    cdef int count = 0, cap = 16
    cdef wq_rule *rules = <wq_rule *>malloc(cap * sizeof(wq_rule))
    cdef wq_rule *grown
    cdef ssize_t start = 0, i
    cdef GiNode *g
    if rules == NULL:
        free(text)
        return NULL
    for i in range(total + 1):
        if i < total and text[i] != b'\n':
            continue
        if count == cap:
            cap *= 2
            grown = <wq_rule *>realloc(rules, cap * sizeof(wq_rule))
            if grown == NULL:
                break
            rules = grown
        if wq_parse_rule(text + start, <size_t>(i - start), &rules[count]):
            count += 1
        start = i + 1
    if count == 0:
        free(rules)
        free(text)
        return NULL
    g = <GiNode *>calloc(1, sizeof(GiNode))
    if g == NULL:
        free(rules)
        free(text)
        return NULL
    g.rules = rules
    g.count = count
    g.text = text
    return g


# -- listing one directory (workers, or the calling thread; never touches Python) -------

cdef inline bint passes(Shared *s, Job *j, GiNode *gi, const char *name, int nlen,
                        const char *path, int plen, bint is_dir) noexcept nogil:
    """The filters of filters.py: watch ignores, .gitignore chain, includes (files)."""
    cdef int k, best
    k = wq_last(s.ignore, s.nignore, name, nlen, path, plen, is_dir)
    if k >= 0 and not s.ignore[k].negate:
        return False
    while gi != NULL:
        k = wq_last(gi.rules, gi.count, name, nlen, path + gi.baselen, plen - gi.baselen, is_dir)
        if k >= 0:
            if not gi.rules[k].negate:
                return False
            break
        gi = gi.parent
    if not is_dir and s.nincl:
        best = wq_last(s.incl, s.nincl, name, nlen, path, plen, 0)
        if j.inc_best > best:
            best = j.inc_best
        return best >= 0 and not s.incl[best].negate
    return True


cdef bint inside_root(Shared *s, const char *real) noexcept nogil:
    cdef size_t rl = s.rootlen
    if rl == 1:
        return real[0] == SLASH
    return strlen(real) >= rl and memcmp(real, s.root, rl) == 0 and (real[rl] == 0
                                                                     or real[rl] == SLASH)


cdef int beneath_stat(Shared *s, const char *real, stat *st) noexcept nogil:
    """Stat `real` (a resolved path inside the root) by walking down from the root's
    descriptor one name at a time, following no symlink: what is found is inside the
    root even if a directory on the way was just swapped for a link. 0 on success."""
    cdef const char *p = real + s.rootlen
    cdef const char *slash
    cdef char name[256]
    cdef int fd = s.rootfd, nfd, ok = 0
    cdef size_t n
    while ok == 0 and p[0] != 0:
        while p[0] == SLASH:
            p += 1
        if p[0] == 0:
            break
        slash = strchr(p, SLASH)
        n = <size_t>(slash - p) if slash != NULL else strlen(p)
        if n >= sizeof(name):
            ok = -1
            break
        memcpy(name, p, n)
        name[n] = 0
        p += n
        nfd = openat(fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)
        if fd != s.rootfd:
            close(fd)
        fd = nfd
        if fd < 0 or fstat(fd, st) != 0 or S_ISLNK(st.st_mode):
            ok = -1
    if ok == 0:
        ok = fstat(fd, st)
    if fd >= 0 and fd != s.rootfd:
        close(fd)
    return ok


cdef void classify_link(Shared *s, Job *j, int dirfd, Ent *e, char *arena) noexcept nogil:
    """A symlink: followed to a file or directory inside the root, or skipped."""
    cdef char *full
    cdef char *real
    cdef int n
    cdef stat st
    cdef const char *name = arena + e.name
    cdef int i
    e.kind = K_OTHER
    if not s.follow:
        return
    full = <char *>malloc(s.rootlen + j.rellen + e.nlen + 3)
    if full == NULL:
        s.oom = True
        return
    memcpy(full, s.root, s.rootlen)
    n = s.rootlen
    if j.rellen:
        full[n] = b'/'
        memcpy(full + n + 1, j.rel, j.rellen)
        n += j.rellen + 1
    full[n] = b'/'
    memcpy(full + n + 1, name, e.nlen)
    full[n + 1 + e.nlen] = 0
    real = realpath(full, NULL)
    free(full)
    if real == NULL:
        return  # dangling or a loop
    if not inside_root(s, real):
        free(real)
        warn_child(s, j, W_OUTSIDE, 0, name, e.nlen)
        return
    n = beneath_stat(s, real, &st)
    free(real)
    if n != 0:
        return
    if S_ISDIR(st.st_mode):
        for i in range(0, j.nchain, 2):
            if j.chain[i] == st.st_dev and j.chain[i + 1] == st.st_ino:
                return  # a link to one of its own ancestors
        e.kind = K_DIR
    elif S_ISREG(st.st_mode):
        e.kind = K_FILE
    else:
        return
    e.linked = 1
    ent_stat(e, &st)


cdef int held_fd_budget() noexcept:
    """How many directories may wait open for their listing: a quarter of the descriptors
    the process may open (what else it holds stays well inside the rest), at most 4096."""
    cdef rlimit lim
    if getrlimit(RLIMIT_NOFILE, &lim) != 0:
        return 0
    return <int>max(0, min(<long long>lim.rlim_cur // 4 - 16, 4096))


cdef class _Walker


cdef void tick_while_hashing(Shared *s) noexcept nogil:
    """A big file read on the calling thread: report progress from within its loop."""
    if s.walker != NULL and wq_clock_ns(1) >= s.next_progress \
            and pthread_equal(pthread_self(), s.main_thread):
        with gil:
            (<_Walker>s.walker)._tick()


cdef int hash_file(Shared *s, int dirfd, const char *name, Ent *e, void *state,
                   char *rbuf) noexcept nogil:
    """XXH3-128 of one file into e.hash; returns the outcome (H_*), e.herr on failure."""
    cdef int f, flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
    cdef stat before, after
    cdef ssize_t got
    cdef int64_t total = 0
    cdef wq_h128 h
    if e.mtime > s.settle_from:
        return H_DEFERRED
    if not e.linked:
        flags |= O_NOFOLLOW
    f = openat(dirfd, name, flags)
    if f < 0:
        e.herr = errno
        return H_VANISHED if gone(e.herr) else H_FAILED
    if fstat(f, &before) != 0 or not S_ISREG(before.st_mode) or before.st_ino != e.ino:
        close(f)
        return H_DEFERRED
    wq_xxh_reset(state)
    while True:
        got = read(f, rbuf, READ_SIZE)
        if got < 0:
            e.herr = errno
            close(f)
            return H_FAILED
        if got == 0:
            break
        wq_xxh_update(state, rbuf, <size_t>got)
        total += got
        wq_add_bytes(&s.read_bytes, got)
        if total >= READ_SIZE:  # a big file: progress while it is read
            tick_while_hashing(s)
    fstat(f, &after)
    close(f)
    e.nread = total
    if total != e.size or after.st_size != e.size or ns(after.st_mtim) != e.mtime:
        return -H_DEFERRED  # read, but changing: deferred, and counted as hashed
    h = wq_xxh_digest(state)
    put_be(e.hash, h.high64)
    put_be(e.hash + 8, h.low64)
    return H_OK


cdef void list_dir(Shared *s, Job *j, void *xstate, char *rbuf, char *dents) noexcept nogil:
    """Open, read, filter and stat one directory into the job (workers and main alike)."""
    cdef int fd, flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
    cdef long got, off
    cdef wq_dirent64 *d
    cdef const char *nm
    cdef int nlen, n = 0, cap = 0, acap = 0, alen = 0, i, k, target_len = 0
    cdef Ent *ents = NULL
    cdef Ent *grown
    cdef Ent *e
    cdef char *arena = NULL
    cdef char *agrown
    cdef char *path = NULL
    cdef const char *target = NULL
    cdef stat st
    cdef bint has_gitignore = False, dirs_ok, files_ok, scoped_below
    cdef Job *c
    cdef GiNode *gi
    cdef int64_t limit
    if j.fd >= 0:
        fd, j.fd = j.fd, -1
        wq_give_fd(&s.held_fds)
    elif j.rellen == 0:
        fd = openat(s.rootfd, ".", flags)
    else:
        if not j.via_link:
            flags |= O_NOFOLLOW
        fd = openat(s.rootfd, j.rel, flags)
    if fd < 0:
        j.err = errno
        if not gone(j.err):
            warn_add(s, j, W_OPEN, j.err, b"", 0)
        return
    # The path was resolved again after the parent was listed: if an ancestor was swapped
    # for a symlink meanwhile, it led somewhere else. Only the directory listed is read.
    if j.has_id and (fstat(fd, &st) != 0 or <uint64_t>st.st_dev != j.id_dev
                     or <uint64_t>st.st_ino != j.id_ino):
        close(fd)
        j.err = EAGAIN
        warn_add(s, j, W_REPLACED, 0, b"", 0)
        return
    if s.follow and fstat(fd, &st) == 0:
        k = j.nchain
        j.chain = <uint64_t *>realloc(j.chain, (k + 2) * sizeof(uint64_t))
        if j.chain == NULL:
            s.oom = True
            close(fd)
            j.err = ENOMEM
            return
        j.chain[k] = st.st_dev
        j.chain[k + 1] = st.st_ino
        j.nchain = k + 2
    while True:
        got = syscall(SYS_getdents64, fd, dents, DENTS_SIZE)
        if got < 0:
            j.err = errno
            warn_add(s, j, W_LIST, j.err, b"", 0)
            close(fd)
            free(ents)
            free(arena)
            return
        if got == 0:
            break
        off = 0
        while off < got:
            d = <wq_dirent64 *>(dents + off)
            off += d.d_reclen
            nm = d.d_name
            if nm[0] == 46 and (nm[1] == 0 or (nm[1] == 46 and nm[2] == 0)):
                continue
            nlen = <int>strlen(nm)
            if not wq_valid_utf8(nm, nlen):
                warn_add(s, j, W_UTF8, 0, nm, nlen)
                continue
            if n == cap:
                cap = cap * 2 if cap else 32
                grown = <Ent *>realloc(ents, cap * sizeof(Ent))
                if grown == NULL:
                    s.oom = True
                    break
                ents = grown
            if alen + nlen + 1 > acap:
                acap = (acap * 2 if acap else 1024) + nlen + 1
                agrown = <char *>realloc(arena, acap)
                if agrown == NULL:
                    s.oom = True
                    break
                arena = agrown
            e = &ents[n]
            memcpy(arena + alen, nm, nlen + 1)
            e.name = alen
            e.nlen = nlen
            alen += nlen + 1
            e.linked = e.has_st = e.hstate = 0
            e.herr = 0
            e.keep = SKIP
            n += 1
            if d.d_type == DT_DIR:
                e.kind = K_DIR
            elif d.d_type == DT_REG:
                e.kind = K_FILE
            elif d.d_type == DT_LNK:
                classify_link(s, j, fd, e, arena)
            elif d.d_type == DT_UNKNOWN and fstatat(fd, arena + e.name, &st,
                                                    AT_SYMLINK_NOFOLLOW) == 0:
                if S_ISDIR(st.st_mode):
                    e.kind = K_DIR
                elif S_ISREG(st.st_mode):
                    e.kind = K_FILE
                elif S_ISLNK(st.st_mode):
                    classify_link(s, j, fd, e, arena)
                else:
                    e.kind = K_OTHER
            else:
                e.kind = K_OTHER
            if nlen == 4 and memcmp(nm, b".git", 4) == 0:
                j.has_git = 1
            elif nlen == 10 and memcmp(nm, b".gitignore", 10) == 0 and e.kind == K_FILE \
                    and not e.linked:
                has_gitignore = True
    if n:
        qsort_r(ents, n, sizeof(Ent), ent_cmp, arena)
    j.ents = ents
    j.nents = n
    j.arena = arena
    gi = j.gi
    if has_gitignore and s.use_gitignore:
        gi = gitignore_load(s, fd, j.gi, j.rellen + 1 if j.rellen else 0)
    j.gi = gi
    # filters, on the path relative to the root
    path = <char *>malloc(j.rellen + 2 + 256)
    if path == NULL:
        s.oom = True
        close(fd)
        return
    k = 0
    if j.rellen:
        memcpy(path, j.rel, j.rellen)
        path[j.rellen] = b'/'
        k = j.rellen + 1
    for i in range(n):
        e = &ents[i]
        memcpy(path + k, arena + e.name, e.nlen)
        if e.kind != K_OTHER and passes(s, j, gi, arena + e.name, e.nlen, path, k + e.nlen,
                                        e.kind == K_DIR):
            e.keep = MERGE
        else:
            j.filtered += 1
    # scope, depth, stat, size; then the subdirectories to visit
    files_ok = s.max_depth < 0 or j.depth + 1 <= s.max_depth
    dirs_ok = s.max_depth < 0 or j.depth + 2 <= s.max_depth
    if j.scope_idx >= 0 and j.scope_idx < s.nscope:
        target = s.scope[j.scope_idx]
        target_len = s.scope_len[j.scope_idx]
    scoped_below = target != NULL and j.scope_idx + 1 < s.nscope
    j.children = <Job **>malloc((n + 1) * sizeof(Job *))
    if j.children == NULL:
        s.oom = True
        free(path)
        close(fd)
        return
    for i in range(n):
        e = &ents[i]
        if e.keep != MERGE:
            continue
        if target != NULL and not (e.nlen == target_len
                                   and memcmp(arena + e.name, target, target_len) == 0):
            e.keep = OUT_OF_SCOPE
            continue
        if e.kind == K_DIR:
            e.keep = SKIP
            if not dirs_ok:
                j.filtered += 1
                continue
            memcpy(path + k, arena + e.name, e.nlen)
            c = job_new_locked(s, path, k + e.nlen)
            if c == NULL:
                s.oom = True
                continue
            c.depth = j.depth + 1
            c.via_link = e.linked or j.via_link
            c.has_id = 1
            # Opened from this directory, the child needs no identity check, and the kernel
            # resolves one name rather than the whole path from the root. Beyond the budget
            # of open descriptors, or if that fails, it is opened by its path later.
            if not e.linked and wq_take_fd(&s.held_fds, s.max_held_fds):
                c.fd = openat(fd, arena + e.name, O_RDONLY | O_DIRECTORY | O_CLOEXEC
                              | O_NOFOLLOW)
                if c.fd < 0:
                    wq_give_fd(&s.held_fds)
            if c.fd >= 0:
                c.has_id = 0
            elif e.linked:
                c.id_dev, c.id_ino = e.dev, e.ino
            elif fstatat(fd, arena + e.name, &st, AT_SYMLINK_NOFOLLOW) == 0 \
                    and S_ISDIR(st.st_mode):
                c.id_dev, c.id_ino = st.st_dev, st.st_ino
            else:
                c.id_dev = c.id_ino = 0  # no longer a directory: nothing will match
            c.gi = gi
            c.scope_idx = j.scope_idx + 1 if target != NULL else -1
            if s.nincl:
                c.inc_best = wq_last(s.incl, s.nincl, arena + e.name, e.nlen, path,
                                     k + e.nlen, 1)
                if j.inc_best > c.inc_best:
                    c.inc_best = j.inc_best
            if j.nchain:
                c.chain = <uint64_t *>malloc(j.nchain * sizeof(uint64_t))
                if c.chain != NULL:
                    memcpy(c.chain, j.chain, j.nchain * sizeof(uint64_t))
                    c.nchain = j.nchain
            j.children[j.nchildren] = c
            j.nchildren += 1
            continue
        if scoped_below:
            e.keep = OUT_OF_SCOPE  # --path goes below this name, which is not a directory
            continue
        if not files_ok:
            e.keep = SKIP
            j.filtered += 1
            continue
        if not e.has_st:
            if fstatat(fd, arena + e.name, &st, AT_SYMLINK_NOFOLLOW) != 0:
                e.herr = errno
                if gone(e.herr):
                    e.keep = SKIP
                else:
                    e.keep = NO_STAT
                    warn_child(s, j, W_STAT, e.herr, arena + e.name, e.nlen)
                continue
            if not S_ISREG(st.st_mode):
                e.keep = SKIP
                j.filtered += 1
                continue
            ent_stat(e, &st)
        if s.max_size >= 0 and e.size > s.max_size:
            e.keep = SKIP
            j.filtered += 1
            continue
        j.files += 1
    free(path)
    if s.eager_hash and xstate != NULL:
        for i in range(n):
            e = &ents[i]
            if e.keep == MERGE and e.kind != K_DIR:
                hash_into(s, j, fd, e, arena, xstate, rbuf)
    close(fd)


cdef void hash_into(Shared *s, Job *j, int fd, Ent *e, char *arena, void *xstate,
                    char *rbuf) noexcept nogil:
    """Hash one listed file, recording the outcome and the counters in the job."""
    cdef int r = hash_file(s, fd, arena + e.name, e, xstate, rbuf)
    if r == -H_DEFERRED:
        j.hashed += 1
        j.bytes_hashed += e.nread
        j.deferred += 1
        e.hstate = H_DEFERRED
        return
    if r == H_OK:
        j.hashed += 1
        j.bytes_hashed += e.nread
    elif r == H_DEFERRED:
        j.deferred += 1
    elif r == H_FAILED:
        warn_child(s, j, W_READ, e.herr, arena + e.name, e.nlen)
    e.hstate = r


cdef void job_done(Shared *s, Job *j) noexcept nogil:
    """Publish a listed job (under Shared.mu): queue its children, wake who needs it."""
    cdef int i
    for i in range(j.nchildren):
        if heap_push(s, j.children[i]) != 0:
            s.oom = True
    j.state = DONE
    s.ahead += j.nents + 1
    if s.awaited == j or s.oom:
        pthread_cond_broadcast(&s.done_cv)
    if j.nchildren and s.idle:
        pthread_cond_broadcast(&s.work_cv)


cdef Job *job_new_locked(Shared *s, const char *rel, int rellen) noexcept nogil:
    cdef Job *j
    pthread_mutex_lock(&s.mu)
    j = job_new(s, rel, rellen)
    pthread_mutex_unlock(&s.mu)
    return j


cdef void *worker(void *arg) noexcept nogil:
    """Take the smallest pending directory, list it, queue its subdirectories; repeat."""
    cdef Shared *s = <Shared *>arg
    cdef Job *j
    cdef int i
    cdef void *xstate = wq_xxh_create() if HAVE_XXH else NULL
    cdef char *rbuf = <char *>malloc(READ_SIZE)
    cdef char *dents = <char *>malloc(DENTS_SIZE)
    if rbuf == NULL or dents == NULL:
        pthread_mutex_lock(&s.mu)
        s.oom = True
        pthread_cond_broadcast(&s.done_cv)
        pthread_mutex_unlock(&s.mu)
    else:
        pthread_mutex_lock(&s.mu)
        while True:
            while not s.stop and (s.nheap == 0 or s.ahead >= AHEAD_BUDGET):
                s.idle += 1
                pthread_cond_wait(&s.work_cv, &s.mu)
                s.idle -= 1
            if s.stop:
                break
            j = s.heap[0]
            heap_remove(s, j)
            j.state = CLAIMED
            pthread_mutex_unlock(&s.mu)
            list_dir(s, j, xstate, rbuf, dents)
            pthread_mutex_lock(&s.mu)
            job_done(s, j)
        pthread_mutex_unlock(&s.mu)
    free(rbuf)
    free(dents)
    if xstate != NULL:
        wq_xxh_free(xstate)
    return NULL


# -- blobs ---------------------------------------------------------------------------------

cdef struct Old:
    const char *name    # points into the snapshot blob
    int nlen
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
    cdef char *grown
    if b.len + n > b.cap:
        cap = b.cap * 2 if b.cap else 4096
        while cap < b.len + n:
            cap *= 2
        grown = <char *>realloc(b.data, cap)
        if grown == NULL:
            raise MemoryError()
        b.data = grown
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
        if pos + FILE_BYTES > end:
            free(arr)
            raise ValueError("corrupt snapshot row: truncated entry")
        arr[n].racy = (flags & F_RACY) != 0
        arr[n].size = <int64_t>get_le(p + pos, 8)
        arr[n].mtime = <int64_t>get_le(p + pos + 8, 8)
        arr[n].ctime = <int64_t>get_le(p + pos + 16, 8)
        arr[n].ino = get_le(p + pos + 24, 8)
        arr[n].hash = p + pos + 32
        pos += FILE_BYTES
        n += 1
    out[0] = arr
    return n


cdef int put_entry(Buf *b, const char *name, Py_ssize_t nlen, int racy, int64_t size,
                   int64_t mtime, int64_t ctime, uint64_t ino, const char *digest) except -1:
    cdef char head[3]
    cdef char body[FILE_BYTES]
    if nlen > 0xFFFF:
        raise ValueError("a name in the snapshot is at most 65535 bytes")
    put_le(head, nlen, 2)
    head[2] = F_RACY if racy else 0
    buf_put(b, head, 3)
    buf_put(b, name, nlen)
    put_le(body, <uint64_t>size, 8)
    put_le(body + 8, <uint64_t>mtime, 8)
    put_le(body + 16, <uint64_t>ctime, 8)
    put_le(body + 24, ino, 8)
    memcpy(body + 32, digest, 16)
    buf_put(b, body, FILE_BYTES)
    b.nfiles += 1
    return 0


cdef inline int put_old(Buf *b, const Old *o) except -1:
    return put_entry(b, o.name, o.nlen, o.racy, o.size, o.mtime, o.ctime, o.ino, o.hash)


def encode_entries(entries):
    """Pack a directory's snapshot entries (already sorted by name) into one blob."""
    cdef Buf b
    cdef bytes name, digest
    cdef char version = BLOB_VERSION
    b.data = NULL
    b.len = b.cap = b.nfiles = 0
    try:
        buf_put(&b, &version, 1)
        for e in entries:
            name = e.name.encode()
            digest = bytes(e.hash)
            if len(digest) != 16:
                raise ValueError("a snapshot hash has 16 bytes")
            put_entry(&b, name, len(name), e.racy, e.size, e.mtime_ns, e.ctime_ns, e.ino,
                      digest)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


def decode_entries(blob):
    """Unpack a row's blob into its entries, sorted by name."""
    cdef Old *arr = NULL
    cdef int n, i
    cdef list out = []
    if not blob:
        return out
    n = parse_blob(bytes(blob), &arr)
    try:
        for i in range(n):
            out.append(SnapEntry(arr[i].name[:arr[i].nlen].decode(), arr[i].size, arr[i].mtime,
                                 arr[i].ctime, arr[i].ino, arr[i].hash[:16],
                                 bool(arr[i].racy)))
        return out
    finally:
        free(arr)


def glob_match(glob, subject):
    """Whether a gitignore glob matches the whole of `subject` (a name or relative path)."""
    cdef bytes g = glob.encode("utf-8", "surrogateescape")
    cdef bytes t = subject.encode("utf-8", "surrogateescape")
    return bool(wq_match(g, len(g), t, len(t)))


def gitignore_rules(data):
    """The rules of a .gitignore file's contents, as the walk reads them."""
    cdef bytes raw = bytes(data)
    cdef char *text = <char *>malloc(len(raw) + 1)
    cdef GiNode *g
    cdef int i
    if text == NULL:
        raise MemoryError()
    memcpy(text, <const char *>raw, len(raw))
    g = rules_from_text(text, len(raw))
    if g == NULL:
        return []
    try:
        return [Rule(g.rules[i].glob[:g.rules[i].len].decode("utf-8", "surrogateescape"),
                     bool(g.rules[i].negate), bool(g.rules[i].dir_only),
                     bool(g.rules[i].anchored)) for i in range(g.count)]
    finally:
        free(g.rules)
        free(g.text)
        free(g)


cdef wq_rule *compile_rules(patterns, list keep, int *count) except? NULL:
    """Rules of a watch's pattern list; `keep` holds the bytes the globs point into."""
    cdef wq_rule *rules
    cdef int n = 0
    cdef bytes raw
    cdef wq_rule r
    count[0] = 0
    if not patterns:
        return NULL
    rules = <wq_rule *>malloc(len(patterns) * sizeof(wq_rule))
    if rules == NULL:
        raise MemoryError()
    for p in patterns:
        raw = p.encode("utf-8", "surrogateescape")
        keep.append(raw)
        if wq_parse_rule(raw, len(raw), &r):
            rules[n] = r
            n += 1
    count[0] = n
    return rules


cdef str errtext(int err):
    return strerror(err).decode("utf-8", "replace")


# -- the walk ------------------------------------------------------------------------------

cdef class _Walker:
    """One walk: worker threads list directories; this thread merges them in key order."""

    cdef Shared s
    cdef object hooks
    cdef object rows
    cdef object row
    cdef list kept
    cdef list keep_alive
    cdef bint minimal
    cdef bint threaded
    cdef int nthreads
    cdef pthread_t *threads
    cdef int started
    cdef void *xstate
    cdef char *rbuf
    cdef char *dents
    cdef Job **stack
    cdef int nstack
    cdef int capstack
    cdef object py_hash
    cdef long files, dirs, filtered, deferred, hashed, errors
    cdef int64_t bytes_hashed

    def __cinit__(self):
        self.s.registry.reg_next = &self.s.registry
        self.s.registry.reg_prev = &self.s.registry
        self.s.rootfd = -1
        pthread_mutex_init(&self.s.mu, NULL)
        pthread_cond_init(&self.s.work_cv, NULL)
        pthread_cond_init(&self.s.done_cv, NULL)

    def __init__(self, params, hooks):
        cdef int i
        self.hooks = hooks
        self.keep_alive = []
        self.kept = []
        root = params.root.encode()
        self.keep_alive.append(root)
        self.s.root = root
        self.s.rootlen = len(root)
        self.s.settle_from = params.start_ns - params.settle_ns
        self.s.racy_from = params.start_ns - RACY_NS
        self.s.max_depth = -1 if params.max_depth is None else params.max_depth
        self.s.max_size = -1 if params.max_size is None else params.max_size
        self.s.follow = params.follow_symlinks
        self.s.use_gitignore = params.use_gitignore
        self.minimal = params.minimal
        self.s.ignore = compile_rules(params.ignore, self.keep_alive, &self.s.nignore)
        self.s.incl = compile_rules(getattr(params, "include"), self.keep_alive, &self.s.nincl)
        scope = [c.encode() for c in params.scope]
        self.keep_alive.append(scope)
        self.s.nscope = len(scope)
        if scope:
            self.s.scope = <char **>malloc(len(scope) * sizeof(char *))
            self.s.scope_len = <int *>malloc(len(scope) * sizeof(int))
            if self.s.scope == NULL or self.s.scope_len == NULL:
                raise MemoryError()
            for i in range(len(scope)):
                self.s.scope[i] = scope[i]
                self.s.scope_len[i] = len(scope[i])
        # --path scans, and single-thread ones, list every directory on this thread
        self.threaded = params.threads > 1 and not scope
        self.nthreads = params.threads if self.threaded else 0
        self.s.eager_hash = params.eager_hash and self.threaded and HAVE_XXH
        self.rbuf = <char *>malloc(READ_SIZE)
        self.dents = <char *>malloc(DENTS_SIZE)
        if self.rbuf == NULL or self.dents == NULL:
            raise MemoryError()
        self.xstate = wq_xxh_create() if HAVE_XXH else NULL
        self.py_hash = None if HAVE_XXH else _xxhash.xxh3_128
        self.rows = iter(hooks.rows())
        self.row = next(self.rows, None)
        self.s.max_held_fds = held_fd_budget()
        self.s.progress_ns = params.progress_ns
        self.s.next_progress = wq_clock_ns(1) + self.s.progress_ns
        self.s.main_thread = pthread_self()
        self.s.walker = <void *>self

    def __dealloc__(self):
        cdef Job *j
        self._stop()
        while self.s.registry.reg_next != &self.s.registry:
            job_free(&self.s, self.s.registry.reg_next)
        cdef GiNode *g = self.s.gitignores
        cdef GiNode *nxt
        while g != NULL:
            nxt = g.next_alloc
            free(g.rules)
            free(g.text)
            free(g)
            g = nxt
        free(self.s.heap)
        free(self.s.ignore)
        free(self.s.incl)
        free(self.s.scope)
        free(self.s.scope_len)
        free(self.stack)
        free(self.rbuf)
        free(self.dents)
        free(self.threads)
        if self.xstate != NULL:
            wq_xxh_free(self.xstate)
        if self.s.rootfd >= 0:
            close(self.s.rootfd)
        pthread_mutex_destroy(&self.s.mu)
        pthread_cond_destroy(&self.s.work_cv)
        pthread_cond_destroy(&self.s.done_cv)

    cdef void _stop(self) noexcept:
        cdef int i
        if self.started == 0:
            return
        with nogil:
            pthread_mutex_lock(&self.s.mu)
            self.s.stop = True
            pthread_cond_broadcast(&self.s.work_cv)
            pthread_mutex_unlock(&self.s.mu)
            for i in range(self.started):
                pthread_join(self.threads[i], NULL)
        self.started = 0

    cdef int _push(self, Job *j) except -1:
        cdef Job **grown
        if self.nstack == self.capstack:
            grown = <Job **>realloc(self.stack, (self.capstack * 2 + 64) * sizeof(Job *))
            if grown == NULL:
                raise MemoryError()
            self.stack = grown
            self.capstack = self.capstack * 2 + 64
        self.stack[self.nstack] = j
        self.nstack += 1
        return 0

    def run(self):
        cdef Job *root
        cdef int i
        # O_NOFOLLOW: a root replaced by a symlink leads elsewhere; it is not the root
        self.s.rootfd = openat(AT_FDCWD, <const char *>self.s.root,
                               O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        if self.s.rootfd < 0:
            err = errno
            raise OSError(err, errtext(err), self.s.root.decode())
        root = job_new(&self.s, b"", 0)
        if root == NULL:
            raise MemoryError()
        root.scope_idx = 0 if self.s.nscope else -1
        self._push(root)
        if self.threaded:
            heap_push(&self.s, root)
            self.threads = <pthread_t *>malloc(self.nthreads * sizeof(pthread_t))
            if self.threads == NULL:
                raise MemoryError()
            for i in range(self.nthreads):
                if pthread_create(&self.threads[i], NULL, worker, &self.s) != 0:
                    break
                self.started += 1
            if self.started == 0:
                raise OSError("cannot start scanner threads")
        try:
            while self.nstack:
                self.nstack -= 1
                self._visit(self.stack[self.nstack])
            self._pass_rows(None)
        finally:
            self._stop()
        return ScanTotals(self.files, self.dirs, self.filtered, self.deferred, self.hashed,
                          self.bytes_hashed, self.errors)

    cdef int _wait(self, Job *j) except -1:
        """The listing of `j`. While a worker lists it, this thread lists other pending
        directories rather than sleep; one that no worker has started, it lists itself."""
        cdef Job *other
        cdef bint waiting = True
        cdef long long until
        cdef timespec t
        if not self.threaded:
            with nogil:
                list_dir(&self.s, j, NULL, self.rbuf, self.dents)
            j.state = DONE
            return 0
        while waiting:
            with nogil:
                pthread_mutex_lock(&self.s.mu)
                while j.state != DONE and not self.s.oom:
                    if j.state == PENDING:
                        other = j
                    elif self.s.nheap and self.s.ahead < AHEAD_BUDGET:
                        other = self.s.heap[0]
                    else:
                        # woken at the next progress report at the latest: a worker may be
                        # hashing a big file for a long while
                        until = wq_clock_ns(0) + max(self.s.next_progress - wq_clock_ns(1), 0)
                        t.tv_sec = until // 1000000000
                        t.tv_nsec = until % 1000000000
                        self.s.awaited = j
                        pthread_cond_timedwait(&self.s.done_cv, &self.s.mu, &t)
                        self.s.awaited = NULL
                        if wq_clock_ns(1) >= self.s.next_progress:
                            break
                        continue
                    heap_remove(&self.s, other)
                    other.state = CLAIMED
                    pthread_mutex_unlock(&self.s.mu)
                    list_dir(&self.s, other, self.xstate, self.rbuf, self.dents)
                    pthread_mutex_lock(&self.s.mu)
                    job_done(&self.s, other)
                waiting = j.state != DONE and not self.s.oom
                pthread_mutex_unlock(&self.s.mu)
            if waiting:
                self._tick()
        if self.s.oom:
            raise MemoryError("the scanner ran out of memory")
        return 0

    cdef _tick(self):
        """Report progress when its interval has passed: counts of the directories merged,
        and every byte hashed so far (of files still being hashed too)."""
        cdef long long now = wq_clock_ns(1)
        if now >= self.s.next_progress:
            self.s.next_progress = now + self.s.progress_ns
            self.hooks.progress(self.files, self.dirs,
                                max(self.bytes_hashed, wq_load_bytes(&self.s.read_bytes)))

    cdef _visit(self, Job *j):
        cdef Job *c
        cdef int i
        rel = j.rel[:j.rellen].decode()
        key = rel + "/" if rel else ""
        self._pass_rows(key)
        try:
            if not j.virtual:
                self._wait(j)
            self._report(j, rel)
            if j.err:
                if j.rellen == 0:
                    raise OSError(j.err, errtext(j.err), self.s.root.decode())
                if not gone(j.err):
                    _bisect.insort(self.kept, key)
                return
            if not j.virtual:
                self.dirs += 1
            if j.has_git:
                self.hooks.repo(rel)
            self._merge(j, rel, key)
            self._report(j, rel)  # what hashing during the merge added
            if not j.virtual:
                self._tick()
            # children in reverse key order, so the smallest is visited next
            if j.scope_idx >= 0 and j.scope_idx + 1 < self.s.nscope and j.nchildren == 0:
                c = job_new(&self.s, (rel + "/" if rel else "").encode()
                            + self.s.scope[j.scope_idx][:self.s.scope_len[j.scope_idx]],
                            j.rellen + (1 if j.rellen else 0) + self.s.scope_len[j.scope_idx])
                if c == NULL:
                    raise MemoryError()
                c.virtual = 1
                c.depth = j.depth + 1
                c.scope_idx = j.scope_idx + 1
                self._push(c)
            for i in range(j.nchildren - 1, -1, -1):
                self._push(j.children[i])
        finally:
            with nogil:
                pthread_mutex_lock(&self.s.mu)
                if self.threaded and j.state == DONE:
                    self.s.ahead -= j.nents + 1
                    if self.s.idle and self.s.ahead < AHEAD_BUDGET and self.s.nheap:
                        pthread_cond_broadcast(&self.s.work_cv)
                job_free(&self.s, j)
                pthread_mutex_unlock(&self.s.mu)

    cdef _report(self, Job *j, str rel):
        """Counters and warnings of one listing, in the order the pure twin reports them."""
        cdef Warn *w = j.warns
        cdef Warn *nxt
        self.files += j.files
        self.filtered += j.filtered
        self.deferred += j.deferred
        self.hashed += j.hashed
        self.bytes_hashed += j.bytes_hashed
        j.files = j.filtered = j.deferred = j.hashed = 0
        j.bytes_hashed = 0
        j.warns = j.warns_tail = NULL
        while w != NULL:
            text = w.text[:w.len]
            if w.kind == W_UTF8:
                self._warn(rel, "skipped a name that is not valid UTF-8: "
                           + repr(_os.fsdecode(text)))
            elif w.kind == W_OUTSIDE:
                self.hooks.warn(text.decode(), "symlink leads outside the watch root; skipped")
            elif w.kind == W_STAT:
                self._warn(text.decode(), f"cannot stat: {errtext(w.err)}", w.err)
            elif w.kind == W_READ:
                self._warn(text.decode(), f"cannot read: {errtext(w.err)}", w.err)
            elif w.kind == W_OPEN:
                self._warn(rel, f"cannot open directory: {errtext(w.err)}", w.err)
            elif w.kind == W_LIST:
                self._warn(rel, f"cannot list directory: {errtext(w.err)}", w.err)
            elif w.kind == W_REPLACED:
                self._warn(rel, "directory replaced while being scanned (a parent swapped "
                           "for a symlink?); left as it was")
            nxt = w.next
            free(w)
            w = nxt

    cdef _warn(self, str rel, str message, int err=0):
        self.errors += 1
        self.hooks.warn(rel, message, err)

    cdef _take(self, str key):
        """The snapshot row of the directory being visited, if it has one."""
        if self.row is None or self.row[0] != key:
            return None
        blob = self.row[1]
        self.row = next(self.rows, None)
        return blob

    cdef _pass_rows(self, str until):
        """Rows before `until` (None: all) were not visited: delete their files, unless
        they lie below a directory that could not be read."""
        cdef Old *olds = NULL
        cdef int n, i
        while self.row is not None and (until is None or self.row[0] < until):
            key, blob = self.row
            self.row = next(self.rows, None)
            i = _bisect.bisect_right(self.kept, key) - 1
            if i >= 0 and key.startswith(self.kept[i]):
                continue
            changes = []
            n = parse_blob(blob, &olds)
            try:
                for i in range(n):
                    changes.append(Change("delete", key + olds[i].name[:olds[i].nlen].decode(),
                                          olds[i].size, olds[i].mtime, olds[i].ino,
                                          olds[i].hash[:16], None))
            finally:
                free(olds)
                olds = NULL
            self.hooks.emit(DirResult(key, None, 0, changes, [key]))

    cdef _merge(self, Job *j, str rel, str key):
        """Merge one directory's listing with its snapshot row; emit what changed."""
        cdef Old *olds = NULL
        cdef int nold = 0, i = 0, k = 0, c, outcome
        cdef int dirfd = -1
        cdef bint dirty = False
        cdef Ent *e
        cdef Old *o
        cdef Buf out
        cdef char version = BLOB_VERSION
        cdef const char *target = NULL
        cdef int target_len = 0
        cdef bint scoped_below = False
        cdef char *arena = j.arena
        cdef list changes = []
        blob = self._take(key)
        out.data = NULL
        out.len = out.cap = out.nfiles = 0
        if j.scope_idx >= 0 and j.scope_idx < self.s.nscope:
            target = self.s.scope[j.scope_idx]
            target_len = self.s.scope_len[j.scope_idx]
            scoped_below = j.scope_idx + 1 < self.s.nscope
        try:
            if blob:
                nold = parse_blob(blob, &olds)
            buf_put(&out, &version, 1)
            while True:
                while i < j.nents and (j.ents[i].kind == K_DIR or j.ents[i].keep == SKIP):
                    i += 1
                if i >= j.nents and k >= nold:
                    break
                if i < j.nents and k < nold:
                    c = key_cmp(arena + j.ents[i].name, j.ents[i].nlen, 0, olds[k].name,
                                olds[k].nlen, 0)
                else:
                    c = -1 if i < j.nents else 1
                if c > 0:
                    o = &olds[k]
                    k += 1
                    if target != NULL and (scoped_below or not (
                            o.nlen == target_len and memcmp(o.name, target, target_len) == 0)):
                        put_old(&out, o)
                        continue
                    dirty = True
                    changes.append(Change("delete", key + o.name[:o.nlen].decode(), o.size,
                                          o.mtime, o.ino, o.hash[:16], None))
                    continue
                e = &j.ents[i]
                i += 1
                o = NULL
                if c == 0:
                    o = &olds[k]
                    k += 1
                if e.keep != MERGE:
                    if o != NULL:
                        put_old(&out, o)
                    continue
                if o != NULL and not o.racy and o.size == e.size and o.mtime == e.mtime and (
                        self.minimal or (o.ctime == e.ctime and o.ino == e.ino)):
                    put_old(&out, o)
                    continue
                outcome = self._hash(j, rel, e, &dirfd)
                if outcome == H_OK:
                    dirty = True
                    put_entry(&out, arena + e.name, e.nlen, e.mtime > self.s.racy_from, e.size,
                              e.mtime, e.ctime, e.ino, e.hash)
                    if o == NULL:
                        changes.append(Change("ingest", key + (arena + e.name)[:e.nlen].decode(),
                                              e.size, e.mtime, e.ino, e.hash[:16], None))
                    elif o.size != e.size or memcmp(o.hash, e.hash, 16) != 0:
                        changes.append(Change("update", key + (arena + e.name)[:e.nlen].decode(),
                                              e.size, e.mtime, e.ino, e.hash[:16],
                                              o.hash[:16]))
                elif outcome == H_VANISHED:
                    if o != NULL:
                        dirty = True
                        changes.append(Change("delete", key + o.name[:o.nlen].decode(), o.size,
                                              o.mtime, o.ino, o.hash[:16], None))
                elif o != NULL:
                    put_old(&out, o)  # deferred or unreadable: the snapshot keeps what it had
            if dirty:
                if out.nfiles:
                    self.hooks.emit(DirResult(key, PyBytes_FromStringAndSize(out.data, out.len),
                                              out.nfiles, changes, []))
                else:
                    self.hooks.emit(DirResult(key, None, 0, changes, [key] if nold else []))
        finally:
            free(olds)
            free(out.data)
            if dirfd >= 0:
                close(dirfd)

    cdef int _hash(self, Job *j, str rel, Ent *e, int *dirfd) except -1:
        """Hash a file the workers did not hash (or take their result), recording the
        outcome in the job as a worker would."""
        if e.hstate != H_NONE:
            return e.hstate
        if self.py_hash is not None:
            return self._hash_py(j, rel, e)
        if dirfd[0] < 0:
            dirfd[0] = openat(self.s.rootfd, <const char *>j.rel if j.rellen else <const char *>".",
                              O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd[0] < 0:
            e.herr = errno
            e.hstate = H_VANISHED if gone(e.herr) else H_FAILED
            if e.hstate == H_FAILED:
                warn_child(&self.s, j, W_READ, e.herr, j.arena + e.name, e.nlen)
        else:
            with nogil:
                hash_into(&self.s, j, dirfd[0], e, j.arena, self.xstate, self.rbuf)
        return e.hstate

    cdef int _hash_py(self, Job *j, str rel, Ent *e) except -1:
        """Hashing through the xxhash Python API, when its C symbols were not found."""
        cdef bytes digest
        if e.mtime > self.s.settle_from:
            j.deferred += 1
            return H_DEFERRED
        path = _os.path.join(self.s.root.decode(), rel, (j.arena + e.name)[:e.nlen].decode())
        try:
            f = _os.open(path, _os.O_RDONLY | _os.O_CLOEXEC | _os.O_NONBLOCK
                         | (0 if e.linked else _os.O_NOFOLLOW))
        except OSError as err:
            if gone(err.errno):
                return H_VANISHED
            warn_child(&self.s, j, W_READ, err.errno, j.arena + e.name, e.nlen)
            return H_FAILED
        try:
            before = _os.fstat(f)
            if not _stat.S_ISREG(before.st_mode) or before.st_ino != e.ino:
                j.deferred += 1
                return H_DEFERRED
            h = self.py_hash()
            total = 0
            while True:
                chunk = _os.read(f, READ_SIZE)
                if not chunk:
                    break
                h.update(chunk)
                total += len(chunk)
            after = _os.fstat(f)
        finally:
            _os.close(f)
        j.hashed += 1
        j.bytes_hashed += total
        if total != e.size or after.st_size != e.size or after.st_mtime_ns != e.mtime:
            j.deferred += 1
            return H_DEFERRED
        digest = h.digest()
        memcpy(e.hash, <const char *>digest, 16)
        return H_OK


def walk(params, hooks):
    """Walk the tree under `params.root` (or its `scope`), emitting each changed directory."""
    return _Walker(params, hooks).run()
