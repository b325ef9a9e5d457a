# Included by _scan_c.pyx: glue to the glob matcher of wq_match.h (glob_match, gitignore_rules, compiled rules).

def glob_match(glob, subject):
    """Whether a gitignore glob matches the whole of `subject` (a name or relative path)."""
    cdef bytes g = glob.encode("utf-8", "surrogateescape")
    cdef bytes t = subject.encode("utf-8", "surrogateescape")
    return bool(wq_match(g, len(g), t, len(t)))


def gitignore_rules(data):
    """The rules of a .gitignore file's contents, as the walk reads them."""
    cdef bytes raw = bytes(data)
    cdef char *text = <char *>malloc(len(raw) + 1)
    cdef GiNode *g
    cdef int i
    if text == NULL:
        raise MemoryError()
    memcpy(text, <const char *>raw, len(raw))
    g = rules_from_text(text, len(raw))
    if g == NULL:
        return []
    try:
        return [Rule(g.rules[i].glob[:g.rules[i].len].decode("utf-8", "surrogateescape"),
                     bool(g.rules[i].negate), bool(g.rules[i].dir_only),
                     bool(g.rules[i].anchored)) for i in range(g.count)]
    finally:
        free(g.rules)
        free(g.text)
        free(g)


cdef wq_rule *compile_rules(patterns, list keep, int *count) except? NULL:
    """Rules of a watch's pattern list; `keep` holds the bytes the globs point into."""
    cdef wq_rule *rules
    cdef int n = 0
    cdef bytes raw
    cdef wq_rule r
    count[0] = 0
    if not patterns:
        return NULL
    rules = <wq_rule *>malloc(len(patterns) * sizeof(wq_rule))
    if rules == NULL:
        raise MemoryError()
    for p in patterns:
        raw = p.encode("utf-8", "surrogateescape")
        keep.append(raw)
        if wq_parse_rule(raw, len(raw), &r):
            rules[n] = r
            n += 1
    count[0] = n
    return rules


cdef str errtext(int err):
    return strerror(err).decode("utf-8", "replace")
