"""Tenant and branch: URL sanitizing, and real repositories made with git."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import child_env
from helpers.db import queue, scan, watch
from helpers.gitrepo import git
from helpers.trees import write
from hypothesis import given, settings
from hypothesis import strategies as st

from wqscan.scan.gitinfo import tenant_from_url

CRED_URL = "https://bob:s3cret@git.example.org:8443/Team/Sub/Proj.git/"
CRED_TENANT = "git_example_org_8443_team_sub_proj"


def repo(path: Path, branch: str = "main", remotes: dict[str, str] | None = None,
         commit: bool = True) -> Path:
    """A repository at `path` on `branch`, with remotes, and one committed file."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    for name, url in (remotes or {}).items():
        git(path, "remote", "add", name, url)
    if commit:
        write(path / "README.md", f"readme of {path.name}")
        git(path, "add", "README.md")
        git(path, "commit", "-q", "-m", "first")
    return path


def path_tenant(p: Path) -> str:
    """The tenant of a project root without a remote: path_ + md5(realpath)[:16]."""
    real = os.path.realpath(p)
    return "path_" + hashlib.md5(real.encode("utf-8")).hexdigest()[:16]


def projects(store) -> dict[str, tuple[str, str]]:
    """{relative path: (tenant_id, branch)} of the pending rows."""
    return {r["metadata"]["relative_path"]: (r["tenant_id"], r["branch"]) for r in queue(store)}


def no_repository_above(p: Path) -> bool:
    return not any(os.path.lexists(d / ".git") for d in (p, *p.parents))


# -- URL sanitizing ------------------------------------------------------------------------

@pytest.mark.parametrize("url, tenant", [
    ("https://github.com/ChrisGVE/workspace-qdrant-mcp.git",
     "github_com_chrisgve_workspace-qdrant-mcp"),
    ("git@github.com:ChrisGVE/workspace-qdrant-mcp.git",
     "github_com_chrisgve_workspace-qdrant-mcp"),
    ("ssh://git@github.com/ChrisGVE/workspace-qdrant-mcp",
     "github_com_chrisgve_workspace-qdrant-mcp"),
    (CRED_URL, CRED_TENANT),
])
def test_spec_vectors(url, tenant):
    """The documented examples: remote URLs (https, scp-like, ssh, with credentials) and the
    tenant each gives."""
    assert tenant_from_url(url) == tenant


@pytest.mark.parametrize("url, tenant", [
    ("  https://github.com/Org/Repo.git \n", "github_com_org_repo"),
    ("\tgit@github.com:Org/Repo.git  ", "github_com_org_repo"),
    ("user@host.example:path/to/repo.git", "host_example_path_to_repo"),
    ("deploy@host:repo", "host_repo"),
    ("ssh://user@host:22/x", "host_22_x"),
    ("ssh://user@host:22/x.git/", "host_22_x"),
    ("https://host.example/team/pkg@v2/x.git", "host_example_team_pkg_v2_x"),
    ("HTTPS://GitHub.COM/Org/My-Repo.git", "github_com_org_my-repo"),
    ("https://USER:PW@GitHub.COM/Org/Repo", "github_com_org_repo"),
    ("https://a:b@c@host.example/r.git", "host_example_r"),
    ("file:///srv/git/Proj.git", "srv_git_proj"),
    ("file:///srv/team@2024/Proj.git", "srv_team_2024_proj"),
    ("https://tok3n@", ""),
    ("https://host.example//a__b--c/", "host_example_a_b--c"),
], ids=["spaces", "spaces-scp", "scp-like", "scp-short", "ssh-port", "ssh-port-git-slash",
        "at-after-slash", "uppercase", "uppercase-creds", "at-in-password", "file-scheme",
        "file-at-in-path", "credentials-only", "runs-and-dashes"])
def test_sanitizing_rules(url, tenant):
    """Spaces, scheme-less user@host:path, ports, '@' after the first '/' (also right
    after the scheme), a URL of nothing but credentials, case."""
    assert tenant_from_url(url) == tenant


_NO_SLASH = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
                    max_size=12)


@settings(max_examples=200, deadline=None)
@given(user=_NO_SLASH, password=_NO_SLASH)
def test_credentials_never_survive(user, password):
    """user[:password]@ is dropped: the tenant is the one of the URL without it."""
    creds = user + (":" + password if password else "")
    assert tenant_from_url(f"https://{creds}@git.example.org:8443/Team/Proj.git") == \
        tenant_from_url("https://git.example.org:8443/Team/Proj.git")
    assert tenant_from_url(f"ssh://{creds}@git.example.org/Team/Proj") == \
        tenant_from_url("ssh://git.example.org/Team/Proj")


@pytest.mark.parametrize("url", [
    "https://bob:s3cret@git.example.org/x.git",
    "https://bob:s3cret@git.example.org:8443/x.git",
    "ssh://bob:s3cret@git.example.org/x",
    "bob:s3cret@git.example.org:x.git",
    "  https://tok3n-x0x0:s3cret@git.example.org/x  ",
])
def test_credentials_absent_from_result(url):
    """Neither the user nor the password appears in the tenant."""
    tenant = tenant_from_url(url)
    assert tenant
    for secret in ("s3cret", "bob", "tok3n"):
        assert secret not in tenant


# -- real repositories ---------------------------------------------------------------------

def test_remote_with_credentials(twin, store, root):
    """origin with credentials gives the sanitized tenant and the branch; no secret queued."""
    repo(root, branch="trunk", remotes={"origin": CRED_URL})
    write(root / "docs" / "guide.md", "guide")
    wid = watch(store, root)
    assert scan(store, wid).ok
    got = projects(store)
    assert set(got) == {"README.md", "docs/guide.md"}
    assert set(got.values()) == {(CRED_TENANT, "trunk")}
    cur = store.conn.execute("SELECT * FROM ingestion_queue")
    for row in cur:
        for value in row:
            assert "s3cret" not in str(value)
            assert "bob" not in str(value)


def test_first_remote_by_name_without_origin(twin, store, root):
    """Without origin the first remote by name is used, not the first configured."""
    repo(root, remotes={"zeta": "https://zeta.example.org/z.git",
                        "alpha": "git@alpha.example.org:team/a.git",
                        "mid": "https://mid.example.org/m.git"})
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {("alpha_example_org_team_a", "main")}


def test_origin_wins_over_earlier_names(twin, store, root):
    """origin is used even when another remote sorts before it."""
    repo(root, remotes={"aaa": "https://aaa.example.org/a.git",
                        "origin": "https://origin.example.org/o.git"})
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {("origin_example_org_o", "main")}


def test_a_remote_without_a_url_gives_the_path_tenant(twin, store, root):
    """A remote whose url was removed (its section and fetch line left) names no project:
    the tenant is the one of the repository's path; the repository is read all the same
    (its branch)."""
    repo(root, branch="trunk", remotes={"origin": "https://example.org/o.git"})
    git(root, "config", "--unset", "remote.origin.url")
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {(path_tenant(root), "trunk")}


def test_a_repository_named_like_a_variable_is_read_at_its_own_path(twin, store, tmp_path,
                                                                     monkeypatch):
    """A repository in a directory named `$WQSCAN_OTHER` is read there, never at the path
    the variable would expand to (here another repository)."""
    repo(tmp_path / "other", branch="elsewhere", remotes={"origin": "https://other.example.org/o"})
    monkeypatch.setenv("WQSCAN_OTHER", "other")
    proj = repo(tmp_path / "$WQSCAN_OTHER", branch="trunk",
                remotes={"origin": "https://example.org/d.git"})
    wid = watch(store, proj)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {("example_org_d", "trunk")}


def test_a_repository_git_cannot_read_gives_the_path_tenant_and_one_warning(twin, store, root):
    """A `.git` that cannot be read (a gitdir file pointing nowhere) does not stop the scan:
    its project's files get the tenant of the project's path and the default branch, and
    the scan warns once, naming the project, the error and what it did instead."""
    proj = root / "proj"
    proj.mkdir(parents=True)
    (proj / ".git").write_text("gitdir: /nonexistent/wqscan-gitdir\n")
    write(proj / "a.txt", "a")
    rep = scan(store, watch(store, root))
    assert rep.ok, rep.reason
    assert projects(store) == {"proj/a.txt": (path_tenant(proj), "main")}
    assert rep.warnings == [f"{proj}: cannot read the git repository (InvalidGitRepositoryError: "
                            f"{proj}); using the path as tenant"]


def test_repository_without_remote(twin, store, root):
    """A repository without remotes: path_ + md5 of its own root, not of the watch root."""
    proj = repo(root / "proj", branch="work")
    write(root / "outside.txt", "o")
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert projects(store) == {
        "proj/README.md": (path_tenant(proj), "work"),
        "outside.txt": (path_tenant(root), "main"),
    }
    assert path_tenant(proj) != path_tenant(root)


def test_detached_head(twin, store, root):
    """On a detached HEAD the branch is the full commit sha."""
    repo(root, remotes={"origin": "https://example.org/d.git"})
    write(root / "second.txt", "2")
    git(root, "add", "second.txt")
    git(root, "commit", "-q", "-m", "second")
    git(root, "checkout", "-q", "--detach", "HEAD~1")
    sha = git(root, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {("example_org_d", sha)}


def test_unborn_branch(twin, store, root):
    """A repository without commits: the branch HEAD points to."""
    repo(root, branch="feature/x", remotes={"origin": "https://example.org/u.git"},
         commit=False)
    write(root / "draft.md", "d")
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert projects(store) == {"draft.md": ("example_org_u", "feature/x")}


def test_nested_repository(twin, store, root):
    """Files of a nested repository get its tenant and branch; the others the outer's."""
    repo(root, remotes={"origin": "https://example.org/outer.git"})
    inner = repo(root / "vendor" / "inner", branch="dev",
                 remotes={"origin": "https://example.org/inner.git"})
    write(root / "vendor" / "b.txt", "b")
    write(inner / "deep" / "d.txt", "d")
    write(root / "z.txt", "z")
    wid = watch(store, root)
    assert scan(store, wid).ok
    outer, nested = ("example_org_outer", "main"), ("example_org_inner", "dev")
    assert projects(store) == {
        "README.md": outer, "vendor/b.txt": outer, "z.txt": outer,
        "vendor/inner/README.md": nested, "vendor/inner/deep/d.txt": nested,
    }


def test_nested_repository_scoped_reconcile(twin, store, root):
    """A --path scan inside a nested repository still finds its project root."""
    repo(root, remotes={"origin": "https://example.org/outer.git"})
    inner = repo(root / "inner", branch="dev", remotes={"origin": "https://example.org/inner.git"})
    wid = watch(store, root)
    assert scan(store, wid).ok
    write(inner / "deep" / "new.txt", "n")
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
    assert scan(store, wid, path=str(inner / "deep")).ok
    assert projects(store) == {"inner/deep/new.txt": ("example_org_inner", "dev")}


def test_worktree_git_file_is_project_root(twin, store, root, tmp_path):
    """A directory with a `.git` file (git worktree) is a project root of its own."""
    src = repo(tmp_path / "src", remotes={"origin": "https://example.org/src.git"})
    git(src, "worktree", "add", "-q", "-b", "wt-branch", str(root / "wt"))
    assert (root / "wt" / ".git").is_file()
    write(root / "top.txt", "t")
    write(root / "wt" / "extra.txt", "e")
    wid = watch(store, root)
    assert scan(store, wid).ok
    wt = ("example_org_src", "wt-branch")
    assert projects(store) == {
        "top.txt": (path_tenant(root), "main"),
        "wt/README.md": wt, "wt/extra.txt": wt,
    }


def test_worktree_inside_its_own_repository(twin, store, root):
    """A worktree inside the watched repository keeps its own branch."""
    repo(root, remotes={"origin": "https://example.org/self.git"})
    git(root, "worktree", "add", "-q", "-b", "side", str(root / "side"))
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert projects(store) == {
        "README.md": ("example_org_self", "main"),
        "side/README.md": ("example_org_self", "side"),
    }


def test_no_repository(twin, store, root):
    """Outside any repository: path_ + md5 of the watch root, branch main."""
    assert no_repository_above(root)
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    wid = watch(store, root)
    assert scan(store, wid).ok
    assert set(projects(store).values()) == {(path_tenant(root), "main")}
    assert len(projects(store)) == 2


def test_no_repository_watch_added_through_symlink(twin, store, root, tmp_path):
    """The path tenant hashes the resolved root, not the symlink the watch was added by."""
    assert no_repository_above(root)
    write(root / "a.txt", "a")
    link = tmp_path / "link"
    link.symlink_to(root)
    wid = watch(store, link)
    assert scan(store, wid).ok
    assert projects(store) == {"a.txt": (path_tenant(root), "main")}
    assert path_tenant(root) != "path_" + hashlib.md5(str(link).encode()).hexdigest()[:16]


def test_watch_below_repository_root(twin, store, tmp_path):
    """A watch rooted in a subdirectory of a repository gets the repository's tenant."""
    top = repo(tmp_path / "mono", branch="release", remotes={"origin": CRED_URL})
    write(top / "docs" / "a.md", "a")
    write(top / "docs" / "deep" / "b.md", "b")
    write(top / "other.txt", "not watched")
    wid = watch(store, top / "docs")
    assert scan(store, wid).ok
    assert projects(store) == {"a.md": (CRED_TENANT, "release"),
                               "deep/b.md": (CRED_TENANT, "release")}


# -- deletes carry what their file was queued with ------------------------------------------

def test_deletes_carry_the_branch_they_were_ingested_on(twin, store, tmp_path):
    """After `git checkout` of an older commit, the files that went away are deleted with
    the branch (and tenant) they were ingested on, not the commit now checked out; what
    the checkout brought carries its own; remove --emit-deletes does the same."""
    from wqscan.watches import remove_watch

    r = repo(tmp_path / "r", remotes={"origin": "https://example.org/team/r.git"})
    first = git(r, "rev-parse", "HEAD")
    for i in range(6):
        write(r / "docs" / f"d{i}.md", f"doc {i}")
    write(r / "top.md", "top")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "docs")
    wid = watch(store, r)
    scan(store, wid)
    assert {q["branch"] for q in queue(store)} == {"main"}
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
    git(r, "checkout", "-q", first)  # detached: branch = the full SHA
    write(r / "local.md", "new here")  # a file queued on the detached checkout
    scan(store, wid)
    got = {os.path.relpath(q["file_absolute_path"], os.path.realpath(r)):
           (q["operation"], q["tenant_id"], q["branch"]) for q in queue(store)}
    tenant = "example_org_team_r"
    assert got == {**{f"docs/d{i}.md": ("delete", tenant, "main") for i in range(6)},
                   "top.md": ("delete", tenant, "main"), "local.md": ("ingest", tenant, first)}
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
    assert remove_watch(store, wid, emit_deletes=True).changed == 2
    got = {os.path.relpath(q["file_absolute_path"], os.path.realpath(r)): q["branch"]
           for q in queue(store)}
    assert got == {"README.md": "main", "local.md": first}


def test_deletes_of_files_without_labels_take_the_project_that_holds_them(twin, store, root):
    """A snapshot without labels (a database from before they were kept): remove
    --emit-deletes queues each delete under the project that holds the file now, a nested
    repository's for its files and the watch root's path for the others, however deep."""
    from wqscan.watches import remove_watch

    repo(root / "proj", branch="work", remotes={"origin": "https://example.org/p.git"})
    write(root / "sub" / "deep" / "a.txt", "a")
    wid = watch(store, root)
    scan(store, wid)
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
        store.conn.execute("DELETE FROM wq_labels")
    assert remove_watch(store, wid, emit_deletes=True).changed == 2
    assert projects(store) == {"proj/README.md": ("example_org_p", "work"),
                               "sub/deep/a.txt": (path_tenant(root), "main")}


def test_a_file_queued_on_another_branch_is_deleted_on_it(twin, store, tmp_path):
    """A file that a branch other than the watch's usual one brought is deleted, when a
    checkout takes it away, with the branch it was queued with; its label is then
    forgotten."""
    r = repo(tmp_path / "r")
    write(r / "docs" / "a.md", "a")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "docs")
    wid = watch(store, r)
    scan(store, wid)
    git(r, "checkout", "-q", "-b", "topic")
    write(r / "docs" / "b.md", "b")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "b")
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
    scan(store, wid)
    assert [(q["operation"], q["branch"]) for q in queue(store)] == [("ingest", "topic")]
    assert "b.md" in json.loads(store.labels(wid, ["docs/"])["docs/"])
    with store.write():
        store.conn.execute("DELETE FROM ingestion_queue")
    git(r, "checkout", "-q", "main")
    scan(store, wid)
    got = [(os.path.relpath(q["file_absolute_path"], os.path.realpath(r)), q["operation"],
            q["branch"]) for q in queue(store)]
    assert got == [("docs/b.md", "delete", "topic")]
    assert "b.md" not in json.loads(store.labels(wid, ["docs/"]).get("docs/", "{}"))


_DESCRIBE = """import json, os, sys
from wqscan.scan.gitinfo import describe
p = describe(sys.argv[1], lambda root, why: print(why, file=sys.stderr))
print(json.dumps([p.tenant_id, p.branch, os.environ.get("GIT_PYTHON_REFRESH")]))"""


@pytest.mark.parametrize("refresh", [None, "warn"])
def test_a_repository_read_where_no_git_program_is(tmp_path, refresh):
    """A fresh process with no git on PATH still reads a repository's tenant and branch
    (GitPython is told not to look for git while it is imported), and leaves
    GIT_PYTHON_REFRESH as it found it."""
    r = repo(tmp_path / "r", "dev", {"origin": CRED_URL})
    empty = tmp_path / "bin"
    empty.mkdir()
    env = child_env(PATH=str(empty))
    env.pop("GIT_PYTHON_REFRESH", None)
    if refresh:
        env["GIT_PYTHON_REFRESH"] = refresh
    done = subprocess.run([sys.executable, "-c", _DESCRIBE, str(r)], env=env,
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [CRED_TENANT, "dev", refresh]
    if refresh is None:
        assert done.stderr == ""
