# Included by _scan_c.pyx: the directory cache (scan/listings.py has the entry layout).
# The entries of the scanned part are preloaded, sorted, for the workers to look up; a
# worker turns an entry that holds into the job's entries, or records the listing anew;
# the calling thread reports what changed.

cdef enum:
    LISTING_VERSION = 1
    L_FP = 33  # offsets in an entry: the fingerprint, the flags, the filtered count...
    L_FLAGS = 41
    L_FILTERED = 42
    L_HEAD = 46  # ...and the first name
    L_HAS_GIT = 1
    L_HAS_GITIGNORE = 2
    L_NAME_MAX = 255  # bytes of a name on the filesystems the cache is on


cdef int cached_cmp(const void *x, const void *y, void *buf) noexcept nogil:
    cdef const Cached *a = <const Cached *>x
    cdef const Cached *b = <const Cached *>y
    cdef const char *base = <const char *>buf
    return key_cmp(base + a.key, a.keylen, 1, base + b.key, b.keylen, 1)


cdef Cached *cached_find(Shared *s, Job *j) noexcept nogil:
    """The preloaded entry of the job's directory, or NULL."""
    cdef int lo = 0, hi = s.ncached, mid, c
    while lo < hi:
        mid = (lo + hi) // 2
        c = key_cmp(s.cache_buf + s.cached[mid].key, s.cached[mid].keylen, 1, j.rel,
                    j.rellen, 1)
        if c == 0:
            return &s.cached[mid]
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return NULL


cdef bint cached_holds(Job *j, Cached *c, const char *p, bint *has_gitignore) noexcept nogil:
    """Whether entry `p` was recorded with the directory's stat data as they are now (its
    flags then say whether the directory holds a .gitignore)."""
    if c.len < L_HEAD or p[0] != LISTING_VERSION or (
            <int64_t>get_le(p + 1, 8) != j.dmtime or <int64_t>get_le(p + 9, 8) != j.dctime
            or get_le(p + 17, 8) != j.dino or <int64_t>get_le(p + 25, 8) != j.dsize):
        return False
    has_gitignore[0] = (p[L_FLAGS] & L_HAS_GITIGNORE) != 0
    return True


cdef int ents_from_listing(Shared *s, Job *j, Cached *c) noexcept nogil:
    """The job's entries from the names of its cache entry (all let through by the
    filters); -1 when the entry is malformed, and the directory is listed anew."""
    cdef const char *p = s.cache_buf + c.entry
    cdef int pos = L_HEAD, n = 0, alen = 0, nlen, i
    cdef Ent *ents
    cdef Ent *e
    cdef char *arena
    while pos < c.len:
        nlen = <int>get_le(p + pos + 1, 2) if pos + 3 <= c.len else 0
        if not 0 < nlen <= L_NAME_MAX or <uint8_t>p[pos] > K_DIR or pos + 3 + nlen > c.len:
            return -1
        n += 1
        alen += nlen + 1
        pos += 3 + nlen
    ents = <Ent *>malloc((n + 1) * sizeof(Ent))
    arena = <char *>malloc(alen + 1)
    if ents == NULL or arena == NULL:
        s.oom = True
        free(ents)
        free(arena)
        return -1
    pos = L_HEAD
    alen = 0
    for i in range(n):
        e = &ents[i]
        nlen = <int>get_le(p + pos + 1, 2)
        memcpy(arena + alen, p + pos + 3, nlen)
        arena[alen + nlen] = 0
        e.name, e.nlen, e.kind = alen, nlen, <uint8_t>p[pos]
        e.linked = e.has_st = e.hstate = 0
        e.herr = 0
        e.keep = MERGE
        pos += 3 + nlen
        alen += nlen + 1
        # a name that could not have been listed, or out of key order, is not trusted
        if memchr(arena + e.name, SLASH, nlen) != NULL or strlen(arena + e.name) != nlen \
                or not wq_valid_utf8(arena + e.name, nlen) or (arena[e.name] == 46 and (
                    nlen == 1 or (nlen == 2 and arena[e.name + 1] == 46))) \
                or (i and ent_cmp(&ents[i - 1], e, arena) >= 0):
            free(ents)
            free(arena)
            return -1
    j.ents, j.nents, j.arena = ents, n, arena
    j.filtered += <long>get_le(p + L_FILTERED, 4)
    j.has_git = (p[L_FLAGS] & L_HAS_GIT) != 0
    return 0


cdef void listing_record(Shared *s, Job *j, bint has_gitignore) noexcept nogil:
    """The cache entry of a directory just listed and filtered (j.listing), unless a name
    was skipped with a warning or the directory changed too recently (racy); whether to
    report it (or forget the old one)."""
    cdef int i, pos = L_HEAD, size = L_HEAD
    cdef Ent *e
    cdef char *p
    j.cache_report = j.cache_idx >= 0
    if j.warns != NULL or max(j.dmtime, j.dctime) > s.racy_from:
        return
    for i in range(j.nents):
        if j.ents[i].keep == MERGE:
            size += 3 + j.ents[i].nlen
    p = <char *>malloc(size)
    if p == NULL:
        s.oom = True
        return
    p[0] = LISTING_VERSION
    put_le(p + 1, <uint64_t>j.dmtime, 8)
    put_le(p + 9, <uint64_t>j.dctime, 8)
    put_le(p + 17, j.dino, 8)
    put_le(p + 25, <uint64_t>j.dsize, 8)
    put_le(p + L_FP, j.fp, 8)
    p[L_FLAGS] = (L_HAS_GIT if j.has_git else 0) | (L_HAS_GITIGNORE if has_gitignore else 0)
    put_le(p + L_FILTERED, <uint64_t>j.filtered, 4)
    for i in range(j.nents):
        e = &j.ents[i]
        if e.keep == MERGE:
            p[pos] = e.kind
            put_le(p + pos + 1, e.nlen, 2)
            memcpy(p + pos + 3, j.arena + e.name, e.nlen)
            pos += 3 + e.nlen
    j.listing, j.listing_len, j.cache_report = p, size, 1


# -- the calling thread --------------------------------------------------------------------

cdef int load_listings(_Walker self, params) except -1:
    """Preload the entries of the scanned part, sorted as the workers look them up (the
    cache is on unless symlinks are followed or fingerprints cannot be computed)."""
    cdef Buf buf
    cdef Cached *arr = NULL
    cdef Cached *grown
    cdef int n = 0, cap = 0
    self.s.cache = params.dircache and not params.follow_symlinks and HAVE_XXH64
    if not self.s.cache:
        return 0
    self.s.seed = seed(params)
    buf.data = NULL
    buf.len = buf.cap = buf.nfiles = 0
    try:
        for key, blob in self.hooks.listings():
            k = key.encode()[:-1]  # "" for the root
            entry = bytes(blob)
            if n == cap:
                cap = cap * 2 + 256
                grown = <Cached *>realloc(arr, cap * sizeof(Cached))
                if grown == NULL:
                    raise MemoryError()
                arr = grown
            arr[n].key, arr[n].keylen = buf.len, len(k)
            buf_put(&buf, PyBytes_AS_STRING(k), len(k))
            arr[n].entry, arr[n].len = buf.len, len(entry)
            buf_put(&buf, PyBytes_AS_STRING(entry), len(entry))
            arr[n].used = 0
            n += 1
    except BaseException:
        free(arr)
        free(buf.data)
        raise
    if n:
        qsort_r(arr, n, sizeof(Cached), cached_cmp, buf.data)
    self.s.cached, self.s.ncached, self.s.cache_buf = arr, n, buf.data
    return 0


cdef record_listing(_Walker self, Job *j, str key):
    """Report a listing made anew (its entry, or None), and note the entries the walk
    took or replaced."""
    if j.cache_idx >= 0 and (j.cache_hit or j.cache_report):
        self.s.cached[j.cache_idx].used = 1
    if j.cache_report:
        self.hooks.listing(key, PyBytes_FromStringAndSize(j.listing, j.listing_len)
                           if j.listing != NULL else None)
    free(j.listing)
    j.listing = NULL
    j.cache_report = 0


cdef forget_listings(_Walker self):
    """The entries of directories this walk did not visit (gone, or out of scope now)."""
    cdef int i
    cdef Cached *c
    for i in range(self.s.ncached):
        c = &self.s.cached[i]
        if not c.used:
            k = self.s.cache_buf[c.key:c.key + c.keylen]
            self.hooks.listing((k + b"/").decode() if c.keylen else "", None)
