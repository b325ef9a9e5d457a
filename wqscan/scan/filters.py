"""Which names are in scope: include and ignore patterns, and `.gitignore` files.

Patterns use gitignore syntax. A line becomes a `Rule` (`parse_rule`); a rule's
glob is matched, as git's wildmatch does with a pathname, against the entry's
name when the pattern holds no `/`, else against its path relative to the
directory the rule belongs to (the watch root, or the `.gitignore`'s directory).
Both scanner twins evaluate the same rules: the pure one through `glob_regex`,
the compiled one with its own matcher; user patterns are validated by pathspec.

How an entry is judged (its ancestors already passed, or it would not be seen):
- ignored if the last watch ignore rule that matches it is not negated;
- else, deepest `.gitignore` first, the last matching rule of the first file that
  has one decides;
- a file is included if there are no include patterns, or the last include rule
  matching the file or one of its ancestor directories is not negated.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

from ..errors import UsageError

if TYPE_CHECKING:
    import pathspec

GITIGNORE = ".gitignore"


class Rule(NamedTuple):
    """One pattern line, parsed."""

    glob: str  # matched against the name, or the relative path when anchored
    negate: bool
    dir_only: bool
    anchored: bool


_GITIGNORE_MAX = 1 << 20  # bytes of a .gitignore that are read
MAX_RULE_BYTES = 1024  # a longer pattern or .gitignore line is not a rule (as in ext/)


def parse_rule(line: str) -> Rule | None:
    """Parse one gitignore line; None for blank lines, comments, lines git ignores and
    lines longer than MAX_RULE_BYTES."""
    if len(line.encode("utf-8", "surrogateescape")) > MAX_RULE_BYTES:
        return None
    s = line.rstrip("\r")
    end = len(s)
    while end and s[end - 1] == " " and not _escaped(s, end - 1):
        end -= 1
    s = s[:end]
    if not s or s[0] == "#":
        return None
    negate = s[0] == "!"
    if negate:
        s = s[1:]
    dir_only = s.endswith("/")
    s = s.rstrip("/")
    anchored = "/" in s
    if s.startswith("/"):
        s = s[1:]
    if not s or _escaped(s, len(s)) or not _ranges_ok(s):
        return None
    return Rule(s, negate, dir_only, anchored)


def _escaped(s: str, i: int) -> bool:
    """Whether position i of s follows an odd run of backslashes."""
    n = 0
    while i - n - 1 >= 0 and s[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _ranges_ok(glob: str) -> bool:
    """False when a bracket expression holds a reversed range (git drops such lines)."""
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            end, items, _ = _bracket(glob, i)
            if end < 0:
                i += 1
                continue
            if any(lo > hi for lo, hi in items if lo != "class"):
                return False
            i = end
            continue
        i += 1
    return True


_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \t", "cntrl": "\x00-\x1f\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": " \t\n\r\x0b\x0c", "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


def _bracket(glob: str, i: int) -> tuple[int, list, bool]:
    """Parse the bracket expression at glob[i] == '['.

    Returns (index after it, items, negated) with items as (lo, hi) code point pairs
    or ("class", name); (-1, [], False) when it is not closed (then '[' is literal).
    """
    j = i + 1
    negated = j < len(glob) and glob[j] in "!^"
    if negated:
        j += 1
    items: list = []
    first = True
    while j < len(glob):
        c = glob[j]
        if c == "]" and not first:
            return j + 1, items, negated
        first = False
        if c == "[" and glob.startswith("[:", j):
            close = glob.find(":]", j + 2)
            name = glob[j + 2:close] if close >= 0 else ""
            if name in _CLASSES:
                items.append(("class", name))
                j = close + 2
                continue
        if c == "\\" and j + 1 < len(glob):
            j += 1
            c = glob[j]
        lo = c
        if j + 2 < len(glob) and glob[j + 1] == "-" and glob[j + 2] != "]":
            hi = glob[j + 2]
            j += 3
            if hi == "\\" and j < len(glob):
                hi = glob[j]
                j += 1
            items.append((lo, hi))
            continue
        items.append((lo, lo))
        j += 1
    return -1, [], False


def _bracket_regex(glob: str, i: int) -> tuple[int, str]:
    """(index after it, a regex for one character) of the bracket expression at glob[i];
    (-1, "") when it is not closed (then '[' is literal)."""
    end, items, negated = _bracket(glob, i)
    if end < 0:
        return -1, ""
    parts = []
    for lo, hi in items:
        if lo == "class":
            parts.append(_CLASSES[hi])
        elif lo <= hi:  # a reversed range holds nothing
            parts.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    body = "".join(parts)
    if negated:
        return end, f"[^/{body}]"
    return end, (f"(?!/)[{body}]" if body else "(?!)")


def glob_regex(glob: str) -> str:
    """A Python regex that fullmatches exactly what the glob matches (pathname mode)."""
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        elif c == "*":
            j = i
            while j < n and glob[j] == "*":
                j += 1
            at_start = i == 0 or glob[i - 1] == "/"
            if j - i >= 2 and at_start and (j == n or glob[j] == "/"):
                if j == n:
                    out.append(".*")
                    i = j
                else:
                    out.append("(?:.*/)?")  # "**/": any leading directories, or none
                    i = j + 1
            else:
                out.append("[^/]*")
                i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end, one = _bracket_regex(glob, i)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            out.append(one)
            i = end
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


# Results of _wild: git's wildmatch aborts, which keep patterns such as "*a*a*a*a*b"
# against a long name from backtracking through every way of placing their stars.
_MATCH, _NOMATCH, _ABORT_ALL, _ABORT_TO_STARSTAR = 1, 0, -1, -2
_STAR_RUNS_FOR_REGEX = 2  # globs with more runs of '*' are matched by _wild


def _wild(g: str, p: int, t: str, i: int) -> int:
    """Match g[p:] against t[i:] (pathname mode), as ext/wq_match.h's wq_match_from."""
    n, m = len(g), len(t)
    while p < n:
        c = g[p]
        if c != "*" and i >= m:
            return _ABORT_ALL  # the text ran out: no later start can match either
        if c == "\\" and p + 1 < n:
            if t[i] != g[p + 1]:
                return _NOMATCH
            p, i = p + 2, i + 1
            continue
        if c == "?":
            if t[i] == "/":
                return _NOMATCH
            p, i = p + 1, i + 1
            continue
        if c == "[":
            end, one = _bracket_regex(g, p)
            if end >= 0:
                if re.fullmatch(one, t[i], re.S) is None:
                    return _NOMATCH
                p, i = end, i + 1
                continue
            if t[i] != "[":
                return _NOMATCH
            p, i = p + 1, i + 1
            continue
        if c == "*":
            q = p
            while q < n and g[q] == "*":
                q += 1
            if q - p >= 2 and (p == 0 or g[p - 1] == "/") and (q == n or g[q] == "/"):
                if q == n:
                    return _MATCH
                s = i
                while True:  # "**/": any leading directories, or none
                    r = _wild(g, q + 1, t, s)
                    if r != _NOMATCH and r != _ABORT_TO_STARSTAR:
                        return r
                    s = t.find("/", s)
                    if s < 0:
                        return _ABORT_ALL
                    s += 1
            if q == n:
                return _ABORT_TO_STARSTAR if t.find("/", i) >= 0 else _MATCH
            s = i
            while True:
                r = _wild(g, q, t, s)
                if r != _NOMATCH:
                    return r
                if s >= m:
                    return _ABORT_ALL
                if t[s] == "/":
                    return _ABORT_TO_STARSTAR  # a '*' met a '/': only an enclosing "**" goes on
                s += 1
        if t[i] != c:
            return _NOMATCH
        p, i = p + 1, i + 1
    return _MATCH if i == m else _NOMATCH


def glob_matcher(glob: str) -> Callable[[str], bool]:
    """A function telling whether the glob matches the whole of a subject: a compiled regex
    for plain globs, the abort-aware matcher for globs with many stars (where a regex
    engine's backtracking could take hours on one long name)."""
    if len(re.findall(r"\*+", glob)) <= _STAR_RUNS_FOR_REGEX:
        fullmatch = re.compile(glob_regex(glob), re.S).fullmatch
        return lambda subject: fullmatch(subject) is not None
    return lambda subject: _wild(glob, 0, subject, 0) == _MATCH


class RuleSet:
    """The rules of one source (a watch's list, or one `.gitignore`), compiled for Python."""

    __slots__ = ("rules", "compiled")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self.compiled = tuple((glob_matcher(r.glob), r.negate, r.dir_only, r.anchored)
                              for r in self.rules)

    def last(self, name: str, path: str, is_dir: bool) -> int:
        """Index of the last rule matching the entry (`path` relative to the rules' base);
        -1 if none."""
        for k in range(len(self.compiled) - 1, -1, -1):
            match, _, dir_only, anchored = self.compiled[k]
            if dir_only and not is_dir:
                continue
            if match(path if anchored else name):
                return k
        return -1

    def negated(self, k: int) -> bool:
        return self.compiled[k][1]


def rules_of(lines: Iterable[str]) -> list[Rule]:
    """The rules of a sequence of lines (blank, comment and dropped lines left out)."""
    return [r for r in map(parse_rule, lines) if r is not None]


def read_gitignore(dir_fd: int) -> bytes | None:
    """The contents of the .gitignore in the open directory `dir_fd` (at most its first
    MiB); None when it cannot be read, which makes it a file without rules."""
    try:
        fd = os.open(GITIGNORE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read(_GITIGNORE_MAX)
    except OSError:
        return None


class Matcher:
    """Matches relative paths against gitignore-syntax patterns (pathspec), for the
    places outside the walk: priority rules."""

    def __init__(self, spec: "pathspec.GitIgnoreSpec") -> None:
        self.spec = spec

    def __call__(self, path: str) -> bool:
        return bool(self.spec.match_file(path))


def check_patterns(patterns: Iterable[str], what: str = "pattern") -> None:
    """Refuse patterns that are empty, comments, or can match nothing (the scan's check;
    pathspec, slow to import, validates them further when a watch is added)."""
    for p in patterns:
        if len(p.encode("utf-8", "surrogateescape")) > MAX_RULE_BYTES:
            raise UsageError(f"bad {what} '{p[:40]}'...: longer than {MAX_RULE_BYTES} bytes")
        if not p.strip() or "\0" in p or p.strip() == "!" or p.lstrip().startswith("#") \
                or parse_rule(p) is None:
            raise UsageError(f"bad {what} '{p}': empty, a comment, or it can match nothing")


def compile_patterns(patterns: Iterable[str], what: str = "pattern") -> Matcher:
    """Validate gitignore-syntax patterns; a bad one raises a UsageError naming it."""
    import pathspec  # only when patterns are added or priorities applied

    lines = list(patterns)
    check_patterns(lines, what)
    for p in lines:
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except Exception as e:  # pathspec raises several types for one bad line
            raise UsageError(f"bad {what} '{p}': {e}") from None
    return Matcher(pathspec.GitIgnoreSpec.from_lines(lines))


def first_match(rules: Iterable[tuple[Matcher, int]], rel: str, default: int) -> int:
    """The value of the first rule whose pattern matches `rel`, else `default`."""
    for matches, value in rules:
        if matches(rel):
            return value
    return default
