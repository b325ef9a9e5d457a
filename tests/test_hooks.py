"""`wqscan hook install/uninstall` with real git repositories and real checkouts."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import apsw
import pytest
from helpers.gitrepo import commit, git_run
from helpers.ondisk import read_rows
from helpers.procs import wait_until

from wqscan.cli import main

pytestmark = pytest.mark.scanner_free

HOOKS = ("post-checkout", "post-merge", "post-rewrite")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with two commits on main and a branch `other` that adds a file."""
    r = tmp_path / "repo"
    r.mkdir()
    git_run(r, "init", "-q", "-b", "main")
    (r / "a.txt").write_text("a")
    commit(r, "a", "a.txt")
    git_run(r, "checkout", "-qb", "other")
    (r / "b.txt").write_text("b")
    commit(r, "b", "b.txt")
    git_run(r, "checkout", "-q", "main")
    return r


def pending(db: Path) -> set[str]:
    return {r[0] for r in read_rows(
        db, "SELECT file_absolute_path FROM ingestion_queue WHERE status = 'pending'")}


def install(db: Path, repo: Path, capsys) -> None:
    """`wqscan init` (hook install creates no database), then `hook install`."""
    assert main(["--db", str(db), "init", "-q"]) == 0
    assert main(["--db", str(db), "hook", "install", str(repo)]) == 0
    capsys.readouterr()


def test_install_writes_three_hooks_that_rescan_after_checkout(tmp_path, repo, capsys):
    """After install, a checkout queues the files it brought, via a background reconcile."""
    db = tmp_path / "wq.db"
    assert main(["--db", str(db), "add", str(repo), "--collection", "r", "--settle", "0"]) == 0
    assert main(["--db", str(db), "reconcile", "-q"]) == 0
    install(db, repo, capsys)
    hooks = repo / ".git" / "hooks"
    for name in HOOKS:
        mode = (hooks / name).stat().st_mode
        assert mode & stat.S_IXUSR, name
        text = (hooks / name).read_text()
        assert str(db) in text and "reconcile --path" in text and sys.executable in text
    git_run(repo, "checkout", "-q", "other")
    b = str((repo / "b.txt").resolve())
    assert wait_until(lambda: b in pending(db)), "the checkout did not trigger a rescan"


def test_merge_and_rewrite_hooks_fire(tmp_path, repo, capsys):
    """post-merge and post-rewrite start a rescan too."""
    db = tmp_path / "wq.db"
    assert main(["--db", str(db), "add", str(repo), "--collection", "r", "--settle", "0"]) == 0
    install(db, repo, capsys)
    git_run(repo, "merge", "-q", "other")
    b = str((repo / "b.txt").resolve())
    assert wait_until(lambda: b in pending(db)), "the merge did not trigger a rescan"
    (repo / "c.txt").write_text("c")
    git_run(repo, "add", "c.txt")
    git_run(repo, "commit", "-q", "--amend", "--no-edit")
    c = str((repo / "c.txt").resolve())
    assert wait_until(lambda: c in pending(db)), "the amend did not trigger a rescan"


def test_existing_hook_is_chained_and_restored(tmp_path, repo, capsys):
    """A hook already there still runs first, with its arguments and exit status; uninstall
    puts it back untouched."""
    hooks = repo / ".git" / "hooks"
    log = tmp_path / "old.log"
    old = f'#!/bin/sh\necho "$@" >> {log}\nexit 3\n'
    (hooks / "post-checkout").write_text(old)
    (hooks / "post-checkout").chmod(0o755)
    db = tmp_path / "wq.db"
    install(db, repo, capsys)
    assert (hooks / "post-checkout.wqscan-chained").read_text() == old
    done = git_run(repo, "checkout", "-q", "other", check=False)
    assert done.returncode != 0  # git reports the chained hook's failure, as before
    args = log.read_text().split()
    assert len(args) == 3 and args[2] == "1"  # old-ref, new-ref, branch flag
    assert main(["--db", str(db), "hook", "uninstall", str(repo)]) == 0
    assert (hooks / "post-checkout").read_text() == old
    assert not (hooks / "post-checkout.wqscan-chained").exists()
    assert not (hooks / "post-merge").exists()


def test_post_rewrite_chained_hook_gets_its_input(tmp_path, repo, capsys):
    """post-rewrite's list of rewritten commits still reaches the chained hook's stdin."""
    hooks = repo / ".git" / "hooks"
    seen = tmp_path / "stdin.log"
    (hooks / "post-rewrite").write_text(f"#!/bin/sh\ncat >> {seen}\n")
    (hooks / "post-rewrite").chmod(0o755)
    install(tmp_path / "wq.db", repo, capsys)
    before = git_run(repo, "rev-parse", "HEAD").stdout.strip()
    git_run(repo, "commit", "-q", "--amend", "-m", "renamed")
    assert seen.read_text().split()[0] == before


def test_core_hooks_path_is_respected(tmp_path, repo, capsys):
    """With core.hooksPath set, the hooks go there and not into .git/hooks."""
    custom = tmp_path / "myhooks"
    git_run(repo, "config", "core.hooksPath", str(custom))
    install(tmp_path / "wq.db", repo, capsys)
    for name in HOOKS:
        assert (custom / name).exists()
        assert not (repo / ".git" / "hooks" / name).exists()


def test_install_twice_and_uninstall_leave_no_trace(tmp_path, repo, capsys):
    """Installing twice does not chain wqscan to itself; uninstall removes only its hooks."""
    hooks = repo / ".git" / "hooks"
    before = sorted(p.name for p in hooks.iterdir())
    install(tmp_path / "wq.db", repo, capsys)
    install(tmp_path / "wq.db", repo, capsys)
    assert not any(p.name.endswith(".wqscan-chained") for p in hooks.iterdir())
    assert main(["--db", str(tmp_path / "wq.db"), "hook", "uninstall", str(repo)]) == 0
    assert sorted(p.name for p in hooks.iterdir()) == before


def test_hook_runs_only_wqscan_and_the_chained_hook(tmp_path, repo, capsys):
    """The installed script starts nothing but the chained hook and wqscan itself."""
    install(tmp_path / "wq.db", repo, capsys)
    text = (repo / ".git" / "hooks" / "post-checkout").read_text()
    commands = [line.strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    runs = [c for c in commands if c.startswith(("(", '"$chained"'))]
    assert len(runs) == 2
    assert runs[1].startswith(f"( {sys.executable} -P -m wqscan ")


def test_not_a_repository_is_a_usage_error(tmp_path, capsys):
    """hook install outside a repository exits 2 with one line."""
    plain = tmp_path / "plain"
    plain.mkdir()
    code = main(["--db", str(tmp_path / "wq.db"), "hook", "install", str(plain)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "git" in err


def test_checkout_hook_queues_the_whole_new_tree_with_the_default_settle(tmp_path, capsys):
    """With the default settle time (2 s), every file a checkout wrote is younger than it:
    the hook's one run still leaves the queue reflecting the new work tree completely,
    with no other run."""
    r = tmp_path / "big"
    r.mkdir()
    git_run(r, "init", "-q", "-b", "main")
    for i in range(60):
        (r / f"f{i:02d}.txt").write_text(f"main {i}")
    commit(r, "main", ".")
    git_run(r, "checkout", "-qb", "topic")
    for i in range(0, 60, 2):
        (r / f"f{i:02d}.txt").write_text(f"topic {i}, longer")
    for i in range(1, 60, 6):
        (r / f"f{i:02d}.txt").unlink()
    for i in range(5):
        (r / f"new{i}.txt").write_text(f"new {i}")
    commit(r, "topic")
    git_run(r, "checkout", "-q", "main")
    for p in r.glob("*.txt"):  # main's files are old: a first scan queues them all
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    db = tmp_path / "wq.db"
    assert main(["--db", str(db), "add", str(r), "--collection", "r", "-q"]) == 0
    assert main(["--db", str(db), "reconcile", "-q"]) == 0
    with apsw.Connection(str(db)) as conn:
        conn.execute("DELETE FROM ingestion_queue")  # consumed
    install(db, r, capsys)
    git_run(r, "checkout", "-q", "topic")
    names = git_run(r, "diff", "--name-status", "main", "topic").stdout.split("\n")
    want = {f"{r.resolve()}/{line.split()[1]}": {"A": "ingest", "M": "update", "D": "delete"}[
        line.split()[0]] for line in names if line}
    assert len(want) == 30 + 10 + 5

    def queued() -> dict[str, str]:
        return dict(read_rows(db, "SELECT file_absolute_path, operation FROM ingestion_queue "
                                  "WHERE status = 'pending'"))

    def settled() -> bool:
        stats = read_rows(db, "SELECT last_deferred FROM wq_watch_stats")
        return queued() == want and stats == [(0,)] and not read_rows(
            db, "SELECT 1 FROM wq_leases")

    assert wait_until(settled, 30), (len(queued()), read_rows(db, "SELECT * FROM wq_watch_stats"))


# -- a trace of every hook run ---------------------------------------------------------------

def hook_runs(db: Path) -> list[tuple]:
    return read_rows(db, "SELECT watch_id, hook, result, reason, log FROM wq_hook_runs")


def test_a_hook_run_is_logged_and_shown_by_status(tmp_path, repo, capsys, monkeypatch):
    """A hook's scan appends its output to the log under $XDG_STATE_HOME/wqscan/, and
    `status` shows each watch's last run by a hook, its result and where the log is; a run
    the guard stops is shown as failed, with the reason, in both."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    log = state / "wqscan" / "hooks.log"
    db = tmp_path / "wq.db"
    for i in range(150):
        (repo / f"t{i:03d}.txt").write_text(f"tracked {i}")
    commit(repo, "more")
    git_run(repo, "checkout", "-q", "other")
    git_run(repo, "merge", "-q", "main")  # both branches hold the 150 files
    git_run(repo, "checkout", "-q", "main")
    assert main(["--db", str(db), "add", str(repo), "--collection", "r", "--settle", "0",
                 "--id", "r", "-q"]) == 0
    assert main(["--db", str(db), "reconcile", "-q"]) == 0
    capsys.readouterr()
    assert main(["--db", str(db), "hook", "install", str(repo)]) == 0
    assert f"their scans log to {log}" in capsys.readouterr().out
    git_run(repo, "checkout", "-q", "other")
    assert wait_until(lambda: log.exists() and "exit 0" in log.read_text()), \
        log.read_text() if log.exists() else "no log"
    assert wait_until(lambda: hook_runs(db) == [("r", "post-checkout", "ok", None, str(log))])
    text = log.read_text()
    assert "reconcile by git post-checkout of" in text and "r: 1 ingest" in text, text
    assert main(["--db", str(db), "status"]) == 0
    out = capsys.readouterr().out
    assert "r: last scan by git post-checkout at " in out and f": ok; log: {log}" in out, out

    for i in range(150):  # a share that lost its tracked files: the guard stops the scan
        (repo / f"t{i:03d}.txt").unlink()
    git_run(repo, "checkout", "-q", "main")
    assert wait_until(lambda: hook_runs(db)[0][2] == "failed"), hook_runs(db)
    (_, hook, result, reason, _), = hook_runs(db)
    assert hook == "post-checkout" and "mass-delete guard" in reason
    assert wait_until(lambda: "exit 1" in log.read_text())
    assert "wqscan: error: r: mass-delete guard" in log.read_text()
    assert main(["--db", str(db), "status", "--json"]) == 0
    (w,) = json.loads(capsys.readouterr().out)["watches"]
    assert w["last_hook_run"]["result"] == "failed" and w["last_hook_run"]["log"] == str(log)


def test_the_hook_log_stays_bounded(tmp_path, repo, capsys, monkeypatch):
    """A log past 1 MiB is rotated to hooks.log.1 before the next run appends."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    log = state / "wqscan" / "hooks.log"
    db = tmp_path / "wq.db"
    assert main(["--db", str(db), "add", str(repo), "--collection", "r", "-q"]) == 0
    install(db, repo, capsys)
    log.parent.mkdir(parents=True)
    log.write_text("old line\n" * 120_000)  # over 1 MiB
    git_run(repo, "checkout", "-q", "other")
    assert wait_until(lambda: log.exists() and "exit 0" in log.read_text())
    assert (state / "wqscan" / "hooks.log.1").stat().st_size > 1 << 20
    assert log.stat().st_size < 4096 and "old line" not in log.read_text()


def test_reinstall_with_another_database_says_it_repoints(tmp_path, repo, capsys):
    """`hook install` again with another database re-points the hooks and says so; again
    with the same database it says nothing of the kind."""
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    install(one, repo, capsys)
    assert main(["--db", str(two), "init", "-q"]) == 0
    assert main(["--db", str(two), "hook", "install", str(repo)]) == 0
    out = capsys.readouterr().out
    assert f"re-pointed the hooks from database {one} to {two}" in out, out
    assert main(["--db", str(two), "hook", "install", str(repo)]) == 0
    assert "re-pointed" not in capsys.readouterr().out
    assert str(two) in (repo / ".git" / "hooks" / "post-merge").read_text()


def test_a_relative_xdg_state_home_is_ignored(tmp_path, repo, capsys, monkeypatch):
    """The XDG rules ignore a relative $XDG_STATE_HOME: the log goes under
    ~/.local/state."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    install(tmp_path / "wq.db", repo, capsys)
    text = (repo / ".git" / "hooks" / "post-checkout").read_text()
    assert f"--log {home}/.local/state/wqscan/hooks.log" in text, text
