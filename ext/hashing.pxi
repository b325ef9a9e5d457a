# Included by _scan_c.pyx: hashing a listed file with XXH3-128, and the budget of
# directories that wait open (worker threads; never touches Python).

# -- hashing and descriptors -------------------------------------------------------------

cdef int held_fd_budget() noexcept:
    """How many directories may wait open for their listing: a quarter of the descriptors
    the process may open (what else it holds stays well inside the rest), at most 4096."""
    cdef rlimit lim
    if getrlimit(RLIMIT_NOFILE, &lim) != 0:
        return 0
    return <int>max(0, min(<long long>lim.rlim_cur // 4 - 16, 4096))


cdef class _Walker


cdef int tick_while_hashing(Shared *s) noexcept nogil:
    """Between two reads of a file: on the calling thread, report progress and take the
    signals Python has caught (a Ctrl-C must not wait for a 16 GiB file); on any thread,
    whether the walk is ending. Returns 1 when the hash must stop."""
    cdef long long now
    if s.walker != NULL and pthread_equal(pthread_self(), s.main_thread):
        now = wq_clock_ns(1)
        if now >= s.next_progress or now >= s.next_signals:
            s.next_signals = now + SIGNALS_NS
            with gil:
                (<_Walker>s.walker)._between_reads()
    return wq_get_flag(&s.halt)


cdef int hash_file(Shared *s, int dirfd, const char *name, Ent *e, void *state,
                   char *rbuf) noexcept nogil:
    """XXH3-128 of one file into e.hash; returns the outcome (H_*), e.herr on failure."""
    cdef int f, flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
    cdef stat before, after
    cdef ssize_t got
    cdef int64_t total = 0
    cdef wq_h128 h
    if wq_get_flag(&s.halt):
        return H_HALTED
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
        if total >= READ_SIZE and tick_while_hashing(s):  # a big file, and the walk ends
            close(f)
            return H_HALTED
    fstat(f, &after)
    close(f)
    e.nread = total
    if total != e.size or after.st_size != e.size or ns(after.st_mtim) != e.mtime:
        return -H_DEFERRED  # read, but changing: deferred, and counted as hashed
    h = wq_xxh_digest(state)
    put_be(e.hash, h.high64)
    put_be(e.hash + 8, h.low64)
    return H_OK


cdef void hash_ahead(Shared *s, int fd, Ent *e, char *arena, void *xstate,
                     char *rbuf) noexcept nogil:
    """Hash one listed file on a worker, before the merge knows whether it needs the hash:
    a digest is kept (counted only if the merge takes it); any other outcome is left for
    the merge to meet again, with its warning and counters, if it hashes the file."""
    cdef int r = hash_file(s, fd, arena + e.name, e, xstate, rbuf)
    if r == H_OK:
        e.hstate = H_AHEAD
    elif r == H_HALTED:
        e.hstate = H_HALTED


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
    e.hstate = r  # H_HALTED: nothing counted; the walk raises before it merges the file
