# Included by _scan_c.pyx: the heap of directories waiting to be listed, jobs and their warnings, and the worker threads.

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
    j.cache_idx = -1
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
    free(j.listing)
    j.ents = NULL
    j.arena = NULL
    j.children = NULL
    j.listing = NULL
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
            if s.stop or wq_get_flag(&s.halt):  # the walk ends: claim nothing more
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
