# Included by _scan_c.pyx: the snapshot blob codec (encode_entries, decode_entries and their C helpers).

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
