"""Tenant and branch of a project root (SPEC §8), with GitPython imported only when needed."""
from __future__ import annotations

import os
import re
from typing import Callable, NamedTuple

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
