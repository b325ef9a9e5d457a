/* wq_match.h: gitignore rules for the compiled scanner.
 *
 * The C side of wqscan/filters.py: `wq_parse_rule` turns one line into a rule the way
 * `parse_rule` does, and `wq_match` matches a glob against a name or relative path
 * exactly as the regex from `glob_regex` fullmatches it: `*` and `?` never cross '/',
 * `?` and bracket expressions take one UTF-8 code point, a `**` that fills a whole path
 * segment spans directories ("**" alone or at the end: anything; "**" + "/": any
 * leading directories, or none), `\x` is a literal x, an unclosed `[` is literal.
 */
#ifndef WQ_MATCH_H
#define WQ_MATCH_H

#include <stdint.h>
#include <string.h>

/* Length of the UTF-8 sequence at s (1 for a stray byte) and its code point. */
static inline int wq_u8(const char *s, const char *end, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    ptrdiff_t left = end - s;
    if (u[0] < 0x80 || left < 2) { *cp = u[0]; return 1; }
    if ((u[0] & 0xE0) == 0xC0 && (u[1] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); return 2;
    }
    if ((u[0] & 0xF0) == 0xE0 && left >= 3 && (u[1] & 0xC0) == 0x80 && (u[2] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    if ((u[0] & 0xF8) == 0xF0 && left >= 4 && (u[1] & 0xC0) == 0x80 && (u[2] & 0xC0) == 0x80
        && (u[3] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12)
              | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        return 4;
    }
    *cp = u[0];
    return 1;
}

/* Whether a whole buffer is valid UTF-8 (names that are not are skipped). */
static inline int wq_valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (c < 0x80) { i++; continue; }
        size_t len; uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)
            || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static int wq_in_class(const char *name, size_t n, uint32_t c) {
#define WQ_IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
    int lower = c >= 'a' && c <= 'z', upper = c >= 'A' && c <= 'Z', digit = c >= '0' && c <= '9';
    if (WQ_IS("alnum")) return lower || upper || digit;
    if (WQ_IS("alpha")) return lower || upper;
    if (WQ_IS("blank")) return c == ' ' || c == '\t';
    if (WQ_IS("cntrl")) return c < 0x20 || c == 0x7f;
    if (WQ_IS("digit")) return digit;
    if (WQ_IS("graph")) return c >= '!' && c <= '~';
    if (WQ_IS("lower")) return lower;
    if (WQ_IS("print")) return c >= ' ' && c <= '~';
    if (WQ_IS("punct")) return (c >= '!' && c <= '/') || (c >= ':' && c <= '@')
                               || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
    if (WQ_IS("space")) return c == ' ' || (c >= '\t' && c <= '\r');
    if (WQ_IS("upper")) return upper;
    if (WQ_IS("xdigit")) return digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    return -1;  /* not a class name */
#undef WQ_IS
}

/* Parse the bracket expression starting at p ('['). Returns the position after its ']'
 * or NULL when it is not closed. When cp is given, *hit tells whether cp is in the set;
 * *bad is set when a range is reversed. */
static const char *wq_bracket(const char *p, const char *end, uint32_t cp, int *hit, int *bad) {
    const char *q = p + 1;
    int negated = 0, first = 1, in = 0;
    uint32_t lo, hi;
    if (q < end && (*q == '!' || *q == '^')) { negated = 1; q++; }
    while (q < end) {
        if (*q == ']' && !first) {
            *hit = negated ? !in : in;
            return q + 1;
        }
        first = 0;
        if (*q == '[' && q + 1 < end && q[1] == ':') {
            const char *close = NULL;
            for (const char *r = q + 2; r + 1 < end; r++)
                if (r[0] == ':' && r[1] == ']') { close = r; break; }
            if (close) {
                int k = wq_in_class(q + 2, (size_t)(close - q - 2), cp);
                if (k >= 0) {
                    in |= k;
                    q = close + 2;
                    continue;
                }
            }
        }
        if (*q == '\\' && q + 1 < end) q++;
        q += wq_u8(q, end, &lo);
        if (q + 1 < end && *q == '-' && q[1] != ']') {
            q++;
            if (*q == '\\' && q + 1 < end) q++;
            q += wq_u8(q, end, &hi);
            if (lo > hi) *bad = 1;
            in |= cp >= lo && cp <= hi;
            continue;
        }
        in |= cp == lo;
    }
    return NULL;
}

/* Match results: git's wildmatch aborts, which keep patterns such as "*a*a*a*a*b"
   against a long name from backtracking through every way of placing their stars. */
#define WQ_MATCH 1
#define WQ_NOMATCH 0
#define WQ_ABORT_ALL (-1)        /* the text ran out: no later start can match either */
#define WQ_ABORT_TO_STARSTAR (-2) /* a '*' met a '/': only an enclosing "**" can go on */

static int wq_match_from(const char *pstart, const char *p, const char *pend,
                         const char *t, const char *tend) {
    uint32_t c;
    int hit, bad, r;
    while (p < pend) {
        if (*p != '*' && t >= tend) return WQ_ABORT_ALL;
        if (*p == '\\' && p + 1 < pend) {
            p++;
            int n = wq_u8(p, pend, &c);
            if (tend - t < n || memcmp(p, t, (size_t)n) != 0) return WQ_NOMATCH;
            p += n; t += n;
            continue;
        }
        if (*p == '?') {
            if (*t == '/') return WQ_NOMATCH;
            t += wq_u8(t, tend, &c);
            p++;
            continue;
        }
        if (*p == '[') {
            const char *q;
            if (*t != '/') {
                int n = wq_u8(t, tend, &c);
                hit = bad = 0;
                q = wq_bracket(p, pend, c, &hit, &bad);
                if (q) {
                    if (!hit) return WQ_NOMATCH;
                    p = q; t += n;
                    continue;
                }
            } else {
                hit = bad = 0;
                if (wq_bracket(p, pend, 0, &hit, &bad)) return WQ_NOMATCH;
            }
            /* not a bracket expression: a literal '[' */
            if (*t != '[') return WQ_NOMATCH;
            p++; t++;
            continue;
        }
        if (*p == '*') {
            const char *q = p;
            while (q < pend && *q == '*') q++;
            int at_start = p == pstart || p[-1] == '/';
            if (q - p >= 2 && at_start && (q == pend || *q == '/')) {
                if (q == pend) return WQ_MATCH;
                const char *s = t;
                for (;;) {  /* "**" + "/": any leading directories, or none */
                    r = wq_match_from(pstart, q + 1, pend, s, tend);
                    if (r != WQ_NOMATCH && r != WQ_ABORT_TO_STARSTAR) return r;
                    s = memchr(s, '/', (size_t)(tend - s));
                    if (!s) return WQ_ABORT_ALL;
                    s++;
                }
            }
            p = q;
            if (p == pend)
                return memchr(t, '/', (size_t)(tend - t)) ? WQ_ABORT_TO_STARSTAR : WQ_MATCH;
            for (const char *s = t;;) {
                r = wq_match_from(pstart, p, pend, s, tend);
                if (r != WQ_NOMATCH) return r;
                if (s >= tend) return WQ_ABORT_ALL;
                if (*s == '/') return WQ_ABORT_TO_STARSTAR;
                s += wq_u8(s, tend, &c);
            }
        }
        if (*t != *p) return WQ_NOMATCH;
        p++; t++;
    }
    return t == tend ? WQ_MATCH : WQ_NOMATCH;
}

/* Whether glob (pathname mode) matches the whole of text. */
static inline int wq_match(const char *glob, size_t glen, const char *text, size_t tlen) {
    return wq_match_from(glob, glob, glob + glen, text, text + tlen) == WQ_MATCH;
}

/* Whether a glob has no special character at all (then matching is a comparison). */
static inline int wq_literal(const char *g, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (g[i] == '*' || g[i] == '?' || g[i] == '[' || g[i] == '\\') return 0;
    return 1;
}

typedef struct {
    const char *glob;  /* points into the rule set's own copy of its lines */
    int len;
    unsigned char negate, dir_only, anchored, literal;
} wq_rule;

/* Parse one line as `parse_rule` does; 1 and *r filled, or 0 for no rule. */
#define WQ_MAX_RULE_BYTES 1024  /* a longer line is not a rule (as in wqscan/filters.py) */

static int wq_parse_rule(const char *s, size_t n, wq_rule *r) {
    if (n > WQ_MAX_RULE_BYTES) return 0;
    while (n && s[n - 1] == '\r') n--;
    while (n && s[n - 1] == ' ') {
        size_t k = 0;
        while (k + 1 < n && s[n - 2 - k] == '\\') k++;
        if (k % 2) break;  /* an escaped space stays */
        n--;
    }
    if (!n || s[0] == '#') return 0;
    r->negate = s[0] == '!';
    if (r->negate) { s++; n--; }
    r->dir_only = n && s[n - 1] == '/';
    while (n && s[n - 1] == '/') n--;
    r->anchored = memchr(s, '/', n) != NULL;
    if (n && s[0] == '/') { s++; n--; }
    if (!n) return 0;
    size_t k = 0;
    while (k < n && s[n - 1 - k] == '\\') k++;
    if (k % 2) return 0;  /* a dangling escape */
    for (size_t i = 0; i < n;) {  /* a reversed range drops the line, as in git */
        if (s[i] == '\\') { i += 2; continue; }
        if (s[i] == '[') {
            int hit = 0, bad = 0;
            const char *q = wq_bracket(s + i, s + n, 0, &hit, &bad);
            if (!q) { i++; continue; }
            if (bad) return 0;
            i = (size_t)(q - s);
            continue;
        }
        i++;
    }
    r->glob = s;
    r->len = (int)n;
    r->literal = (unsigned char)wq_literal(s, n);
    return 1;
}

/* Index of the last rule matching an entry (name, or path relative to the rules' base
 * for anchored rules), or -1. */
static int wq_last(const wq_rule *rules, int count, const char *name, size_t nlen,
                   const char *path, size_t plen, int is_dir) {
    for (int k = count - 1; k >= 0; k--) {
        const wq_rule *r = &rules[k];
        if (r->dir_only && !is_dir) continue;
        const char *t = r->anchored ? path : name;
        size_t tl = r->anchored ? plen : nlen;
        if (r->literal ? ((size_t)r->len == tl && memcmp(r->glob, t, tl) == 0)
                       : wq_match(r->glob, (size_t)r->len, t, tl))
            return k;
    }
    return -1;
}

#endif
