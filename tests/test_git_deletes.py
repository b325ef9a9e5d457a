"""Git confirms its own deletes (the mass-delete guard in a git work tree): a checkout that
removes most of a repository is queued, through the hook, with the watch's defaults, while
a share that lost its files, a stray `rm` of tracked files, an emptied or vanished root
and an emptied mountpoint are still stopped. Real repositories, worktrees and submodules;
mtimes set with os.utime(ns=...)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers.cli import wqscan
from helpers.db import drain, ops, queue, scan, watch
from helpers.gitrepo import GIT_ENV, commit, git
from helpers.ondisk import read_rows
from helpers.procs import wait_until
from helpers.trees import OLD_NS

from wqscan.cli import main
from wqscan.store import Store

FILES = 300
REMOVED = 200  # by the checkout of `small`
CHANGED = 10


def age(tree: Path) -> None:
    """Every file of the work tree (not .git) gets an old mtime: settled, not racy."""
    for d, dirs, files in os.walk(tree):
        if ".git" in dirs:
            dirs.remove(".git")
        for f in files:
            if f != ".git":
                os.utime(os.path.join(d, f), ns=(OLD_NS, OLD_NS))


def make_repo(path: Path, files: int = FILES, removed: int = REMOVED,
              changed: int = CHANGED) -> list[str]:
    """A repository at `path`: `files` files on main, and a branch `small` that removes
    `removed` of them and changes `changed` others; main checked out. Returns the paths
    `small` removes."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    names = [f"d{i % 10}/f{i:03d}.txt" for i in range(files)]
    for i, name in enumerate(names):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(f"file {i}\n")
    commit(path, "main")
    git(path, "checkout", "-qb", "small")
    gone = names[:removed]
    for name in gone:
        (path / name).unlink()
    for name in names[removed:removed + changed]:
        with open(path / name, "a") as f:
            f.write("changed\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", "small")
    git(path, "checkout", "-q", "main")
    age(path)
    return gone


def checkout(repo: Path, rev: str) -> None:
    git(repo, "checkout", "-q", rev)
    age(repo)


def scanned_repo(store: Store, root: Path, ingest: int = FILES) -> str:
    """The tree at `root` watched, scanned (queueing `ingest` files) and acknowledged;
    returns the watch id."""
    wid = watch(store, root)
    assert scan(store, wid).ingest == ingest
    drain(store)
    return wid


def checked_out_small(store: Store, root: Path) -> None:
    """The 300-file repository at `root`, watched, scanned and acknowledged on main, then
    `small` checked out (200 files removed, 10 changed)."""
    make_repo(root)
    scanned_repo(store, root)
    checkout(root, "small")


def remove_tracked(tree: Path) -> None:
    """A stray `rm` (or a share that lost them) of 200 files git tracks in `tree`."""
    for name in git(tree, "ls-files").splitlines()[:REMOVED]:
        (tree / name).unlink()


def assert_checkout_queued(store: Store, report) -> None:
    assert report.ok, report.reason
    assert (report.delete, report.update, report.ingest) == (REMOVED, CHANGED, 0)
    got = ops(store)
    assert list(got.values()).count("delete") == REMOVED
    assert list(got.values()).count("update") == CHANGED


def assert_stopped(store: Store, report, deletes: int = REMOVED) -> None:
    assert not report.ok
    assert f"mass-delete guard: the scan would delete {deletes} of" in report.reason, \
        report.reason
    assert ops(store) == {}


# -- a checkout is git's doing -------------------------------------------------------------

def test_hook_scan_after_a_checkout_that_removes_most_files(tmp_path, env):
    """docs/operations.md's hook journey at full size: a 300-file repository watched with
    the defaults (settle 2 s), hooks installed, `git checkout` of a branch that removes 200
    files and changes 10: the hook's scan queues 200 deletes and 10 updates, and the watch
    stays ok."""
    repo = tmp_path / "repo"
    gone = make_repo(repo)
    db = tmp_path / "wq.db"
    for argv in (["add", str(repo), "--collection", "r"], ["reconcile", "-q"],
                 ["hook", "install", str(repo)]):
        r = wqscan(db, *argv, env=env)
        assert r.returncode == 0, r.stderr
    with Store.open(str(db)) as store:
        drain(store)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "small"], check=True,
                   env={**env, **{k: v for k, v in GIT_ENV.items() if k.startswith("GIT_")}})
    real = os.path.realpath(repo)

    def queued() -> dict[str, str]:
        return dict(read_rows(db, "SELECT file_absolute_path, operation FROM ingestion_queue"))

    assert wait_until(lambda: len(queued()) == REMOVED + CHANGED, 60), queued()
    assert {p for p, op in queued().items() if op == "delete"} == {f"{real}/{g}" for g in gone}
    assert list(queued().values()).count("update") == CHANGED
    assert wait_until(lambda: read_rows(db, "SELECT count(*) FROM wq_leases") == [(0,)], 60)
    (result, failures) = read_rows(db, "SELECT last_result, consecutive_failures "
                                       "FROM wq_watch_stats")[0]
    assert (result, failures) == ("ok", 0)


def test_checkout_deletes_pass_the_guard(twin, store, root, holding):
    """A checkout removing 200 of 300 files: every delete is queued (held in memory or
    spilled)."""
    checked_out_small(store, root)
    assert_checkout_queued(store, scan(store))


def test_git_is_asked_per_work_tree_not_per_file(twin, store, root, tmp_path, monkeypatch):
    """Git is asked a few questions per work tree, none per file."""
    checked_out_small(store, root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git.log"
    real_git = shutil.which("git")
    (bindir / "git").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real_git} "$@"\n')
    (bindir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert_checkout_queued(store, scan(store))
    # per work tree: its reflog, the files of each commit checked out since the last scan
    # (main, then small), what it holds now; however many files were deleted
    calls = [line.split()[5] for line in log.read_text().splitlines()]
    assert sorted(calls) == ["ls-files", "ls-tree", "ls-tree", "reflog"], calls


def test_a_checkout_in_a_scoped_scan(twin, store, root):
    """`reconcile --path` of a repository below the watch root (the hook's form): git
    answers for that repository."""
    (root / "notes.txt").write_text("n")
    os.utime(root / "notes.txt", ns=(OLD_NS, OLD_NS))
    repo = root / "repo"
    make_repo(repo)
    scanned_repo(store, root, FILES + 1)
    checkout(repo, "small")
    assert_checkout_queued(store, scan(store, path=str(repo)))


def test_a_checkout_in_a_linked_worktree(twin, store, root, tmp_path):
    """A linked worktree (`.git` is a file pointing at the main repository) is a work tree
    whose git answers for it."""
    main_repo = tmp_path / "main-repo"
    make_repo(main_repo)
    wt = root / "wt"
    git(main_repo, "worktree", "add", "-q", "-b", "side", str(wt), "main")
    age(wt)
    scanned_repo(store, wt)
    git(wt, "reset", "-q", "--hard", "small")
    age(wt)
    assert_checkout_queued(store, scan(store))
    # ... and tracked files vanishing from it are still stopped
    git(wt, "reset", "-q", "--hard", "main")
    age(wt)
    assert scan(store).ok
    drain(store)
    remove_tracked(wt)
    assert_stopped(store, scan(store))


def test_the_watch_root_below_the_work_tree(twin, store, tmp_path):
    """A watch of a directory inside a repository: git's answer is read below it. (The
    watched directory holds 300 files, so its 200 deletes trip the guard unless git
    confirms them.)"""
    repo = tmp_path / "repo"
    make_repo(repo, files=FILES * 10, removed=REMOVED * 10)
    root = repo / "d3"
    scanned_repo(store, root, FILES)
    checkout(repo, "small")
    r = scan(store)
    assert r.ok, r.reason
    assert (r.delete, r.update) == (REMOVED, 1), r


def test_checkouts_in_two_repositories_are_both_gits_doing(twin, store, root):
    """Two work trees in one watch, each checked out to a commit with fewer files: git
    confirms the deletes of each (330 files, 220 deleted)."""
    make_repo(root / "a")
    make_repo(root / "b", files=30, removed=20, changed=1)
    scanned_repo(store, root, FILES + 30)
    checkout(root / "a", "small")
    checkout(root / "b", "small")
    r = scan(store)
    assert r.ok, r.reason
    assert r.delete == REMOVED + 20


def test_a_broken_repository_beside_a_checkout_confirms_only_the_checkout(twin, store, root):
    """Of two work trees, the first has a `.git` git cannot read and lost 2 files; the
    second was checked out to a commit without 200 of its files. git confirms the second's
    deletes all the same, so the 2 left do not trip the guard."""
    make_repo(root / "a", files=30, removed=20, changed=1)
    make_repo(root / "b")
    scanned_repo(store, root, 30 + FILES)
    shutil.rmtree(root / "a" / ".git")
    (root / "a" / ".git").mkdir()
    for name in sorted((root / "a" / "d0").iterdir())[:2]:
        name.unlink()
    checkout(root / "b", "small")
    r = scan(store)
    assert r.ok, r.reason
    assert r.delete == REMOVED + 2


@pytest.mark.parametrize("name", ["workX", "work "])
def test_a_checkout_of_a_repository_holding_its_files_at_its_top(twin, store, tmp_path, name):
    """A repository inside the watch (named `...X`, or ending in a space) whose 300 files
    lie in its top directory, checked out to a commit without 200 of them: git confirms
    the deletes."""
    root = tmp_path / name
    repo = root / "r"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(FILES):
        (repo / f"f{i:03d}.txt").write_text(f"file {i}\n")
    commit(repo, "main")
    git(repo, "checkout", "-qb", "small")
    git(repo, "rm", "-q", *[f"f{i:03d}.txt" for i in range(REMOVED)])
    git(repo, "commit", "-qm", "small")
    checkout(repo, "main")
    scanned_repo(store, root)
    checkout(repo, "small")
    r = scan(store)
    assert r.ok, r.reason
    assert r.delete == REMOVED


def test_tracked_files_removed_by_hand_below_the_work_tree_still_trip(twin, store, tmp_path):
    """A watch of a directory inside a repository whose tracked files are deleted by hand
    (git still holds them): stopped, as at the work tree's root."""
    repo = tmp_path / "repo"
    make_repo(repo, files=FILES * 10, removed=REMOVED * 10)
    root = repo / "d3"
    scanned_repo(store, root, FILES)
    for name in sorted(root.iterdir())[:REMOVED]:
        name.unlink()
    assert_stopped(store, scan(store))


# -- what git still tracks, or cannot confirm, is still stopped ----------------------------

def test_tracked_files_vanishing_still_trip(twin, store, root, holding):
    """A stray `rm` of 200 tracked files (or a share that lost them) with `.git` intact:
    git still holds them, so the guard stops the scan; --allow-mass-delete passes."""
    make_repo(root)
    scanned_repo(store, root)
    remove_tracked(root)
    assert_stopped(store, scan(store))
    r = scan(store, allow_mass_delete=True)
    assert r.ok and r.delete == REMOVED


def test_staged_removal_still_trips_until_committed(twin, store, root):
    """`git rm` of 200 files: the index no longer holds them but the commit checked out
    does, so they still count; once committed, they are git's doing."""
    make_repo(root)
    scanned_repo(store, root)
    git(root, "rm", "-q", *git(root, "ls-files").splitlines()[:REMOVED])
    assert_stopped(store, scan(store))
    git(root, "commit", "-qm", "rm")
    r = scan(store)
    assert r.ok and r.delete == REMOVED, r.reason


def test_a_share_that_lost_its_files_and_git(twin, store, root):
    """Files and `.git` gone together (half a share lost): nothing to confirm, stopped."""
    make_repo(root)
    scanned_repo(store, root)
    shutil.rmtree(root / ".git")
    for name in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.txt"))[:REMOVED]:
        (root / name).unlink()
    assert_stopped(store, scan(store))


def test_a_broken_git_directory_confirms_nothing(twin, store, root):
    """A `.git` that git cannot read (emptied): stopped, and the reason names the work
    tree, the git command and the last line git wrote."""
    checked_out_small(store, root)
    shutil.rmtree(root / ".git")
    (root / ".git").mkdir()
    r = scan(store)
    assert_stopped(store, r)
    assert f"git could not confirm the rest ({root}: git reflog: fatal: not a git " \
        "repository" in r.reason, r.reason


def test_without_git_nothing_is_confirmed(twin, store, root, tmp_path, monkeypatch):
    """No git program on PATH: the deletes count, and the reason says why."""
    checked_out_small(store, root)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = scan(store)
    assert_stopped(store, r)
    assert "git could not confirm" in r.reason and "cannot run git" in r.reason


def test_a_snapshot_without_a_whole_scan_confirms_nothing(twin, store, root):
    """A snapshot whose watch has no last scan recorded (a first scan killed after some of
    its batches committed leaves one): git cannot be asked what changed since, so a
    checkout's deletes count, and the reason says why."""
    make_repo(root)
    wid = scanned_repo(store, root)
    store.update_watch(wid, {"last_scan": None})
    checkout(root, "small")
    r = scan(store)
    assert_stopped(store, r)
    assert "(git could not confirm the rest (no whole scan to compare with))" in r.reason, \
        r.reason


def test_an_emptied_mountpoint_in_a_work_tree_still_trips(twin, store, root):
    """A share mounted inside a repository (untracked, not ignored) that went away leaves
    an empty directory: git never held its files, but it does not empty directories
    without removing them, so the guard stops the scan."""
    make_repo(root, files=20, removed=0, changed=0)
    share = root / "share"
    for i in range(200):
        (share / f"s{i // 50}").mkdir(parents=True, exist_ok=True)
        (share / f"s{i // 50}" / f"{i}.txt").write_text(f"share {i}")
    age(root)
    scanned_repo(store, root, 220)
    shutil.rmtree(share)
    share.mkdir()
    r = scan(store)
    assert_stopped(store, r)


@pytest.mark.parametrize("back", ["nothing", "lib", "lib/X"])
def test_a_directory_git_removed_that_is_back_empty_still_trips(twin, store, root, back):
    """Git removes each directory a checkout empties, up to the first one left with
    entries. A checkout that removed `lib/X/`'s 200 files is git's doing when `lib/` is
    gone; when `lib/` or `lib/X/` is there again, empty (a share's mountpoint, unmounted),
    someone else emptied it, and the guard stops the scan."""
    git(root, "init", "-q", "-b", "main")
    for i in range(20):
        (root / f"top{i:02d}.txt").write_text(f"top {i}\n")
    (root / "lib" / "X").mkdir(parents=True)
    for i in range(REMOVED):
        (root / "lib" / "X" / f"f{i:03d}.txt").write_text(f"lib {i}\n")
    commit(root, "main")
    git(root, "checkout", "-qb", "slim")
    git(root, "rm", "-rq", "lib")
    git(root, "commit", "-qm", "slim")
    checkout(root, "main")
    scanned_repo(store, root, 20 + REMOVED)
    checkout(root, "slim")
    assert not (root / "lib").exists()
    if back != "nothing":
        (root / back).mkdir(parents=True)
    r = scan(store)
    if back == "nothing":
        assert r.ok and r.delete == REMOVED, r
    else:
        assert_stopped(store, r)


def test_a_directory_a_checkout_replaced_by_a_file_is_gits_doing(twin, store, root):
    """A branch where the directory `lib/` (200 files) became a file `lib`: what stands
    where git's files were is not a directory at all, and the checkout is queued."""
    git(root, "init", "-q", "-b", "main")
    (root / "top.txt").write_text("top\n")
    (root / "lib").mkdir()
    for i in range(REMOVED):
        (root / "lib" / f"f{i:03d}.txt").write_text(f"lib {i}\n")
    commit(root, "main")
    git(root, "checkout", "-qb", "flat")
    git(root, "rm", "-rq", "lib")
    (root / "lib").write_text("now a file\n")
    commit(root, "flat")
    checkout(root, "main")
    scanned_repo(store, root, 1 + REMOVED)
    checkout(root, "flat")
    r = scan(store)
    assert r.ok, r.reason
    assert (r.delete, r.ingest) == (REMOVED, 1), r


def test_untracked_files_vanishing_in_a_work_tree_still_trip(twin, store, root):
    """Files git never tracked (200 beside a tracked README) that vanish were not git's
    doing, whatever HEAD and the index hold now: the guard stops the scan."""
    make_repo(root, files=20, removed=0, changed=0)
    (root / "data").mkdir()
    (root / "data" / "README").write_text("tracked")
    commit(root, "readme", "data/README")
    for i in range(200):
        (root / "data" / f"u{i:03d}.txt").write_text(f"untracked {i}")
    age(root)
    scanned_repo(store, root, 221)
    for i in range(200):
        (root / "data" / f"u{i:03d}.txt").unlink()
    assert_stopped(store, scan(store))


def test_a_checkout_beside_untracked_files_vanishing_says_what_git_confirmed(twin, store,
                                                                             root):
    """A checkout removes 200 tracked files (git's own) while 400 files git never tracked
    vanish: the guard counts the 400 of 700, and the reason says 200 more were git's."""
    make_repo(root)
    (root / "data").mkdir()
    for i in range(400):
        (root / "data" / f"u{i:03d}.txt").write_text(f"untracked {i}")
    age(root)
    scanned_repo(store, root, FILES + 400)
    checkout(root, "small")
    shutil.rmtree(root / "data")
    r = scan(store)
    assert not r.ok
    assert r.reason == ("mass-delete guard: the scan would delete 400 of 700 files (200 more "
                        "are git's own); nothing written (--allow-mass-delete to accept)")
    assert ops(store) == {}


def test_a_repository_above_the_watch_confirms_nothing_it_never_held(twin, store, tmp_path):
    """A repository of dotfiles at the home directory above a watched share: files of the
    share it never tracked vanish (a server that lost them) and the guard stops the scan."""
    home = tmp_path / "home"
    home.mkdir()
    git(home, "init", "-q", "-b", "main")
    (home / ".bashrc").write_text("# dotfiles")
    commit(home, "dotfiles", ".bashrc")
    share = home / "share"
    for d in range(10):
        for f in range(20):
            (share / f"d{d}").mkdir(parents=True, exist_ok=True)
            (share / f"d{d}" / f"f{f}.txt").write_text(f"{d} {f}")
    age(share)
    scanned_repo(store, share, 200)
    for d in range(10):
        for f in range(18):
            (share / f"d{d}" / f"f{f}.txt").unlink()
    assert_stopped(store, scan(store), deletes=180)


def test_several_checkouts_since_the_last_scan(twin, store, root):
    """main (scanned), then small, then a third branch: the files main held that the third
    no longer holds are git's doing, though small was never scanned."""
    checked_out_small(store, root)
    git(root, "checkout", "-qb", "third")
    (root / "third.txt").write_text("third")
    commit(root, "third", "third.txt")
    age(root)
    r = scan(store)
    assert r.ok and (r.delete, r.update, r.ingest) == (REMOVED, CHANGED, 1), r.reason


@pytest.mark.parametrize("how", ["emptied", "vanished"])
def test_an_emptied_or_vanished_repository_root_still_fails(twin, store, root, how):
    """The root checks come first: a repository root emptied (its `.git` too) or gone
    fails the watch whatever git would say."""
    make_repo(root)
    scanned_repo(store, root)
    if how == "emptied":
        for entry in root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    else:
        shutil.rmtree(root)
    r = scan(store)
    assert not r.ok
    assert ("empty" if how == "emptied" else "unavailable") in r.reason, r.reason
    assert ops(store) == {}


# -- submodules: their own repository decides ----------------------------------------------

@pytest.fixture
def superproject(root, tmp_path) -> Path:
    """`root`: a repository of 20 files with a submodule `sub` (the 300-file repository,
    with its branch `small`); everything scanned and acknowledged."""
    upstream = tmp_path / "upstream"
    make_repo(upstream)
    git(root, "init", "-q", "-b", "main")
    for i in range(20):
        (root / f"top{i}.txt").write_text(f"top {i}")
    git(root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(upstream),
        "sub")
    git(root / "sub", "fetch", "-q", "origin", "small:small")
    commit(root, "with sub")
    age(root)
    return root


def test_a_checkout_inside_a_submodule(twin, store, superproject):
    """A checkout in the submodule removing 200 of its files: the submodule's own
    repository confirms them, though the superproject never listed them."""
    scanned_repo(store, superproject, FILES + 20 + 1)  # .gitmodules too
    checkout(superproject / "sub", "small")
    assert_checkout_queued(store, scan(store))


def test_a_submodule_removed_by_hand_still_trips(twin, store, superproject):
    """The submodule's directory removed while the superproject still holds it (a
    gitlink): its files still count."""
    scanned_repo(store, superproject, FILES + 21)
    shutil.rmtree(superproject / "sub")
    assert_stopped(store, scan(store), deletes=FILES)


def test_a_submodule_emptied_of_its_tracked_files_still_trips(twin, store, superproject):
    """`rm` of the submodule's tracked files, its `.git` file left: its repository still
    holds them."""
    scanned_repo(store, superproject, FILES + 21)
    sub = superproject / "sub"
    remove_tracked(sub)
    assert_stopped(store, scan(store))


def test_cli_reports_the_stop_in_one_line(tmp_path, capsys, root):
    """On the command line a stopped scan is one line naming the guard, exit 1."""
    make_repo(root)
    db = str(tmp_path / "wq.db")
    assert main(["--db", db, "add", str(root), "--collection", "r", "-q"]) == 0
    assert main(["--db", db, "reconcile", "-q"]) == 0
    remove_tracked(root)
    capsys.readouterr()
    assert main(["--db", db, "reconcile"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mass-delete guard" in err, err
    assert stat.S_ISDIR(os.stat(root / ".git").st_mode)


# -- a checkout there and back -------------------------------------------------------------

def test_a_checkout_there_and_back_queues_nothing(twin, dbstore, root):
    """The consumer has main; `git checkout small; reconcile; git checkout main; reconcile`
    brings every file back to what the consumer has: no row is left (on either store)."""
    make_repo(root)
    scanned_repo(dbstore, root)
    checkout(root, "small")
    assert scan(dbstore).ok
    assert len(ops(dbstore)) == REMOVED + CHANGED
    checkout(root, "main")
    r = scan(dbstore)
    assert r.ok and (r.ingest, r.update) == (REMOVED, CHANGED), r.reason
    assert queue(dbstore, None) == []


def test_a_checkout_beside_a_broken_repository_losing_files_gives_both_reasons(twin, store,
                                                                              root):
    """A checkout removes 200 tracked files of one work tree while 360 files of another,
    whose `.git` git cannot read, vanish: the guard counts the 360 of 700, and the reason
    says both that 200 were git's and why git could not confirm the rest."""
    make_repo(root / "a", files=400, removed=20, changed=1)
    make_repo(root / "b")
    scanned_repo(store, root, 400 + FILES)
    shutil.rmtree(root / "a" / ".git")
    (root / "a" / ".git").mkdir()
    for name in sorted((root / "a").rglob("f*.txt"))[:360]:
        name.unlink()
    checkout(root / "b", "small")
    r = scan(store)
    assert not r.ok
    assert r.reason == (
        "mass-delete guard: the scan would delete 360 of 700 files (200 more are git's own; "
        f"git could not confirm the rest ({root / 'a'}: git reflog: fatal: not a git "
        "repository (or any of the parent directories): .git)); nothing written "
        "(--allow-mass-delete to accept)")
    assert ops(store) == {}
