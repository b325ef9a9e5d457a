"""What git says of a tree: the tenant and branch of a project root (GitPython, imported
only when needed), and which files a work tree's commits and index hold (the git program,
asked by the mass-delete guard)."""
from __future__ import annotations

import os
import re
from typing import Callable, Iterator, NamedTuple

_SCHEME = r"^[A-Za-z][A-Za-z0-9+.-]*://"  # compiled on first use (re caches them)
_OUTSIDE = r"[^a-z0-9-]+"
DEFAULT_BRANCH = "main"


class Project(NamedTuple):
    """Where the files of one project root go: tenant and branch."""

    tenant_id: str
    branch: str


def tenant_from_url(url: str) -> str:
    """Sanitize a remote URL into a tenant id; credentials never survive."""
    s = re.sub(_SCHEME, "", url.strip(), count=1)
    slash = s.find("/")
    head = s if slash < 0 else s[:slash]
    at = head.rfind("@")
    if at >= 0:
        s = s[at + 1:]
    s = s.removesuffix("/").removesuffix(".git").lower()
    return re.sub(_OUTSIDE, "_", s).strip("_")


def tenant_from_path(root: str) -> str:
    """Tenant of a tree outside any repository (or one without remotes)."""
    import hashlib  # only for trees outside a repository with a remote

    real = os.path.realpath(root)
    return "path_" + hashlib.md5(real.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


def has_git(directory: str) -> bool:
    return os.path.lexists(os.path.join(directory, ".git"))


def project_root_above(start: str, fallback: str | None = None) -> str:
    """The nearest directory at or above `start` holding a `.git` entry, else `fallback`
    (by default `start`)."""
    d = start
    while True:
        if has_git(d):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return start if fallback is None else fallback
        d = parent


def describe(project_root: str, warn: Callable[[str, str], None]) -> Project:
    """Tenant and branch of one project root (a repository, or a plain watch root)."""
    if not has_git(project_root):
        return Project(tenant_from_path(project_root), DEFAULT_BRANCH)
    try:
        git = _gitpython()
        repo = git.Repo(project_root, expand_vars=False)  # "$USER/x" is a path, not a variable
        try:
            return Project(_repo_tenant(repo, project_root), _repo_branch(repo))
        finally:
            repo.close()
    except Exception as e:  # a broken or foreign .git must not stop the scan
        warn(project_root, f"cannot read the git repository ({type(e).__name__}: {e}); "
                           "using the path as tenant")
        return Project(tenant_from_path(project_root), DEFAULT_BRANCH)


def _repo_tenant(repo, project_root: str) -> str:
    names = sorted(r.name for r in repo.remotes)
    if not names:
        return tenant_from_path(project_root)
    name = "origin" if "origin" in names else names[0]
    with repo.config_reader() as cfg:
        url = cfg.get_value(f'remote "{name}"', "url", default="")
    tenant = tenant_from_url(str(url)) if url else ""
    return tenant or tenant_from_path(project_root)


def _repo_branch(repo) -> str:
    head = repo.head
    if head.is_detached:
        return head.commit.hexsha
    return head.reference.name  # also on an unborn branch: the name HEAD points to


#: Variables by which a git hook (or a user) points git at another repository or index:
#: the question about a work tree must be answered by that work tree's own `.git`.
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
              "GIT_PREFIX", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_SHALLOW_FILE",
              "GIT_REPLACE_REF_BASE", "GIT_NO_REPLACE_OBJECTS", "GIT_CONFIG",
              "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CEILING_DIRECTORIES")
MAX_HEADS = 20  # commits since the last scan whose files a delete may have been git's
GIT_TIMEOUT = 120.0  # seconds git may take to answer before the repository counts as unreadable


class GitUnreadable(Exception):
    """The repository of a work tree could not answer (no git, a broken `.git`, an owner
    git does not trust, a reflog that does not reach back, a hung mount); its deletes are
    not confirmed."""


class WorkTree:
    """Questions to the repository whose `.git` is in a directory, by its own `git`: none
    of the caller's GIT_* variables, no look above that directory, no optional locks, no
    fsmonitor program run. Each answer is streamed; one process per question."""

    def __init__(self, top: str) -> None:
        self.top = top
        self.env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
        # a broken .git there is not a parent repository's question
        self.env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(top)
        self.env["GIT_OPTIONAL_LOCKS"] = "0"

    def heads_since(self, when_ns: int) -> list[str]:
        """The commits HEAD pointed to from `when_ns` on (by HEAD's reflog, newest first, at
        most MAX_HEADS): the one checked out then, and every one since. The reflog counts in
        whole seconds, so those of that second are all taken. GitUnreadable without a
        reflog."""
        when = when_ns // 1_000_000_000
        heads: list[str] = []
        for line in self._stream(["reflog", "show", "--date=unix", "--format=%H %gd", "HEAD"],
                                 b"\n"):
            commit, _, selector = line.partition(" ")  # HEAD@{<seconds>}
            if commit not in heads:
                heads.append(commit)
            if int(selector[selector.index("{") + 1:-1]) < when:
                break  # the one checked out before that second began
        if not heads:
            raise GitUnreadable("HEAD has no reflog")
        # a reflog that begins after the last scan lacks what HEAD was then: its files
        # count as deletes (the safe side)
        return heads[:MAX_HEADS]

    def held_by(self, commit: str, below: str = "") -> Iterator[str]:
        """The paths commit `commit` holds (relative to the work tree), below `below`; a
        submodule is one path."""
        return self._stream(["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit,
                             *(["--", below] if below else [])])

    def held_now(self, below: str = "") -> Iterator[str]:
        """The paths the checked-out commit or the index holds, below `below`."""
        pathspec = ["--", below] if below else []
        try:  # the union of the index and the commit checked out
            yield from self._stream(["ls-files", "-z", "--cached", "--with-tree=HEAD",
                                     *pathspec])
        except GitUnreadable:
            if not self._unborn():
                raise
            yield from self._stream(["ls-files", "-z", "--cached", *pathspec])

    def _unborn(self) -> bool:
        """HEAD names a branch without a commit yet: the index is all git holds."""
        try:
            for _ in self._stream(["symbolic-ref", "-q", "HEAD"], b"\n"):
                pass
            for _ in self._stream(["rev-parse", "-q", "--verify", "HEAD"], b"\n"):
                pass
        except GitUnreadable as e:
            return "rev-parse" in str(e)
        return False

    def _stream(self, args: list[str], sep: bytes = b"\0") -> Iterator[str]:
        """What `git ARGS` prints, item by item as it comes; GitUnreadable when git fails or
        takes more than GIT_TIMEOUT (it is killed)."""
        import subprocess  # here: most scans never ask git
        import tempfile
        import threading

        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    ["git", "-C", self.top, "--literal-pathspecs", "-c",
                     "core.fsmonitor=false", *args],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=self.env)
            except OSError as e:
                raise GitUnreadable(f"cannot run git: {e.strerror}") from None
            expired = threading.Event()

            def kill() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(GIT_TIMEOUT, kill)
            timer.start()
            try:
                assert proc.stdout is not None
                rest = b""
                while chunk := proc.stdout.read1(1 << 16):
                    *items, rest = (rest + chunk).split(sep)
                    for item in items:
                        yield item.decode("utf-8", "surrogateescape")
                code = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()  # type: ignore[union-attr]
            if expired.is_set():
                raise GitUnreadable(f"git {args[0]} took more than {GIT_TIMEOUT:g} s")
            if code != 0:
                err.seek(0)
                lines = err.read().decode("utf-8", "replace").strip().splitlines()
                raise GitUnreadable(f"git {args[0]}: " + (lines[-1] if lines else
                                                           f"exit code {code}"))


def _gitpython():
    """GitPython, imported only for trees that hold a repository (it is slow to import),
    without its check for a git binary: reading a repository's config and HEAD needs none.
    The environment variable that says so is set for the import alone."""
    import sys

    if "git" in sys.modules:
        return sys.modules["git"]
    had = "GIT_PYTHON_REFRESH" in os.environ
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        import git
    finally:
        if not had:
            del os.environ["GIT_PYTHON_REFRESH"]
    return git
