# Included by _scan_c.pyx: listing one directory, in phases (open, read, filter, select,
# hash); on the worker threads or the calling thread, never touching Python.

# -- listing one directory ----------------------------------------------------------------

cdef int open_listed(Shared *s, Job *j) noexcept nogil:
    """The job's directory, opened; -1 (j.err set, and a warning unless it vanished) when
    it cannot be opened or is not the directory the parent's listing saw."""
    cdef int fd, k, flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
    cdef stat st
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
        return -1
    # Its stat data are read before it is listed: a change after that moves them, and the
    # directory cache does not take a listing older than its stat data.
    j.has_dstat = (j.has_id or s.follow or s.cache) and fstat(fd, &st) == 0
    # The path was resolved again after the parent was listed: if an ancestor was swapped
    # for a symlink meanwhile, it led somewhere else. Only the directory listed is read.
    if j.has_id and (not j.has_dstat or <uint64_t>st.st_dev != j.id_dev
                     or <uint64_t>st.st_ino != j.id_ino):
        close(fd)
        j.err = EAGAIN
        warn_add(s, j, W_REPLACED, 0, b"", 0)
        return -1
    if j.has_dstat:
        j.dmtime = ns(st.st_mtim)
        j.dctime = ns(st.st_ctim)
        j.dino = st.st_ino
        j.dsize = st.st_size
    if s.follow and j.has_dstat:
        k = j.nchain
        j.chain = <uint64_t *>realloc(j.chain, (k + 2) * sizeof(uint64_t))
        if j.chain == NULL:
            s.oom = True
            close(fd)
            j.err = ENOMEM
            return -1
        j.chain[k] = st.st_dev
        j.chain[k + 1] = st.st_ino
        j.nchain = k + 2
    return fd


cdef int read_entries(Shared *s, Job *j, int fd, char *dents,
                      bint *has_gitignore) noexcept nogil:
    """Read the directory's names into j.ents and j.arena, sorted by key, with their kinds
    (d_type, else a stat; symlinks classified); -1 when listing failed (j.err set)."""
    cdef long got, off
    cdef wq_dirent64 *d
    cdef const char *nm
    cdef int nlen, n = 0, cap = 0, acap = 0, alen = 0
    cdef Ent *ents = NULL
    cdef Ent *grown
    cdef Ent *e
    cdef char *arena = NULL
    cdef char *agrown
    cdef const char *target = NULL
    cdef int target_len = 0
    cdef stat st
    if j.scope_idx >= 0 and j.scope_idx < s.nscope:  # an ancestor of --path: one name counts
        target = s.scope[j.scope_idx]
        target_len = s.scope_len[j.scope_idx]
    while True:
        got = syscall(SYS_getdents64, fd, dents, DENTS_SIZE)
        if got < 0:
            j.err = errno
            warn_add(s, j, W_LIST, j.err, b"", 0)
            free(ents)
            free(arena)
            return -1
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
            if target != NULL and not (nlen == target_len and memcmp(nm, target, nlen) == 0):
                # outside the scope: neither counted nor warned about; only what makes a
                # project root or rules for the scoped subtree is noted
                if nlen == 4 and memcmp(nm, b".git", 4) == 0:
                    j.has_git = 1
                elif nlen == 10 and memcmp(nm, b".gitignore", 10) == 0 and (
                        d.d_type == DT_REG or (d.d_type == DT_UNKNOWN and fstatat(
                            fd, nm, &st, AT_SYMLINK_NOFOLLOW) == 0 and S_ISREG(st.st_mode))):
                    has_gitignore[0] = True
                continue
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
            n += 1
            classify(s, j, fd, e, arena, d.d_type)
            if nlen == 4 and memcmp(nm, b".git", 4) == 0:
                j.has_git = 1
            elif nlen == 10 and memcmp(nm, b".gitignore", 10) == 0 and e.kind == K_FILE \
                    and not e.linked:
                has_gitignore[0] = True
    if n:
        qsort_r(ents, n, sizeof(Ent), ent_cmp, arena)
    j.ents = ents
    j.nents = n
    j.arena = arena
    return 0


cdef inline void classify(Shared *s, Job *j, int fd, Ent *e, char *arena,
                          unsigned char d_type) noexcept nogil:
    """A new entry's kind, from its d_type or, where the filesystem gives none, a stat."""
    cdef stat st
    e.linked = e.has_st = e.hstate = 0
    e.herr = 0
    e.keep = SKIP
    if d_type == DT_DIR:
        e.kind = K_DIR
    elif d_type == DT_REG:
        e.kind = K_FILE
    elif d_type == DT_LNK:
        classify_link(s, j, fd, e, arena)
    elif d_type == DT_UNKNOWN and fstatat(fd, arena + e.name, &st, AT_SYMLINK_NOFOLLOW) == 0:
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


cdef void filter_entries(Shared *s, Job *j, GiNode *gi, char *path, int k) noexcept nogil:
    """Let through (MERGE) the entries the ignore, .gitignore and include rules pass, on
    their path relative to the root (`path`, whose first `k` bytes are the directory's)."""
    cdef int i
    cdef Ent *e
    for i in range(j.nents):
        e = &j.ents[i]
        memcpy(path + k, j.arena + e.name, e.nlen)
        if e.kind != K_OTHER and passes(s, j, gi, j.arena + e.name, e.nlen, path,
                                        k + e.nlen, e.kind == K_DIR):
            e.keep = MERGE
        else:
            j.filtered += 1


cdef int select_entries(Shared *s, Job *j, int fd, GiNode *gi, char *path,
                        int k) noexcept nogil:
    """Scope, depth, type and size over the entries let through: subdirectories become
    child jobs, files in scope are stat'ed and counted; -1 when memory ran out."""
    cdef int i, target_len = 0
    cdef const char *target = NULL
    cdef bint dirs_ok, files_ok, scoped_below
    cdef Ent *e
    cdef stat st
    cdef char *arena = j.arena
    files_ok = s.max_depth < 0 or j.depth + 1 <= s.max_depth
    dirs_ok = s.max_depth < 0 or j.depth + 2 <= s.max_depth
    if j.scope_idx >= 0 and j.scope_idx < s.nscope:
        target = s.scope[j.scope_idx]
        target_len = s.scope_len[j.scope_idx]
    scoped_below = target != NULL and j.scope_idx + 1 < s.nscope
    j.children = <Job **>malloc((j.nents + 1) * sizeof(Job *))
    if j.children == NULL:
        s.oom = True
        return -1
    for i in range(j.nents):
        e = &j.ents[i]
        if e.keep != MERGE:
            continue
        if target != NULL and not (e.nlen == target_len
                                   and memcmp(arena + e.name, target, target_len) == 0):
            e.keep = OUT_OF_SCOPE
        elif e.kind == K_DIR:
            e.keep = SKIP
            if not dirs_ok:
                j.filtered += 1
            else:
                memcpy(path + k, arena + e.name, e.nlen)
                add_child(s, j, fd, e, gi, path, k + e.nlen, target != NULL)
        elif scoped_below:
            e.keep = OUT_OF_SCOPE  # --path goes below this name, which is not a directory
        elif not files_ok:
            e.keep = SKIP
            j.filtered += 1
        elif not e.has_st and fstatat(fd, arena + e.name, &st, AT_SYMLINK_NOFOLLOW) != 0:
            e.herr = errno
            if gone(e.herr):
                e.keep = SKIP
            else:
                e.keep = NO_STAT
                warn_child(s, j, W_STAT, e.herr, arena + e.name, e.nlen)
        elif not e.has_st and not S_ISREG(st.st_mode):
            e.keep = SKIP
            j.filtered += 1
        else:
            if not e.has_st:
                ent_stat(e, &st)
            if s.max_size >= 0 and e.size > s.max_size:
                e.keep = SKIP
                j.filtered += 1
            else:
                j.files += 1
    return 0


cdef void add_child(Shared *s, Job *j, int fd, Ent *e, GiNode *gi, char *path, int plen,
                    bint scoped) noexcept nogil:
    """Queue subdirectory `e` (at `path`, `plen` bytes) as a child job of `j`."""
    cdef stat st
    cdef Job *c = job_new_locked(s, path, plen)
    if c == NULL:
        s.oom = True
        return
    c.depth = j.depth + 1
    c.via_link = e.linked or j.via_link
    c.has_id = 1
    # Opened from this directory, the child needs no identity check, and the kernel
    # resolves one name rather than the whole path from the root. Beyond the budget of
    # open descriptors, or if that fails, it is opened by its path later; so is one whose
    # path is too long to open (which the walk reports, as the pure twin does).
    if not e.linked and plen < PATH_MAX and wq_take_fd(&s.held_fds, s.max_held_fds):
        c.fd = openat(fd, j.arena + e.name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        if c.fd < 0:
            wq_give_fd(&s.held_fds)
    if c.fd >= 0:
        c.has_id = 0
    elif e.linked:
        c.id_dev, c.id_ino = e.dev, e.ino
    elif fstatat(fd, j.arena + e.name, &st, AT_SYMLINK_NOFOLLOW) == 0 and S_ISDIR(st.st_mode):
        c.id_dev, c.id_ino = st.st_dev, st.st_ino
    else:
        c.id_dev = c.id_ino = 0  # no longer a directory: nothing will match
    c.gi = gi
    c.fp = j.fp
    c.scope_idx = j.scope_idx + 1 if scoped else -1
    if s.nincl:
        c.inc_best = wq_last(s.incl, s.nincl, j.arena + e.name, e.nlen, path, plen, 1)
        if j.inc_best > c.inc_best:
            c.inc_best = j.inc_best
    if j.nchain:
        c.chain = <uint64_t *>malloc(j.nchain * sizeof(uint64_t))
        if c.chain != NULL:
            memcpy(c.chain, j.chain, j.nchain * sizeof(uint64_t))
            c.nchain = j.nchain
    j.children[j.nchildren] = c
    j.nchildren += 1


cdef void list_dir(Shared *s, Job *j, void *xstate, char *rbuf, char *dents) noexcept nogil:
    """Open, read, filter and stat one directory into the job (workers and main alike);
    its names come from the directory cache when its entry holds."""
    cdef int i, k = 0, longest = 256
    cdef int fd = open_listed(s, j)
    cdef bint has_gitignore = False
    cdef bint cacheable
    cdef Cached *c = NULL
    cdef char *path
    if fd < 0:
        return
    cacheable = s.cache and j.has_dstat and not 0 <= j.scope_idx < s.nscope
    if cacheable:
        c = cached_find(s, j)
        j.cache_idx = c - s.cached if c != NULL else -1
    if c != NULL and not cached_holds(j, c, s.cache_buf + c.entry, &has_gitignore):
        c = NULL  # the directory changed: listed anew
    if c == NULL and read_entries(s, j, fd, dents, &has_gitignore) != 0:
        close(fd)
        return
    if has_gitignore and s.use_gitignore:
        j.gi = gitignore_load(s, fd, j.gi, j.rellen + 1 if j.rellen else 0, &j.fp)
    if c != NULL and (get_le(s.cache_buf + c.entry + L_FP, 8) != j.fp
                      or ents_from_listing(s, j, c) != 0):
        c = NULL  # the rules changed: listed anew
        if read_entries(s, j, fd, dents, &has_gitignore) != 0:
            close(fd)
            return
    for i in range(j.nents):  # a filesystem's readdir may give names over NAME_MAX bytes
        longest = max(longest, j.ents[i].nlen)
    path = <char *>malloc(j.rellen + 2 + longest)  # an entry's path relative to the root
    if path == NULL:
        s.oom = True
        close(fd)
        return
    if j.rellen:
        memcpy(path, j.rel, j.rellen)
        path[j.rellen] = b'/'
        k = j.rellen + 1
    if c != NULL:
        j.cache_hit = 1
    else:
        filter_entries(s, j, j.gi, path, k)
        if cacheable:
            listing_record(s, j, has_gitignore)
    i = select_entries(s, j, fd, j.gi, path, k)
    free(path)
    if i == 0 and s.eager and xstate != NULL:
        for i in range(j.nents):
            if j.ents[i].keep == MERGE and j.ents[i].kind != K_DIR \
                    and j.ents[i].ctime >= s.eager_from:
                hash_ahead(s, fd, &j.ents[i], j.arena, xstate, rbuf)
    close(fd)
