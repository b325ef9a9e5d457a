"""Tenant and branch of a project root (SPEC §8), with GitPython imported only when needed."""
from __future__ import annotations

import os
import re
import time
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
GIT_TIMEOUT = 120.0  # seconds a listing may take before the repository counts as unreadable


class GitUnreadable(Exception):
    """The repository of a work tree could not answer (no git, a broken `.git`, an owner
    git does not trust, a hung mount); its deletes are not confirmed."""


def tracked_paths(work_tree: str, below: str = "") -> Iterator[str]:
    """Every path the checked-out commit or the index of the repository whose `.git` is in
    `work_tree` holds (relative to it, `/`-separated), below `below` if given; a submodule
    is one path. Streams git's answer: one `git ls-files` per repository, whatever its
    size. Raises GitUnreadable when that repository cannot answer."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARS}
    # git looks no higher than work_tree: a broken .git there is not a parent's question
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(work_tree)
    env["GIT_OPTIONAL_LOCKS"] = "0"
    argv = ["git", "-C", work_tree, "--literal-pathspecs", "-c", "core.fsmonitor=false",
            "ls-files", "-z", "--cached"]
    pathspec = ["--", below] if below else []
    try:  # the union of the index and the commit checked out
        yield from _stream([*argv, "--with-tree=HEAD", *pathspec], env)
    except GitUnreadable:
        # on an unborn branch (no commit yet) the index is all git holds
        if _git_ok(work_tree, env, "rev-parse", "-q", "--verify", "HEAD") or \
                not _git_ok(work_tree, env, "symbolic-ref", "-q", "HEAD"):
            raise
        yield from _stream([*argv, *pathspec], env)


def _stream(argv: list[str], env: dict[str, str]) -> Iterator[str]:
    """The NUL-separated names a git command prints, as they come."""
    import subprocess  # here: most scans never ask git

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
    except OSError as e:
        raise GitUnreadable(f"cannot run git: {e.strerror}") from None
    deadline = time.monotonic() + GIT_TIMEOUT
    late = GitUnreadable(f"git took more than {GIT_TIMEOUT:g} s to list the repository")
    try:
        rest = b""
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read1(1 << 16):
            *names, rest = (rest + chunk).split(b"\0")
            for name in names:
                yield name.decode("utf-8", "surrogateescape")
            if time.monotonic() > deadline:
                raise late
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait(max(0.0, deadline - time.monotonic())) != 0:
            raise GitUnreadable(err.splitlines()[-1] if err else
                                f"git exited with {proc.returncode}")
    except subprocess.TimeoutExpired:
        raise late from None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def _git_ok(work_tree: str, env: dict[str, str], *args: str) -> bool:
    """Whether a git command succeeds in `work_tree` (its output unread)."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", work_tree, *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=GIT_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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
