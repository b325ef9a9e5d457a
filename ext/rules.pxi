# Included by _scan_c.pyx: .gitignore files, the filters a listed name must pass, and
# symlinks checked to stay inside the root (worker threads; never touches Python).

# -- .gitignore files --------------------------------------------------------------------

cdef GiNode *gitignore_load(Shared *s, int dirfd, GiNode *parent, int baselen,
                           uint64_t *fp) noexcept nogil:
    """The rules of the directory's .gitignore on top of `parent`, or `parent` if none;
    the fingerprint `fp` chained with its text (scan/listings.py)."""
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
    if HAVE_XXH64:
        fp[0] = wq_xxh64(text, total, fp[0])
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


# -- what a listing lets through, and where symlinks lead -------------------------------

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
    cdef stat st, own
    cdef const char *name = arena + e.name
    cdef int i
    e.kind = K_OTHER
    if not s.follow or fstatat(dirfd, name, &own, AT_SYMLINK_NOFOLLOW) != 0:
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
    e.own_ino = own.st_ino
