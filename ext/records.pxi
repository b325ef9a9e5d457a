# Included by _scan_c.pyx: the C records of one walk (entries, jobs, shared state) and their orderings.

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
    uint64_t own_ino  # a followed symlink's own inode: its identity in the snapshot
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
    uint64_t fp       # fingerprint of the rules in force (scan/listings.py)
    # the directory's own stat data, read before it was listed (has_dstat)
    uint8_t has_dstat
    int64_t dmtime
    int64_t dctime
    uint64_t dino
    int64_t dsize
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
    int cache_idx     # its entry in Shared.cached, or -1
    uint8_t cache_hit  # the names came from that entry
    uint8_t cache_report  # listed anew where the cache may keep it: report `listing`...
    char *listing     # ...this entry for it (NULL: forget the old one)
    int listing_len


cdef struct Cached:  # a directory cache entry, preloaded: offsets into Shared.cache_buf
    long key          # the directory's relative path, without the trailing '/'
    int keylen
    long entry
    int len
    uint8_t used      # taken or replaced by this walk; the others are forgotten at its end


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
    bint eager        # workers hash the files changed (ctime) at or after eager_from as they list
    int64_t eager_from
    wq_rule *ignore
    int nignore
    wq_rule *incl
    int nincl
    char **scope
    int *scope_len
    int nscope
    bint cache        # use the directory cache (scan/listings.py)
    uint64_t seed     # the fingerprint of the watch's own rules
    Cached *cached    # the entries of the scanned part, sorted by key
    int ncached
    char *cache_buf
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
    int halt  # the walk is ending: hashes stop mid-file (atomic)
    bint oom
    long long read_bytes  # read by hash_file so far, on any thread (atomic): progress
    long long progress_ns  # between two progress reports
    long long next_progress  # monotonic time of the next one (the calling thread's)
    long long next_signals  # ... and of the next look for signals while it hashes
    pthread_t main_thread  # the calling thread, which alone may report
    void *walker  # the _Walker, whose _tick reports


cdef inline int64_t ns(timespec t) noexcept nogil:
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline uint64_t ident(Ent *e) noexcept nogil:
    """A file's identity in the snapshot and in its changes: its inode, or a followed
    link's own (a link and the file it leads to are two entries, never one file moved)."""
    return e.own_ino if e.linked else e.ino


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
