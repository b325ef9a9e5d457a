# Included at the end of _scan_c.pyx (they take the walker): what the calling thread
# reports of a listing, the snapshot row of a directory visited and those the walk passed
# without a visit, and hashing through xxhash's Python API.

cdef report_listing(_Walker self, Job *j, str rel):
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
            self._warn((rel + "/" if rel else "") + _os.fsdecode(text), NOT_UTF8)
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


cdef take_row(_Walker self, str key):
    """The snapshot row of the directory being visited, if it has one."""
    if self.row is None or self.row[0] != key:
        return None
    blob = self.row[1]
    self.row = next(self.rows, None)
    return blob


cdef pass_rows(_Walker self, str until):
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


cdef int hash_with_python(_Walker self, Job *j, str rel, Ent *e) except -1:
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
        digest, total = read_digest(f, self._reading)
        after = _os.fstat(f)
    except OSError as err:  # as the pure twin: a warning, and the entry stays as it was
        warn_child(&self.s, j, W_READ, err.errno, j.arena + e.name, e.nlen)
        return H_FAILED
    finally:
        _os.close(f)
    j.hashed += 1
    j.bytes_hashed += total
    if total != e.size or after.st_size != e.size or after.st_mtime_ns != e.mtime:
        j.deferred += 1
        return H_DEFERRED
    memcpy(e.hash, <const char *>digest, 16)
    return H_OK
