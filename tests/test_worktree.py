"""The questions the mass-delete guard asks git (`WorkTree`), asked directly of real
repositories: which commits HEAD pointed to since a time, which paths a commit or the
index holds below a directory, names that are not UTF-8, an unborn branch, a repository
that cannot answer (a `.git` gone or pointing nowhere, git that hangs), and a
caller's GIT_* variables that must not redirect the question."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers.gitrepo import GIT_ENV, commit, git

from wqscan.scan import gitinfo
from wqscan.scan.gitinfo import GitUnreadable, WorkTree

pytestmark = pytest.mark.scanner_free

LATIN1 = os.fsdecode(b"caf\xe9.txt")  # a name written by a Latin-1 system: not UTF-8


def _repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def _write(repo: Path, rel: str, text: str = "x") -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(text)


def _commit_at(repo: Path, seconds: int, rel: str) -> str:
    """Commit a change to `rel` with the committer's (and so the reflog's) clock at
    `seconds`; the new commit's id."""
    _write(repo, rel, str(seconds))
    env = {**GIT_ENV, "GIT_COMMITTER_DATE": f"@{seconds} +0000",
           "GIT_AUTHOR_DATE": f"@{seconds} +0000"}
    for args in (["add", "-A"], ["commit", "-qm", f"at {seconds}"]):
        subprocess.run(["git", "-C", str(repo), *args], env=env, check=True)
    return git(repo, "rev-parse", "HEAD")


def test_heads_since_takes_the_head_of_that_second_and_every_one_after(tmp_path) -> None:
    repo = _repo(tmp_path / "r")
    t = 1_700_000_000
    a, b, c = (_commit_at(repo, t + dt, "f.txt") for dt in (0, 100, 200))
    tree = WorkTree(str(repo))
    assert tree.heads_since((t + 101) * 1_000_000_000) == [c, b]  # b was checked out then
    # within b's second the reflog cannot tell before b from after: a counts too
    assert tree.heads_since((t + 100) * 1_000_000_000 + 999_999_999) == [c, b, a]
    assert tree.heads_since((t + 100) * 1_000_000_000) == [c, b, a]
    assert tree.heads_since((t + 300) * 1_000_000_000) == [c]


def test_paths_below_a_directory_and_names_not_utf8(tmp_path) -> None:
    repo = _repo(tmp_path / "r")
    for rel in ("top.txt", "lib/a.txt", "lib/sub/b.txt", "library.txt", "-l/c.txt"):
        _write(repo, rel)
    _write(repo, f"lib/{LATIN1}")
    commit(repo, "one")
    head = git(repo, "rev-parse", "HEAD")
    tree = WorkTree(str(repo))
    below = ["lib/a.txt", f"lib/{LATIN1}", "lib/sub/b.txt"]
    assert sorted(tree.held_by(head, "lib")) == below
    assert sorted(tree.held_now("lib")) == below
    assert sorted(tree.held_by(head)) == sorted([*below, "-l/c.txt", "library.txt", "top.txt"])
    assert list(tree.held_by(head, "-l")) == list(tree.held_now("-l")) == ["-l/c.txt"]
    _write(repo, "lib/staged.txt")
    git(repo, "add", "lib/staged.txt")
    (repo / "lib" / "a.txt").unlink()
    git(repo, "rm", "-q", "--cached", "lib/sub/b.txt")
    # the index or the commit checked out: staged, removed from the index, gone from disk
    assert sorted(tree.held_now("lib")) == sorted([*below, "lib/staged.txt"])


def _git_files(repo: Path) -> dict[str, bytes]:
    """Every file under `.git` and its content."""
    return {str(p.relative_to(repo)): p.read_bytes()
            for p in sorted((repo / ".git").rglob("*")) if p.is_file()}


def test_an_unborn_branch_holds_what_is_staged(tmp_path) -> None:
    repo = _repo(tmp_path / "r")
    _write(repo, "lib/a.txt")
    _write(repo, "b.txt")
    git(repo, "add", "lib/a.txt", "b.txt")
    before = _git_files(repo)
    tree = WorkTree(str(repo))
    assert sorted(tree.held_now()) == ["b.txt", "lib/a.txt"]
    assert list(tree.held_now("lib")) == ["lib/a.txt"]
    assert _git_files(repo) == before  # asking changed nothing in the repository


def test_a_commit_whose_tree_is_missing_is_not_answered_from_the_index(tmp_path) -> None:
    """A corrupt repository (HEAD's tree object gone) is not an unborn branch: git cannot
    say what the commit holds, so the answer is GitUnreadable, not the index alone."""
    repo = _repo(tmp_path / "r")
    _write(repo, "f.txt")
    commit(repo, "one")
    tree_id = git(repo, "rev-parse", "HEAD^{tree}")
    (repo / ".git" / "objects" / tree_id[:2] / tree_id[2:]).unlink()
    before = _git_files(repo)
    with pytest.raises(GitUnreadable, match=r"^git ls-files: fatal: bad tree-ish HEAD$"):
        list(WorkTree(str(repo)).held_now())
    assert _git_files(repo) == before


def test_a_work_tree_whose_git_is_gone_is_not_answered_by_the_one_above(tmp_path) -> None:
    outer = _repo(tmp_path / "outer")
    _write(outer, "inner/a.txt")
    commit(outer, "outer holds inner/a.txt")
    with pytest.raises(GitUnreadable, match=r"^git ls-files: fatal: not a git repository"):
        list(WorkTree(str(outer / "inner")).held_now())


def test_a_git_file_pointing_nowhere_names_it(tmp_path) -> None:
    top = tmp_path / os.fsdecode(b"share-\xe9")
    top.mkdir()
    nowhere = os.fsencode(str(tmp_path)) + b"/gone-\xe9"
    (top / ".git").write_bytes(b"gitdir: " + nowhere + b"\n")
    with pytest.raises(GitUnreadable) as e:
        list(WorkTree(str(top)).held_now())
    message = str(e.value)
    assert message.startswith("git ls-files: fatal: not a git repository: ")
    assert "gone-\ufffd" in message  # git's bytes, not UTF-8, shown as U+FFFD


def test_the_repositorys_fsmonitor_program_is_not_run(tmp_path) -> None:
    """A repository's configuration names a program for git to run (core.fsmonitor); a
    scan of someone else's tree must not run it."""
    repo = _repo(tmp_path / "r")
    _write(repo, "f.txt")
    commit(repo, "one")
    ran = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "fsmonitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    git(repo, "update-index", "--fsmonitor")  # git runs it whenever it reads this index
    ran.unlink()
    tree = WorkTree(str(repo))
    assert list(tree.held_now()) == ["f.txt"]
    assert list(tree.held_by(tree.heads_since(0)[0])) == ["f.txt"]
    assert not ran.exists()


def test_the_callers_git_variables_do_not_redirect_it(tmp_path, monkeypatch) -> None:
    mine, other = _repo(tmp_path / "mine"), _repo(tmp_path / "other")
    _write(mine, "m.txt")
    commit(mine, "mine")
    _write(other, "o.txt")
    commit(other, "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert list(WorkTree(str(mine)).held_now()) == ["m.txt"]


def test_git_that_does_not_answer_is_killed(tmp_path, monkeypatch) -> None:
    """HEAD a FIFO nobody writes: git blocks opening it, as on a share that stopped
    answering. It is killed after GIT_TIMEOUT, and the repository counts as unreadable."""
    repo = _repo(tmp_path / "r")
    _write(repo, "f.txt")
    commit(repo, "one")
    head = repo / ".git" / "HEAD"
    head.unlink()
    os.mkfifo(head)
    monkeypatch.setattr(gitinfo, "GIT_TIMEOUT", 0.5)
    with pytest.raises(GitUnreadable, match=r"^git reflog took more than 0\.5 s$"):
        WorkTree(str(repo)).heads_since(0)
