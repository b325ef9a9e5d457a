# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""Compiled scanner: walks a tree directory by directory and diffs it with the snapshot.

Twin of `wqscan/_scan_py.py` (same names, same behaviour, same blob layout).

Worker threads (`params.threads`) take directories from a heap ordered by key, open them,
read them with getdents64 (or take their names from the directory cache), apply the
filters, stat the files and hash those changed since the last scan (all of them on a first
scan: `eager_from_ns`); all in C without the GIL. The calling thread takes the directories
in key order, the order of the snapshot rows, merges each listing with its row (taking the
hashes it needs from the workers; one it does not need is dropped uncounted) and hands
Python only what changed. A directory waited for and not yet started is listed by the
calling thread itself, and workers stop getting ahead once a budget of listed entries is
reached: memory stays bounded by the directories in flight, not by the tree.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memchr, strchr, strlen
from libc.errno cimport errno, ENOENT, ENOTDIR, ELOOP, ENOMEM, EAGAIN
from posix.resource cimport RLIMIT_NOFILE, getrlimit, rlimit
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals

import bisect as _bisect
import os as _os
import stat as _stat

import xxhash._xxhash as _xxhash_c

from wqscan.scan.records import (BLOB_VERSION, NOT_UTF8, RACY_NS, Change, DirResult,
                            ScanTotals, SnapEntry)
from wqscan.scan.filters import Rule
from wqscan.scan.hashing import read_digest
from wqscan.scan.listings import seed

__all__ = ["walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules"]


include "decl.pxi"
include "records.pxi"
include "jobs.pxi"
include "rules.pxi"
include "hashing.pxi"
include "listing.pxi"
include "blob.pxi"
include "match.pxi"


# -- the walk ------------------------------------------------------------------------------

cdef class _Walker:
    """One walk: worker threads list directories; this thread merges them in key order."""

    cdef Shared s
    cdef object hooks
    cdef object rows
    cdef object row
    cdef object interrupt  # raised by a signal handler while this thread hashed, to re-raise
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
        self.s.eager = params.eager_from_ns is not None and self.threaded and HAVE_XXH
        self.s.eager_from = params.eager_from_ns if self.s.eager else 0
        self.rbuf = <char *>malloc(READ_SIZE)
        self.dents = <char *>malloc(DENTS_SIZE)
        if self.rbuf == NULL or self.dents == NULL:
            raise MemoryError()
        self.xstate = wq_xxh_create() if HAVE_XXH else NULL
        self.rows = iter(hooks.rows())
        self.row = next(self.rows, None)
        self.s.max_held_fds = held_fd_budget()
        self.s.progress_ns = params.progress_ns
        self.s.next_progress = wq_clock_ns(1) + self.s.progress_ns
        self.s.next_signals = wq_clock_ns(1) + SIGNALS_NS
        self.s.main_thread = pthread_self()
        self.s.walker = <void *>self
        load_listings(self, params)

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
        free(self.s.cached)
        free(self.s.cache_buf)
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
        wq_set_flag(&self.s.halt)  # a worker hashing a big file stops mid-file
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
        root.fp = self.s.seed
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
            pass_rows(self, None)
            forget_listings(self)
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
                while j.state != DONE and not self.s.oom and not wq_get_flag(&self.s.halt):
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
                waiting = j.state != DONE and not self.s.oom and not wq_get_flag(&self.s.halt)
                pthread_mutex_unlock(&self.s.mu)
            self._raise_interrupt()
            if waiting:
                self._tick()
        if self.s.oom:
            raise MemoryError("the scanner ran out of memory")
        return 0

    cdef void _between_reads(self) noexcept:
        """Called between two reads of a big file this thread hashes: signals first (a
        handler's exception, KeyboardInterrupt say, is kept and the walk halts: the read
        stops and `_raise_interrupt` raises it), then progress."""
        if self.interrupt is not None:
            return
        try:
            PyErr_CheckSignals()
            self._tick()
        except BaseException as e:
            self.interrupt = e
            wq_set_flag(&self.s.halt)

    cdef int _raise_interrupt(self) except -1:
        """Raise what a signal handler raised while this thread was hashing."""
        if self.interrupt is not None:
            e, self.interrupt = self.interrupt, None
            raise e
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
        pass_rows(self, key)
        try:
            if not j.virtual:
                self._wait(j)
            report_listing(self, j, rel)
            record_listing(self, j, key)
            if j.err:
                if j.rellen == 0:
                    raise OSError(j.err, errtext(j.err), self.s.root.decode())
                if not gone(j.err):
                    _bisect.insort(self.kept, key)
                return
            if not j.virtual and not 0 <= j.scope_idx < self.s.nscope:
                self.dirs += 1  # a directory scanned whole: not an ancestor of --path
            if j.has_git:
                self.hooks.repo(rel)
            self._merge(j, rel, key)
            report_listing(self, j, rel)  # what hashing during the merge added
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
                # a directory a worker still lists (a signal cut the wait for it short) is
                # freed by __dealloc__, once _stop has joined the workers
                if j.state != CLAIMED:
                    job_free(&self.s, j)
                pthread_mutex_unlock(&self.s.mu)

    cdef _warn(self, str rel, str message, int err=0):
        self.errors += 1
        self.hooks.warn(rel, message, err)

    cdef _merge(self, Job *j, str rel, str key):
        """Merge one directory's listing with its snapshot row; emit what changed."""
        cdef Old *olds = NULL
        cdef int nold = 0, i = 0, k = 0, c
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
        blob = take_row(self, key)
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
                if self._merge_listed(j, rel, key, e, o, &out, changes, &dirfd):
                    dirty = True
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

    cdef bint _merge_listed(self, Job *j, str rel, str key, Ent *e, Old *o, Buf *out,
                            list changes, int *dirfd) except -1:
        """One listed file against its snapshot entry `o` (NULL: none): the entry it
        leaves in `out`, the change it makes; whether the directory's row changed. A
        file whose stat data match is taken as unchanged; others are hashed."""
        cdef int outcome
        cdef char *arena = j.arena
        if o != NULL and not o.racy and o.size == e.size and o.mtime == e.mtime and (
                self.minimal or (o.ctime == e.ctime and o.ino == ident(e))):
            put_old(out, o)
            return False
        outcome = self._hash(j, rel, e, dirfd)
        if outcome == H_OK:
            put_entry(out, arena + e.name, e.nlen, e.mtime > self.s.racy_from, e.size,
                      e.mtime, e.ctime, ident(e), e.hash)
            if o == NULL:
                changes.append(Change("ingest", key + (arena + e.name)[:e.nlen].decode(),
                                      e.size, e.mtime, ident(e), e.hash[:16], None))
            elif o.size != e.size or memcmp(o.hash, e.hash, 16) != 0:
                changes.append(Change("update", key + (arena + e.name)[:e.nlen].decode(),
                                      e.size, e.mtime, ident(e), e.hash[:16], o.hash[:16]))
            return True
        if outcome == H_VANISHED:
            if o != NULL:
                changes.append(Change("delete", key + o.name[:o.nlen].decode(), o.size,
                                      o.mtime, o.ino, o.hash[:16], None))
            return o != NULL
        if o != NULL:
            put_old(out, o)  # deferred or unreadable: the snapshot keeps what it had
        return False

    cdef int _hash(self, Job *j, str rel, Ent *e, int *dirfd) except -1:
        """Hash a file the workers did not hash (or take their result), recording the
        outcome in the job."""
        if e.hstate == H_AHEAD:
            j.hashed += 1
            j.bytes_hashed += e.nread
            e.hstate = H_OK
        if e.hstate != H_NONE:
            return e.hstate
        if not HAVE_XXH:
            return hash_with_python(self, j, rel, e)
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
            self._raise_interrupt()
        return e.hstate

    def _reading(self, total, chunk):
        wq_add_bytes(&self.s.read_bytes, chunk)
        if total >= READ_SIZE:  # a big file: progress while it is read
            self._tick()


def walk(params, hooks):
    """Walk the tree under `params.root` (or its `scope`), emitting each changed directory."""
    return _Walker(params, hooks).run()


include "reporting.pxi"
include "dircache.pxi"
