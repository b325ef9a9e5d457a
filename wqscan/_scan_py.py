"""Pure-Python scanner: walks a tree directory by directory and diffs it with the snapshot.

Twin of `ext/_scan_c.pyx` (same names, same behaviour, same blob layout); the rest
of the package reaches either one through `wqscan._scan` only.

Directories are visited depth first with each listing sorted by key (a
directory's key is its path plus "/"), so they come in the byte order of the
snapshot's keys and one cursor over the snapshot rows (`hooks.rows()`) is
merge-joined with the walk: the row of each visited directory is merged with
its listing; a row the walk passes without visiting belongs to a directory that
is gone or out of scope, and its files are deleted, unless it lies below a
directory that could not be read. Only one directory's entries are in memory.
"""
from __future__ import annotations

import bisect
import errno
import os
import stat
import time
from typing import Iterator, NamedTuple

from .scan.filters import GITIGNORE, Rule, RuleSet, glob_matcher, read_gitignore, rules_of
from .scan.hashing import READ, read_digest
from .scan.links import beneath_stat, inside
from .scan.blobs import decode_entries, encode_entries
from .scan.listings import (HAS_GIT, HAS_GITIGNORE, KIND_DIR, KIND_FILE, Listing, chain,
    decode_listing, dir_stat, encode_listing, racy, seed)
from .scan.records import (NOT_UTF8, RACY_NS, Change, DirResult, ScanHooks, ScanParams,
    ScanTotals, SnapEntry)

__all__ = ["walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules"]

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

# entry kinds of a listing (a file's and a directory's as the directory cache holds them)
_FILE_K, _DIR_K, _OTHER_K = KIND_FILE, KIND_DIR, 3
# outcomes of hashing
_OK, _DEFERRED, _VANISHED, _FAILED = 0, 1, 2, 3
# a listed entry: name, kind, stat of a followed symlink's target (else None), followed?
_Listed = tuple[str, int, "os.stat_result | None", bool]


class _Job(NamedTuple):
    """A directory to visit."""

    rel: str  # relative path ("" for the root)
    depth: int
    scope: tuple[str, ...] = ()  # the --path components still to go down
    via_link: bool = False  # reached through a followed symlink
    chain: tuple = ()  # (dev, inode) of its ancestors, when following symlinks
    virtual: bool = False  # on the way to a --path that is not on disk
    gitignores: tuple = ()  # (base, RuleSet) of the .gitignore files in force, deepest first
    inc_best: int = -1  # best include rule an ancestor matched
    identity: tuple[int, int] | None = None  # (dev, inode) the parent's listing saw
    fp: int = 0  # fingerprint of the rules in force (scan/listings.py)

    @property
    def key(self) -> str:
        return self.rel + "/" if self.rel else ""


class _Selected(NamedTuple):
    """A listing reduced to what the scan looks at: files in scope by name (with their
    stat), names that could not be stat'ed, and the subdirectories to visit."""

    # name -> (stat, reached by a link, identity: its inode, or a followed link's own)
    files: dict[str, tuple[os.stat_result, bool, int]]
    unknown: set[str]  # in scope but not stat'able now: the snapshot entry stays
    children: list[tuple[str, bool, bool, tuple[int, int] | None]]  # name, via link,
    # virtual, identity


def _key(name: str, is_dir: bool) -> bytes:
    return name.encode() + b"/" if is_dir else name.encode()


def _identity(fd: int, name: str, target: os.stat_result | None) -> tuple[int, int]:
    """(st_dev, st_ino) of a subdirectory as listed (a followed link's: its target's);
    (0, 0), which no directory has, when it is no longer a directory."""
    if target is None:
        try:
            target = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return (0, 0)
        if not stat.S_ISDIR(target.st_mode):
            return (0, 0)
    return (target.st_dev, target.st_ino)


class _Walker:
    """One walk: an explicit stack of directories, merged with a cursor over the snapshot."""

    def __init__(self, params: ScanParams, hooks: ScanHooks) -> None:
        self.p = params
        self.hooks = hooks
        self.totals = ScanTotals()
        self.next_progress = time.monotonic_ns() + params.progress_ns
        self.settle_from = params.start_ns - params.settle_ns
        self.racy_from = params.start_ns - RACY_NS
        self.ignore = RuleSet(rules_of(params.ignore))
        self.include = RuleSet(rules_of(params.include)) if params.include else None
        self.rows: Iterator[tuple[str, bytes]] = iter(hooks.rows())
        self.row: tuple[str, bytes] | None = next(self.rows, None)
        self.kept: list[str] = []  # keys below which rows stay as they are (unreadable)
        self.cache = params.dircache and not params.follow_symlinks
        self.cached: Iterator[tuple[str, bytes]] = iter(hooks.listings() if self.cache else ())
        self.entry: tuple[str, bytes] | None = next(self.cached, None)

    def run(self) -> ScanTotals:
        stack = [_Job("", 0, self.p.scope, fp=seed(self.p))]
        while stack:
            job = stack.pop()
            self._pass_rows(job.key)
            self._dir(stack, job)
        self._pass_rows(None)
        self._cached_entry(None)
        return self.totals

    def _take(self, key: str) -> bytes | None:
        """The snapshot row of the directory being visited, if it has one."""
        if self.row is None or self.row[0] != key:
            return None
        blob = self.row[1]
        self.row = next(self.rows, None)
        return blob

    def _cached_entry(self, key: str | None) -> Listing | None:
        """The cache's entry for the directory `key` (None: none); the entries before it
        belong to directories not listed this time, and are forgotten."""
        while self.entry is not None and (key is None or self.entry[0] < key):
            self.hooks.listing(self.entry[0], None)
            self.entry = next(self.cached, None)
        if self.entry is None or self.entry[0] != key:
            return None
        blob = self.entry[1]
        self.entry = next(self.cached, None)
        found = decode_listing(blob)
        if found is None:
            self.hooks.listing(key, None)
        return found

    def _pass_rows(self, until: str | None) -> None:
        """Rows before `until` (None: all) were not visited: delete their files, unless
        they lie below a directory that could not be read."""
        while self.row is not None and (until is None or self.row[0] < until):
            key, blob = self.row
            self.row = next(self.rows, None)
            i = bisect.bisect_right(self.kept, key) - 1
            if i >= 0 and key.startswith(self.kept[i]):
                continue
            changes = [Change("delete", key + e.name, e.size, e.mtime_ns, e.ino, e.hash, None)
                       for e in decode_entries(blob)]
            self.hooks.emit(DirResult(key, None, 0, changes, [key]))

    def _tick(self, hashing: int = 0) -> None:
        """Report progress when its interval has passed (`hashing`: bytes of a file read
        so far)."""
        now = time.monotonic_ns()
        if now >= self.next_progress:
            self.next_progress = now + self.p.progress_ns
            t = self.totals
            self.hooks.progress(t.files, t.dirs, t.bytes_hashed + hashing)

    def _warn(self, rel: str, message: str, err: int = 0) -> None:
        self.totals.errors += 1
        self.hooks.warn(rel, message, err)

    def _keep(self, key: str) -> None:
        bisect.insort(self.kept, key)

    # -- one directory ---------------------------------------------------------------

    def _dir(self, stack: list[_Job], job: _Job) -> None:
        rel, key = job.rel, job.key
        path = os.path.join(self.p.root, rel) if rel else self.p.root
        listing: list[_Listed] = []
        fd = -1
        if not job.virtual:
            try:
                fd = os.open(path, _OPEN_DIR | (0 if job.via_link else os.O_NOFOLLOW))
            except OSError as e:
                if not rel:
                    raise
                if e.errno not in _GONE:
                    self._warn(rel, f"cannot open directory: {e.strerror}", e.errno)
                    self._keep(key)
                return  # a vanished directory: its rows are passed, so deleted
        try:
            if fd >= 0:
                try:
                    st = os.fstat(fd)
                    # The path was resolved again after the parent was listed: if an ancestor
                    # was swapped for a symlink meanwhile, it led elsewhere. Read only what
                    # was listed.
                    if job.identity is not None and (st.st_dev, st.st_ino) != job.identity:
                        self._warn(rel, "directory replaced while being scanned (a parent "
                                   "swapped for a symlink?); left as it was")
                        self._keep(key)
                        return
                    if self.p.follow_symlinks:
                        job = job._replace(chain=job.chain + ((st.st_dev, st.st_ino),))
                    listing, gitignores, fp = self._list(fd, st, job, path)
                    job = job._replace(gitignores=gitignores, fp=fp)
                except OSError as e:
                    self._warn(rel, f"cannot list directory: {e.strerror}", e.errno)
                    self._keep(key)
                    return
                if not job.scope:  # a directory scanned whole: not an ancestor of --path
                    self.totals.dirs += 1
            self._merge(stack, fd, job, self._take(key), listing)
            if fd >= 0:
                self._tick()
        finally:
            if fd >= 0:
                os.close(fd)

    def _list(self, fd: int, st: os.stat_result, job: _Job, path: str
              ) -> tuple[list[_Listed], tuple, int]:
        """Names of one directory with their kind, filtered, sorted by key; symlinks are
        resolved if followed. Taken from the directory cache when its entry holds (and
        recorded there when listed anew). Also returns the .gitignore rules in force below
        it, and their fingerprint."""
        rel, key = job.rel, job.key
        cacheable = self.cache and not job.scope
        old = self._cached_entry(key) if cacheable else None
        known = old is not None  # an entry to replace or forget if listed anew
        if old is not None and old.stat == dir_stat(st):
            raw, flags, warned = [(n, k, None, False) for n, k in old.names], old.flags, False
        else:
            old = None
            raw, flags, warned = self._read(fd, job, path)
        if flags & HAS_GIT:
            self.hooks.repo(rel)
        gitignores, fp = job.gitignores, job.fp
        text = read_gitignore(fd) if self.p.use_gitignore and flags & HAS_GITIGNORE else None
        if text is not None:
            fp = chain(fp, text)
            rules = gitignore_rules(text)
            if rules:
                gitignores = ((key, RuleSet(rules)),) + gitignores
        if old is not None:
            if old.fingerprint == fp:
                self.totals.filtered += old.filtered
                return raw, gitignores, fp
            raw, flags, warned = self._read(fd, job, path)
        listing = [r for r in raw if r[1] != _OTHER_K and self._passes(
            r[0], key + r[0], r[1] == _DIR_K, gitignores, job.inc_best)]
        filtered = len(raw) - len(listing)
        self.totals.filtered += filtered
        if cacheable:
            entry = None if warned or racy(st, self.racy_from) else encode_listing(
                dir_stat(st), fp, flags, filtered, [(r[0], r[1]) for r in listing])
            if entry is not None or known:
                self.hooks.listing(key, entry)
        return listing, gitignores, fp

    def _read(self, fd: int, job: _Job, path: str) -> tuple[list[_Listed], int, bool]:
        """The names of the open directory, sorted by key, with their kind; the HAS_*
        flags; whether a name was skipped with a warning. In an ancestor of --path only
        the name on the way is listed (the rest is neither counted nor warned about), and
        what makes a project root or rules below it is noted."""
        target = job.scope[0] if job.scope else None
        raw: list[_Listed] = []
        flags, warned = 0, False
        with os.scandir(fd) as it:
            for e in it:
                name = e.name
                if name == ".git":
                    flags |= HAS_GIT
                elif name == GITIGNORE and e.is_file(follow_symlinks=False):
                    flags |= HAS_GITIGNORE
                if target is not None and name != target:
                    continue
                try:
                    name.encode()
                except UnicodeEncodeError:
                    self._warn(f"{job.rel}/{name}" if job.rel else name, NOT_UTF8)
                    warned = True
                    continue
                if e.is_dir(follow_symlinks=False):
                    raw.append((name, _DIR_K, None, False))
                elif e.is_file(follow_symlinks=False):
                    raw.append((name, _FILE_K, None, False))
                elif e.is_symlink():
                    raw.append(self._link(job.rel, path, name, job.chain))
                else:
                    raw.append((name, _OTHER_K, None, False))
        raw.sort(key=lambda r: _key(r[0], r[1] == _DIR_K))
        return raw, flags, warned

    def _passes(self, name: str, path: str, is_dir: bool, gitignores: tuple,
                inc_best: int) -> bool:
        k = self.ignore.last(name, path, is_dir)
        if k >= 0 and not self.ignore.negated(k):
            return False
        for base, rules in gitignores:
            k = rules.last(name, path[len(base):], is_dir)
            if k >= 0:
                if not rules.negated(k):
                    return False
                break
        if not is_dir and self.include is not None:
            k = max(inc_best, self.include.last(name, path, False))
            return k >= 0 and not self.include.negated(k)
        return True

    def _link(self, rel: str, path: str, name: str, chain: tuple) -> _Listed:
        """Classify a symlink: followed to a file or directory inside the root, or skipped."""
        skip = (name, _OTHER_K, None, False)
        if not self.p.follow_symlinks:
            return skip
        try:
            target = os.path.realpath(os.path.join(path, name), strict=True)
        except OSError:
            return skip  # dangling or a loop
        if not inside(target, self.p.root):
            self.hooks.warn(os.path.join(rel, name),
                            "symlink leads outside the watch root; skipped")
            return skip
        st = beneath_stat(self.p.root, target[len(self.p.root):])
        if st is None:
            return skip
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in chain:
                return skip  # a link to one of its own ancestors
            return (name, _DIR_K, st, True)
        if stat.S_ISREG(st.st_mode):
            return (name, _FILE_K, st, True)
        return skip

    def _merge(self, stack: list[_Job], fd: int, job: _Job, blob: bytes | None,
               listing: list[_Listed]) -> None:
        """Merge one directory's listing with its snapshot row; emit what changed and push
        the subdirectories to visit."""
        old = {e.name: e for e in decode_entries(blob or b"")}
        chosen = self._select(fd, job, listing)
        out, changes, dirty = self._diff(fd, job, old, chosen)
        key = job.key
        if dirty:
            self.hooks.emit(DirResult(key, encode_entries(out), len(out), changes, []) if out
                            else DirResult(key, None, 0, changes, [key] if old else []))
        for name, linked, virtual, identity in reversed(chosen.children):
            best = job.inc_best
            if self.include is not None and not virtual:
                best = max(best, self.include.last(name, key + name, True))
            stack.append(_Job(key + name, job.depth + 1, job.scope[1:], linked, job.chain,
                              virtual, job.gitignores, best, identity, job.fp))

    def _select(self, fd: int, job: _Job, listing: list[_Listed]) -> _Selected:
        """Apply scope, depth, type and size to a listing, stat'ing the files."""
        p, scope, rel = self.p, job.scope, job.rel
        files_ok = p.max_depth is None or job.depth + 1 <= p.max_depth
        dirs_ok = p.max_depth is None or job.depth + 2 <= p.max_depth
        target = scope[0] if scope else None  # with --path: the one name looked at here
        chosen = _Selected({}, set(), [])
        for name, kind, st, linked in listing:
            if target is not None and name != target:
                continue
            if kind == _DIR_K:
                if dirs_ok:
                    chosen.children.append((name, linked or job.via_link, False,
                                            _identity(fd, name, st if linked else None)))
                else:
                    self.totals.filtered += 1
                continue
            if len(scope) >= 2:
                continue  # --path goes below this name, which is not a directory
            if not files_ok:
                self.totals.filtered += 1
                continue
            if st is None:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in _GONE:
                        chosen.unknown.add(name)
                        self._warn(os.path.join(rel, name), f"cannot stat: {e.strerror}",
                                   e.errno)
                    continue
            if not stat.S_ISREG(st.st_mode) or (p.max_size is not None and st.st_size > p.max_size):
                self.totals.filtered += 1
                continue
            ident = st.st_ino
            if linked:  # a followed link's identity is its own, not its target's
                try:
                    ident = os.stat(name, dir_fd=fd, follow_symlinks=False).st_ino
                except OSError:  # the link went away
                    self.totals.filtered += 1
                    continue
            self.totals.files += 1
            chosen.files[name] = (st, linked, ident)
        if len(scope) >= 2 and not chosen.children:
            chosen.children.append((target, False, True, None))  # the scoped dir is missing
        return chosen

    def _diff(self, fd: int, job: _Job, old: dict[str, SnapEntry], chosen: _Selected
              ) -> tuple[list[SnapEntry], list[Change], bool]:
        """The directory's new snapshot entries, its changes, and whether either changed:
        a file whose stat data match the snapshot is taken as unchanged, others are hashed."""
        p, scope, key = self.p, job.scope, job.key
        target = scope[0] if scope else None
        out: list[SnapEntry] = []
        changes: list[Change] = []
        dirty = False
        for name in sorted(old.keys() | chosen.files.keys(), key=str.encode):
            o = old.get(name)
            if (target is not None and (name != target or len(scope) >= 2)) \
                    or name in chosen.unknown:
                if o is not None:
                    out.append(o)
                continue
            n = chosen.files.get(name)
            if n is None:
                assert o is not None
                dirty = True
                changes.append(Change("delete", key + name, o.size, o.mtime_ns, o.ino, o.hash,
                                      None))
                continue
            st, linked, ident = n
            if o is not None and not o.racy and o.size == st.st_size \
                    and o.mtime_ns == st.st_mtime_ns and (
                        p.minimal or (o.ctime_ns == st.st_ctime_ns and o.ino == ident)):
                out.append(o)
                continue
            outcome, digest = self._hash(fd, job.rel, name, st, linked)
            if outcome == _OK:
                dirty = True
                out.append(SnapEntry(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                     ident, digest, st.st_mtime_ns > self.racy_from))
                if o is None:
                    changes.append(Change("ingest", key + name, st.st_size, st.st_mtime_ns,
                                          ident, digest, None))
                elif o.size != st.st_size or o.hash != digest:
                    changes.append(Change("update", key + name, st.st_size, st.st_mtime_ns,
                                          ident, digest, o.hash))
            elif outcome == _VANISHED:
                if o is not None:
                    dirty = True
                    changes.append(Change("delete", key + name, o.size, o.mtime_ns, o.ino,
                                          o.hash, None))
            elif o is not None:
                out.append(o)  # deferred or unreadable: the snapshot keeps what it had
        return out, changes, dirty

    def _hash(self, fd: int, rel: str, name: str, st: os.stat_result,
              follow: bool) -> tuple[int, bytes]:
        """XXH3-128 of one file, or why there is none (deferred, vanished, failed)."""
        if st.st_mtime_ns > self.settle_from:
            self.totals.deferred += 1
            return _DEFERRED, b""
        try:
            f = os.open(name, _OPEN_FILE | (0 if follow else os.O_NOFOLLOW), dir_fd=fd)
        except OSError as e:
            if e.errno in _GONE:
                return _VANISHED, b""
            self._warn(os.path.join(rel, name), f"cannot read: {e.strerror}", e.errno)
            return _FAILED, b""
        try:
            before = os.fstat(f)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != st.st_ino:
                self.totals.deferred += 1
                return _DEFERRED, b""
            digest, total = read_digest(f, self._reading)
            after = os.fstat(f)
        except OSError as e:
            self._warn(os.path.join(rel, name), f"cannot read: {e.strerror}", e.errno)
            return _FAILED, b""
        finally:
            os.close(f)
        self.totals.hashed += 1
        self.totals.bytes_hashed += total
        if total != st.st_size or after.st_size != st.st_size \
                or after.st_mtime_ns != st.st_mtime_ns:
            self.totals.deferred += 1
            return _DEFERRED, b""
        return _OK, digest

    def _reading(self, total: int, chunk: int) -> None:
        if total >= READ:  # a big file: progress while it is read
            self._tick(total)


def glob_match(glob: str, subject: str) -> bool:
    """Whether a gitignore glob matches the whole of `subject` (a name or relative path)."""
    return glob_matcher(glob)(subject)


def gitignore_rules(data: bytes) -> list[Rule]:
    """The rules of a .gitignore file's contents, as the walk reads them."""
    return rules_of(bytes(data).decode("utf-8", "surrogateescape").split("\n"))


def walk(params: ScanParams, hooks: ScanHooks) -> ScanTotals:
    """Walk the tree under `params.root` (or its `scope`), emitting each changed directory."""
    return _Walker(params, hooks).run()
