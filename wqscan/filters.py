"""Which names are in scope: include and ignore patterns, and `.gitignore` files.

Patterns use gitignore syntax (pathspec's GitIgnoreSpec) against the path
relative to the watch root with `/` separators; a directory is tested with a
trailing `/`, so `build/` prunes the directory and everything below it.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable

import pathspec

from .errors import UsageError

GITIGNORE = ".gitignore"


class Matcher:
    """Matches paths against gitignore-syntax patterns: true when the patterns select it."""

    def __init__(self, spec: pathspec.GitIgnoreSpec) -> None:
        self.spec = spec
        parts = [p.regex.pattern for p in spec.patterns if p.include is not None]
        negated = any(p.include is False for p in spec.patterns)
        # Without negations the answer is "any pattern matches": one regex instead of many.
        self.search = None if negated or not parts else re.compile(
            "|".join(f"(?:{_GROUP.sub('(?:', r)})" for r in parts)).search

    def __call__(self, path: str) -> bool:
        if self.search is not None:
            return self.search(path) is not None
        return bool(self.spec.match_file(path))


_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


def compile_patterns(patterns: Iterable[str], what: str = "pattern") -> Matcher:
    """Compile gitignore-syntax patterns; a bad one raises a UsageError naming it."""
    lines = list(patterns)
    for p in lines:
        if not p.strip() or "\0" in p or p.strip() == "!":
            raise UsageError(f"bad {what} {p!r}: empty or not a pattern")
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except Exception as e:  # pathspec raises several types for one bad line
            raise UsageError(f"bad {what} {p!r}: {e}") from None
    return Matcher(pathspec.GitIgnoreSpec.from_lines(lines))


def first_match(rules: Iterable[tuple[Matcher, int]], rel: str, default: int) -> int:
    """The value of the first rule whose pattern matches `rel`, else `default`."""
    for matches, value in rules:
        if matches(rel):
            return value
    return default


class Filters:
    """Decides, one directory at a time, which of its names are in scope."""

    def __init__(self, root: str, patterns: Iterable[str], ignores: Iterable[str],
                 use_gitignore: bool, warn: Callable[[str, str], None]) -> None:
        patterns = list(patterns)
        self.root = root
        self.include = compile_patterns(patterns) if patterns else None
        self.ignore = compile_patterns(ignores, "ignore pattern")
        self.use_gitignore = use_gitignore
        self.warn = warn
        self._gitignores: dict[str, pathspec.GitIgnoreSpec] = {}  # directory -> its file

    def verdicts(self, rel: str, names: list[str], is_dir: list[bool]) -> list[bool]:
        """True for each name of directory `rel` that passes every filter."""
        if self.use_gitignore and GITIGNORE in names and not is_dir[names.index(GITIGNORE)]:
            self._load_gitignore(rel)
        chain = self._chain(rel) if self._gitignores else []
        prefix = rel + "/" if rel else ""
        out = []
        for name, d in zip(names, is_dir):
            path = prefix + name + ("/" if d else "")
            out.append(self._keep(path, d, chain))
        return out

    def _keep(self, path: str, is_dir: bool, chain: list[tuple[int, pathspec.GitIgnoreSpec]]) -> bool:
        if self.ignore(path):
            return False
        for cut, spec in chain:
            hit = spec.check_file(path[cut:]).include
            if hit is not None:
                if hit:
                    return False
                break  # re-included by a negation in the deepest file that speaks
        if not is_dir and self.include is not None:
            return self.include(path)
        return True

    def _chain(self, rel: str) -> list[tuple[int, pathspec.GitIgnoreSpec]]:
        """The .gitignore specs that apply in `rel`, deepest first, with the prefix length
        to cut from a root-relative path."""
        chain = []
        parts = rel.split("/") if rel else []
        for i in range(len(parts), -1, -1):
            d = "/".join(parts[:i])
            spec = self._gitignores.get(d)
            if spec is not None:
                chain.append((len(d) + 1 if d else 0, spec))
        return chain

    def _load_gitignore(self, rel: str) -> None:
        path = os.path.join(self.root, rel, GITIGNORE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            self.warn(os.path.join(rel, GITIGNORE), f"cannot read: {e.strerror}")
            return
        lines = []
        for line in text.splitlines():
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
                lines.append(line)
            except Exception:
                self.warn(os.path.join(rel, GITIGNORE), f"skipped a bad pattern: {line!r}")
        self._gitignores[rel] = pathspec.GitIgnoreSpec.from_lines(lines)
