# Included by _scan_c.pyx: declarations of the C library, the constants, and the xxhash binding.

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

cdef extern from "<limits.h>" nogil:
    int PATH_MAX

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
    static void wq_set_flag(int *p) { __atomic_store_n(p, 1, __ATOMIC_RELAXED); }
    static int wq_get_flag(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
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
    void wq_set_flag(int *p) nogil
    int wq_get_flag(int *p) nogil
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
    typedef unsigned long long (*wq_seeded_fn)(const void *, size_t, unsigned long long);
    static wq_create_fn wq_xxh_create; static wq_free_fn wq_xxh_free;
    static wq_reset_fn wq_xxh_reset; static wq_update_fn wq_xxh_update;
    static wq_digest_fn wq_xxh_digest; static wq_seeded_fn wq_xxh64;
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
    ctypedef unsigned long long (*wq_seeded_fn)(const void *, size_t,
                                                unsigned long long) noexcept nogil
    wq_create_fn wq_xxh_create
    wq_free_fn wq_xxh_free
    wq_reset_fn wq_xxh_reset
    wq_update_fn wq_xxh_update
    wq_digest_fn wq_xxh_digest
    wq_seeded_fn wq_xxh64
    unsigned char DT_DIR, DT_REG, DT_LNK, DT_UNKNOWN


cdef enum:
    READ_SIZE = 1 << 20
    SIGNALS_NS = 100000000  # a thread hashing a big file looks for signals this often
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
    H_HALTED = 5  # the walk is ending (a signal): the file is left as it was
    H_AHEAD = 6  # hashed by a worker while listing; counted when the merge takes it

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
cdef bint HAVE_XXH64 = False  # XXH3-64 with a seed: the directory cache's fingerprints
# The xxhash package's Python API hashes instead when its C symbols are missing; setting
# WQSCAN_XXH_PYTHON=1 forces that path (for tests and diagnosis).
FORCE_PY_HASH = _os.environ.get("WQSCAN_XXH_PYTHON", "") not in ("", "0")


cdef void _bind_xxhash() noexcept:
    """Find XXH3-128's streaming functions in the loaded xxhash extension, so workers
    hash without the GIL; without them the calling thread hashes through Python."""
    global HAVE_XXH, HAVE_XXH64, wq_xxh_create, wq_xxh_free, wq_xxh_reset, wq_xxh_update
    global wq_xxh_digest, wq_xxh64
    path = _os.fsencode(_xxhash_c.__file__)
    cdef void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if h != NULL:
        wq_xxh64 = <wq_seeded_fn>dlsym(h, "XXH3_64bits_withSeed")
        HAVE_XXH64 = wq_xxh64 != NULL
    if h == NULL or FORCE_PY_HASH:
        return
    wq_xxh_create = <wq_create_fn>dlsym(h, "XXH3_createState")
    wq_xxh_free = <wq_free_fn>dlsym(h, "XXH3_freeState")
    wq_xxh_reset = <wq_reset_fn>dlsym(h, "XXH3_128bits_reset")
    wq_xxh_update = <wq_update_fn>dlsym(h, "XXH3_128bits_update")
    wq_xxh_digest = <wq_digest_fn>dlsym(h, "XXH3_128bits_digest")
    HAVE_XXH = (wq_xxh_create != NULL and wq_xxh_free != NULL and wq_xxh_reset != NULL
                and wq_xxh_update != NULL and wq_xxh_digest != NULL)


_bind_xxhash()
XXH_SYMBOLS = HAVE_XXH  # whether the walk hashes through the C symbols (for tests)


cdef inline void put_be(char *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = <char>(v & 0xff)
        v >>= 8
