"""Security: symlinks never lead a scan outside the watch root (also when a directory is
swapped for a symlink while it is being scanned), credentials in remote URLs never reach
the queue or any output, the YAML loader constructs nothing and survives alias bombs,
git hooks and hostile repositories never run anything they should not, a repository's
name cannot borrow another repository's tenant, and the database is created no wider
than the umask allows.

Scans of the symlink tests run in process on both twins; everything that depends on a real
environment (git, hooks, umask, GitPython, the YAML loader's limits) runs `python -m wqscan`
in a subprocess with a timeout. The tests whose hostile input ends up in the database
(credentials, odd repository paths, branch names and database names full of shell syntax)
run on both stores (fixture `database`: an SQLite file, a PostgreSQL schema).
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import one_line, wqscan
from helpers.db import Db, drain, dump, queue, scan, watch
from helpers.gitrepo import GIT_ENV, commit, git_run
from helpers.ondisk import dump_db
from helpers.procs import wait_until
from helpers.trees import OLD_NS, h, write
from helpers.twins import twin_env

from wqscan import _scan
from wqscan.cli.paths import default_hook_log
from wqscan.errors import UsageError
from wqscan.reconcile import reconcile
from wqscan.store import Store, Target

# -- helpers -------------------------------------------------------------------------------

def snapshot_paths(store: Store, wid: str) -> dict[str, str]:
    """{relative path: hex hash} of every file in a watch's snapshot."""
    out = {}
    for key, blob in store.snapshot_rows(wid):
        for e in _scan.decode_entries(blob):
            out[key + e.name] = e.hash.hex()
    return out


def assert_inside(store: Store, wid: str, root: Path, secret_hashes: set[str] = frozenset(),
                  texts: tuple[str, ...] = (), resolve: bool = True) -> None:
    """Nothing the scan left behind names or holds anything outside `root`: every queue row
    (any status) lies below the root and resolves below it, no row, snapshot entry or text
    names a SECRET file, and no hash is that of an outside file. With `resolve`, queued
    paths that exist must also resolve below the root (not while the tree is being
    swapped about)."""
    real_root = os.path.realpath(root)
    for r in queue(store, None):
        path, md = r["file_absolute_path"], r["metadata"] or {}
        assert path.startswith(str(root) + "/"), path
        assert ".." not in md.get("relative_path", "").split("/"), md
        assert "SECRET" not in path and "SECRET" not in json.dumps(md), r
        assert md.get("content_hash") not in secret_hashes, r
        assert md.get("previous_hash") not in secret_hashes, r
        if resolve and os.path.lexists(path) and r["operation"] != "delete":
            real = os.path.realpath(path)
            assert real.startswith(real_root + "/"), (path, real)
    for rel, digest in snapshot_paths(store, wid).items():
        assert "SECRET" not in rel and digest not in secret_hashes, rel
    for t in texts:
        assert "SECRET" not in t, t


# -- 1. symlinks never lead outside the root -------------------------------------------------

def _link_zoo(tmp_path: Path, root: Path) -> tuple[Path, list[str]]:
    """A root full of links that try to leave it (and a few that stay inside); returns the
    outside directory and the names of the links."""
    outside = tmp_path / "outside"
    write(outside / "SECRET.txt", "SECRET top")
    write(outside / "sub" / "SECRET-deep.txt", "SECRET deep")
    write(root / "a.txt", "a")
    write(root / "b" / "c" / "inner.txt", "inner")
    links = [
        ("abs_dir", str(outside)),                      # absolute, to a directory
        ("abs_file", str(outside / "SECRET.txt")),      # absolute, to a file
        ("rel_dir", "../outside"),                      # relative
        ("rel_file", "../outside/SECRET.txt"),
        ("b/c/up", "../../../outside"),                 # a -> ../../etc
        ("b/c/up_etc", "../../../../../../../../../../etc"),  # climbs past / to /etc
        ("via_inside", "b/../../outside"),              # a -> b/../../outside
        ("lexical", "b/c/up/sub"),                      # inside by its text, outside in fact
        ("lexical_up", "b/c/up/.."),                    # the root's parent, via a link
        ("chain1", "chain2"), ("chain2", "chain3"), ("chain3", str(outside)),  # chains
        ("fchain1", "fchain2"), ("fchain2", "../outside/SECRET.txt"),
        ("root_abs", str(root)), ("root_rel", f"../{root.name}"), ("dot", "."),  # the root
        ("b/c/top", "../.."),
        ("loop1", "loop2"), ("loop2", "loop1"), ("self_loop", "self_loop"),  # loops
        ("fs_root", "/"), ("etc_passwd", "/etc/passwd"), ("proc_root", "/proc/self/root"),
        ("proc_cwd", "/proc/self/cwd"), ("dev_zero", "/dev/zero"),
        ("in_file", "a.txt"), ("in_dir", "b"), ("in_to_out", "b/c/up"),  # inside, and one
    ]                                                   # inside link to a link leading out
    for name, target in links:
        os.symlink(target, root / name)
    return outside, [n for n, _ in links]


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow"])
def test_hostile_symlinks_never_lead_outside(twin, store, root, tmp_path, follow):
    """Absolute, relative, `..`, lexical-trap, chained, looping, /proc and root-pointing
    links: nothing outside the root is queued, recorded or named; only links to files and
    directories inside are followed (with --follow-symlinks); the scan terminates and a
    rescan is quiet."""
    _, names = _link_zoo(tmp_path, root)
    secrets = {h("SECRET top"), h("SECRET deep")}
    wid = watch(store, root, follow_symlinks=follow)
    r = scan(store)
    assert r.ok, r.reason
    expected = {"a.txt", "b/c/inner.txt"}
    if follow:
        expected |= {"in_file", "in_dir/c/inner.txt"}
    got = {row["metadata"]["relative_path"]: row["operation"] for row in queue(store)}
    assert got == {p: "ingest" for p in expected}
    assert set(snapshot_paths(store, wid)) == expected
    assert_inside(store, wid, root, secrets, tuple(r.warnings))
    if follow:  # every link whose target exists outside the root was reported
        for name in names:
            try:
                real = os.path.realpath(root / name, strict=True)
            except OSError:
                continue
            if real != str(root) and not real.startswith(str(root) + "/") \
                    and not str(root).startswith(real.rstrip("/") + "/"):
                assert any(w.startswith(name + ":") for w in r.warnings), (name, r.warnings)
    drain(store)
    r = scan(store)
    assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)
    assert queue(store) == []


@pytest.mark.parametrize("target", ["abs_dir", "lexical", "b/c/up/sub", "lexical/SECRET-deep.txt",
                                    "rel_file", "proc_root"])
def test_scoped_path_through_a_link_leading_outside_is_refused(twin, store, root, tmp_path,
                                                               target):
    """`reconcile --path` through a symlink that leaves the root names no watch: a usage
    error, and nothing is written."""
    _link_zoo(tmp_path, root)
    wid = watch(store, root, follow_symlinks=True)
    with pytest.raises(UsageError):
        reconcile(store, path=str(root / target))
    assert queue(store, None) == [] and snapshot_paths(store, wid) == {}


def test_root_replaced_by_symlink_to_outside_is_not_scanned(twin, store, root, tmp_path):
    """A watch root that has become a symlink (the stored root had its symlinks resolved)
    is not followed outside: nothing from the link's target is queued or recorded."""
    outside = tmp_path / "outside"
    write(outside / "SECRET.txt", "SECRET top")
    write(root / "a.txt", "a")
    wid = watch(store, root)
    assert scan(store).ok
    drain(store)
    os.rename(root, tmp_path / "tree.real")
    os.symlink(outside, root)
    r = scan(store)
    assert_inside(store, wid, root, {h("SECRET top")}, tuple(r.warnings) + (str(r.reason),))


# -- 2. a directory swapped for a symlink while it is scanned --------------------------------

SWAPPER = """
import os, random, sys, time

def hold():  # each state lasts 0 to 200 us, so windows of every width meet a change
    end = time.perf_counter() + random.random() * 2e-4
    while time.perf_counter() < end:
        pass

victim, real, link = sys.argv[1:4]
while True:
    os.rename(victim, real)   # the directory leaves...
    os.rename(link, victim)   # ...a symlink to the outside takes its place...
    hold()
    os.rename(victim, link)
    os.rename(real, victim)   # ...and the directory comes back
    hold()
"""
RACE_SECONDS = {False: 2.5, True: 4.0}  # in process, without and with --follow-symlinks
RACE_CLI_SECONDS = 1.5
DEEP = "/".join(f"s{k}" for k in range(10))


def _race_tree(tmp_path: Path, follow: bool) -> tuple[Path, Path, set[str], set[str]]:
    """root/victim/dNN/pubJ.txt (and a file ten directories further down) next to an
    outside directory of the same layout holding SECRET files and same-named files with
    secret content; inside links alias* lead to the deep directories through victim, so
    that a followed link is resolved through the directory being swapped; 300 stable
    files keep the victim's share below the mass-delete guard. Returns root, stage, the
    files the tree holds (as the watch sees it) and the hashes of every outside file."""
    root, outside, stage = tmp_path / "tree", tmp_path / "outside", tmp_path / "stage"
    files, secrets = set(), set()
    for i in range(24):
        d = f"d{i:02d}"
        for j in range(3):
            write(root / "victim" / d / f"pub{j}.txt", f"public {i} {j}")
            files.add(f"victim/{d}/pub{j}.txt")
            write(outside / d / f"pub{j}.txt", f"SECRET content {i} {j}")
            write(outside / d / f"SECRET{j}.txt", f"SECRET {i} {j}")
            secrets |= {h(f"SECRET content {i} {j}"), h(f"SECRET {i} {j}")}
        write(root / "victim" / d / DEEP / "deep.txt", f"deep {i}")
        files.add(f"victim/{d}/{DEEP}/deep.txt")
        write(outside / d / DEEP / "deep.txt", f"SECRET deep content {i}")
        write(outside / d / DEEP / "SECRETdeep.txt", f"SECRET deep {i}")
        secrets |= {h(f"SECRET deep content {i}"), h(f"SECRET deep {i}")}
        for a in range(4):
            os.symlink(f"victim/{d}/{DEEP}", root / f"alias{i:02d}{a}")
            if follow:
                files.add(f"alias{i:02d}{a}/deep.txt")
    for i in range(300):
        write(root / "stable" / f"s{i:03d}.txt", f"stable {i}")
        files.add(f"stable/s{i:03d}.txt")
    stage.mkdir()
    os.symlink(outside, stage / "link")
    return root, stage, files, secrets


def _restore(root: Path, stage: Path) -> None:
    victim = root / "victim"
    if victim.is_symlink():
        os.rename(victim, stage / "link")
    if (stage / "real").exists():
        os.rename(stage / "real", victim)
    assert victim.is_dir() and not victim.is_symlink()


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow"])
def test_directory_swapped_for_symlink_mid_scan_never_leads_outside(twin, store, tmp_path,
                                                                     follow):
    """While another process keeps swapping root/victim for a symlink to an outside
    directory of the same layout, hundreds of scans (in process, then, without
    --follow-symlinks, `reconcile --json` in a subprocess with the same twin) never queue,
    record, hash or name an outside file, neither below victim nor below the followed
    links that lead through it; once the swapping stops, one scan brings the snapshot
    back to exactly the tree."""
    root, stage, files, secrets = _race_tree(tmp_path, follow)
    wid = watch(store, root, follow_symlinks=follow)
    assert scan(store).ok
    assert set(snapshot_paths(store, wid)) == files
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(root / "victim"),
                                str(stage / "real"), str(stage / "link")])
    scans = disturbed = 0
    try:
        end = time.monotonic() + RACE_SECONDS[follow]
        while time.monotonic() < end:
            warnings: list[str] = []
            reports = reconcile(store, on_warning=lambda w, rel, m: warnings.append(
                f"{rel}: {m}"))
            scans += 1
            texts = tuple(warnings) + tuple(json.dumps(r.to_json()) for r in reports)
            assert_inside(store, wid, root, secrets, texts, resolve=False)
            if warnings or any(r.delete or r.update for r in reports):
                disturbed += 1
        if not follow:  # the command line's JSON report, on the same twin
            env = twin_env(twin)
            end = time.monotonic() + RACE_CLI_SECONDS
            while time.monotonic() < end:
                done = wqscan(store.path, "reconcile", "--json", env=env, timeout=60)
                assert done.returncode in (0, 1), done.stderr  # 1: a guard or root check
                assert "SECRET" not in done.stdout + done.stderr
                assert "Traceback" not in done.stderr
                assert_inside(store, wid, root, secrets, resolve=False)
                scans += 1
    finally:
        swapper.kill()
        swapper.wait()
        _restore(root, stage)
    assert disturbed > 0, f"the swaps never met a scan in {scans} scans"
    r = scan(store)
    assert r.ok, r.reason
    assert set(snapshot_paths(store, wid)) == files
    assert_inside(store, wid, root, secrets, tuple(r.warnings))


# -- 3. credentials in remote URLs -------------------------------------------------------------

CRED_REPOS = {
    # directory: (remote name, url, tenant)
    "r1": ("origin", "https://aliceuser7:Sup3rSecretPw@git.example.org/Team/A.git",
           "git_example_org_team_a"),
    "r2": ("origin", "ssh://bobuser8:Pa55wordSsh@git.example.org:2222/team/b",
           "git_example_org_2222_team_b"),
    "r3": ("origin", "https://ghp_TokenAbcdef1234567890@github.com/org/c.git", "github_com_org_c"),
    "r4": ("origin", "https://x-access-token:ghs_InstallTok999@github.com/org/d.git",
           "github_com_org_d"),
    "r5": ("origin", "https://oauth2:glpat-GitLabTok777@gitlab.com/g/e.git", "gitlab_com_g_e"),
    "r6": ("origin", "caroluser9:ScpSecret42@host.example:team/f.git", "host_example_team_f"),
    "r7": ("origin", "https://daveuser:At@Sign@Secret9@host.example/h.git", "host_example_h"),
    "r8": ("origin", "HTTPS://erinuser:Pct%2FSecret8@Host.Example:8443/I.git/",
           "host_example_8443_i"),
    "r9": ("backup", "https://frankuser:BackupPw55@backup.example/r9.git", "backup_example_r9"),
}
SECRETS = ("aliceuser7", "Sup3rSecretPw", "bobuser8", "Pa55wordSsh", "TokenAbcdef1234567890",
           "ghs_InstallTok999", "glpat-GitLabTok777", "caroluser9", "ScpSecret42", "daveuser",
           "Secret9", "erinuser", "Secret8", "frankuser", "BackupPw55")


def _no_secret(where: str, text: str) -> None:
    low = text.lower()
    for s in SECRETS:
        assert s.lower() not in low, (where, s, text[:2000])


@pytest.mark.scanner_free
def test_credentials_in_remote_urls_never_leak(tmp_path, database):
    """Users, passwords and tokens of remote URLs reach no queue row, no table of the
    database (either store), and no output of reconcile (text, --json, --dry-run, -v), run
    --once, status, show, list, metrics and queue list/stats/claim; the tenants are the
    sanitized URLs."""
    tree = tmp_path / "tree"
    for d, (remote, url, _) in CRED_REPOS.items():
        r = tree / d
        r.mkdir(parents=True)
        git_run(r, "init", "-q", "-b", "main")
        git_run(r, "remote", "add", remote, "https://placeholder.example/x.git")
        git_run(r, "config", f"remote.{remote}.url", url)
        write(r / "f.txt", f"file of {d}")
    db = database
    assert wqscan(db, "add", str(tree), "--collection", "c", "--settle", "0").returncode == 0
    outputs = []
    for args in (["reconcile", "--dry-run", "--json"], ["-v", "reconcile", "--dry-run"],
                 ["run", "--once"], ["reconcile"], ["-v", "reconcile", "--json"],
                 ["status"], ["status", "--json"], ["show", "tree"], ["show", "tree", "--json"],
                 ["list"], ["list", "--json"], ["metrics"], ["queue", "list"],
                 ["queue", "list", "--json"], ["queue", "stats", "--json"],
                 ["queue", "claim", "3", "--json"], ["queue", "claim", "3"]):
        done = wqscan(db, *args)
        assert done.returncode == 0, (args, done.stderr)
        _no_secret(" ".join(args), done.stdout + done.stderr)
        outputs.append(done.stdout)
    tenants = {}
    for row in json.loads(wqscan(db, "queue", "list", "--json", "--limit", "0").stdout):
        tenants[row["metadata"]["relative_path"]] = row["tenant_id"]
    assert tenants == {f"{d}/f.txt": tenant for d, (_, _, tenant) in CRED_REPOS.items()}
    if database.kind == "sqlite":
        for path in (Path(db.target.db), Path(db.target.db + "-wal")):
            if path.exists():
                _no_secret(path.name, path.read_bytes().decode("latin-1"))
    content = dump(database)
    tables = dict(t for t in content if isinstance(t, tuple))
    assert tables["ingestion_queue"] and tables["watch_folders"], "nothing to look through"
    _no_secret("dump", repr(content))


# -- 4. hostile repositories -------------------------------------------------------------------

@pytest.mark.scanner_free
def test_repository_named_like_an_environment_variable_keeps_its_own_tenant(tmp_path,
                                                                          database):
    """A repository directory literally named `$USER` next to a repository named after the
    variable's value: each file gets its own repository's tenant and branch (a path is
    never expanded like a shell word; either store), and no library warning reaches
    stderr."""
    tree = tmp_path / "tree"
    neighbour, odd = tree / "neighbour", tree / "$USER"
    for r, url, branch in ((neighbour, "https://github.com/victim/private.git", "secret-branch"),
                           (odd, "https://github.com/attacker/x.git", "mine")):
        r.mkdir(parents=True)
        git_run(r, "init", "-q", "-b", branch)
        git_run(r, "remote", "add", "origin", url)
        write(r / "f.txt", str(r))
    db = database
    assert wqscan(db, "add", str(tree), "--collection", "c", "--settle", "0").returncode == 0
    done = wqscan(db, "reconcile", env={**os.environ, "USER": "neighbour"})
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    rows = {row["metadata"]["relative_path"]: (row["tenant_id"], row["branch"])
            for row in json.loads(wqscan(db, "queue", "list", "--json").stdout)}
    assert rows == {"neighbour/f.txt": ("github_com_victim_private", "secret-branch"),
                    "$USER/f.txt": ("github_com_attacker_x", "mine")}


@pytest.mark.scanner_free
def test_hostile_repository_configuration_runs_nothing(tmp_path):
    """Reading tenant and branch of a repository whose config names commands (fsmonitor,
    pager, ssh command, askpass, external diff, credential helper, an ext:: remote) on a
    detached HEAD runs none of them."""
    repo = tmp_path / "tree" / "repo"
    repo.mkdir(parents=True)
    git_run(repo, "init", "-q", "-b", "main")
    (repo / "f.txt").write_text("x")
    commit(repo, "x", "f.txt")
    sha = git_run(repo, "rev-parse", "HEAD").stdout.strip()
    git_run(repo, "checkout", "-q", "--detach")
    marks = tmp_path / "marks"
    marks.mkdir()
    for key, value in (("core.fsmonitor", f"touch {marks}/fsmonitor; false"),
                       ("core.pager", f"touch {marks}/pager"),
                       ("core.sshCommand", f"touch {marks}/ssh"),
                       ("core.askPass", f"touch {marks}/askpass"),
                       ("diff.external", f"touch {marks}/diff"),
                       ("credential.helper", f"!touch {marks}/credential"),
                       ("core.alternateRefsCommand", f"touch {marks}/altrefs")):
        git_run(repo, "config", key, value)
    git_run(repo, "remote", "add", "origin", f"ext::sh -c touch% {marks}/ext")
    os.utime(repo / "f.txt", ns=(OLD_NS, OLD_NS))
    db = tmp_path / "wq.db"
    assert wqscan(db, "add", str(tmp_path / "tree"), "--collection", "c", "--settle", "0",
               env=GIT_ENV).returncode == 0
    done = wqscan(db, "reconcile", env=GIT_ENV)
    assert done.returncode == 0, done.stderr
    assert list(marks.iterdir()) == []
    (row,) = json.loads(wqscan(db, "queue", "list", "--json").stdout)
    assert row["branch"] == sha


# -- 5. git hooks --------------------------------------------------------------------------------

#: Shell metacharacters for a directory name: substitutions, quotes, a newline, `;`, `\`.
NASTY = "r $(touch PWNED1) `touch PWNED2` 'q\" x\ny; touch PWNED3 \\ & | > PWNED4 <"
#: A branch name git accepts that is full of shell syntax.
NASTY_BRANCH = "b$(touch${IFS}PWNED5)`touch${IFS}PWNED6`;'q\"&|PWNED7"


def hostile_db(database: Db, base: Path) -> Db:
    """The test's database named by a string full of shell syntax: an SQLite file below a
    directory so named, or the PostgreSQL URL with a libpq parameter so valued (one that
    changes nothing: wqscan sets the application name itself)."""
    if database.kind == "sqlite":
        return Db("sqlite", Target(str(base / "db $(touch PWNED8) 'x\n`touch PWNED9`" / "wq.db")))
    url = database.target.db
    tail = ("fallback_application_name=db$(touch${IFS}PWNED8)'x%0A`touch${IFS}PWNED9`;"
            "touch${IFS}PWNED10|\"<>")
    return Db("pg", database.target._replace(db=url + ("&" if "?" in url else "?") + tail))


def _pwned(tree: Path) -> list[str]:
    """Marker files anywhere below `tree`, or in the current directory."""
    found = [str(p) for p in Path.cwd().glob("*PWNED*")]
    for dirpath, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d != ".git"]  # refs are named after the branches
        found += [os.path.join(dirpath, f) for f in files if "PWNED" in f]
    return found


@pytest.mark.scanner_free
def test_hooks_in_a_repository_with_a_hostile_path_run_only_wqscan(tmp_path, database):
    """Hooks installed in a repository (and against a database) whose paths are full of
    shell syntax run nothing but the chained hook and wqscan: after real checkouts (one of
    a branch whose name is shell syntax too) no marker file exists anywhere, the chained
    hook got git's arguments intact, and the background reconcile queued the checked-out
    files into the right database (either store) with the exact branch name."""
    base = tmp_path / "base"
    base.mkdir()
    repo = base / NASTY
    repo.mkdir()
    git_run(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a")
    commit(repo, "a", "a.txt")
    git_run(repo, "checkout", "-qb", NASTY_BRANCH)
    (repo / "b.txt").write_text("b")
    commit(repo, "b", "b.txt")
    git_run(repo, "checkout", "-q", "main")
    log = tmp_path / "chained.log"
    hooks = repo / ".git" / "hooks"
    (hooks / "post-checkout").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{log}'\n")
    (hooks / "post-checkout").chmod(0o755)
    db = hostile_db(database, base)
    assert wqscan(db, "add", str(repo), "--collection", "c", "--settle", "0").returncode == 0
    assert wqscan(db, "init").returncode == 0
    done = wqscan(db, "hook", "install", str(repo))
    assert done.returncode == 0, done.stderr
    git_run(repo, "checkout", "-q", NASTY_BRANCH)
    b = str(repo / "b.txt")

    def queued() -> dict[str, str]:
        rows = json.loads(wqscan(db, "queue", "list", "--json").stdout or "[]")
        return {row["file_absolute_path"]: row["branch"] for row in rows}

    assert wait_until(lambda: queued().get(b) == NASTY_BRANCH), queued()
    assert log.read_text().splitlines()[2] == "1"  # old ref, new ref, branch flag
    git_run(repo, "merge", "-q", "main")
    git_run(repo, "checkout", "-q", "main")
    # a substitution in the hook would have run before git returned: only the reconcile
    # itself is started in the background
    assert _pwned(tmp_path) == []


@pytest.mark.scanner_free
def test_hook_hands_hostile_paths_to_wqscan_verbatim(tmp_path, database):
    """The installed hook passes the repository and database paths (a PostgreSQL URL and
    schema), shell syntax and newlines included, to wqscan as exactly the arguments install
    resolved: with the interpreter swapped for a script that records its argv, running the
    hook records `-P -m wqscan --db DB [--pg-schema S] reconcile --path REPO
    --until-settled 300 --hook post-merge --log LOG` and creates no marker."""
    repo = tmp_path / NASTY
    repo.mkdir()
    git_run(repo, "init", "-q", "-b", "main")
    db = hostile_db(database, tmp_path)
    assert wqscan(db, "init").returncode == 0
    done = wqscan(db, "hook", "install", str(repo))
    assert done.returncode == 0, done.stderr
    hook = repo / ".git" / "hooks" / "post-merge"
    text = hook.read_text()
    python = shlex.quote(sys.executable)
    assert text.count(python) == 1, text
    seen = tmp_path / "argv.json"
    recorder = tmp_path / "record-argv"
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    recorder.chmod(0o755)
    fake = hook.with_name("post-merge-recording")
    fake.write_text(text.replace(python, shlex.quote(str(recorder))))
    done = subprocess.run(["sh", str(fake), "0"], cwd=repo, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert wait_until(seen.exists), "the hook did not start the command"
    assert wait_until(lambda: seen.read_text().endswith("]"))
    assert json.loads(seen.read_text()) == ["-P", "-m", "wqscan", *db.argv, "reconcile",
                                            "--path", str(repo), "--until-settled", "300",
                                            "--hook", "post-merge",
                                            "--log", default_hook_log()]
    assert _pwned(tmp_path) == []


@pytest.mark.scanner_free
def test_hook_install_does_not_write_through_a_planted_symlink(tmp_path):
    """A symlink planted where install writes its temporary file (possible whenever
    core.hooksPath points into the work tree, as husky sets it up) is not followed: the
    file it points to keeps its content and mode."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git_run(repo, "init", "-q", "-b", "main")
    git_run(repo, "config", "core.hooksPath", ".husky")
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    precious.chmod(0o600)
    (repo / ".husky").mkdir()
    for name in ("post-checkout", "post-merge", "post-rewrite"):
        os.symlink(precious, repo / ".husky" / f"{name}.wqscan-tmp")
    commit(repo, "hooks", ".husky")
    done = wqscan(tmp_path / "wq.db", "hook", "install", str(repo))
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert precious.read_text() == "precious\n"
    assert stat.S_IMODE(precious.stat().st_mode) == 0o600


# -- 6. the YAML loader ----------------------------------------------------------------------

def _initialized(tmp_path: Path) -> tuple[Path, Path, list]:
    """A one-file tree and an initialized database: (tree, db, the database's content)."""
    tree = tmp_path / "tree"
    write(tree / "a.txt", "a")
    db = tmp_path / "wq.db"
    assert wqscan(db, "init").returncode == 0
    return tree, db, dump_db(db)


def _limits() -> None:
    """For a child that must not blow up: 2 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _laughs(levels: int) -> str:
    lines = ['      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n      all: *l{levels - 1}\n"


BOMBS = {
    "billion-laughs": lambda tree: (f"watches:\n  - id: w\n    path: {tree}\n    collection: c\n"
                                    "    metadata:\n" + _laughs(9)),
    "recursive-alias": lambda tree: (f"watches:\n  - id: w\n    path: {tree}\n"
                                     "    collection: c\n    metadata: &m {a: *m}\n"),
    "recursive-list": lambda tree: (f"watches:\n  - id: w\n    path: {tree}\n"
                                    "    collection: c\n    metadata: {a: &s [1, *s]}\n"),
}


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", BOMBS)
def test_yaml_alias_bombs_are_refused_quickly(tmp_path, case):
    """A 1 KB alias bomb ("billion laughs") or a self-referencing alias in a configuration
    is refused within 10 s and 2 GiB: exit 2, one line naming the file, database
    unchanged."""
    tree, db, before = _initialized(tmp_path)
    cfg = tmp_path / "bomb.yml"
    cfg.write_text(BOMBS[case](tree))
    start = time.monotonic()
    try:
        done = wqscan(db, "--config", str(cfg), "list", timeout=10, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: loading the configuration ran for more than 10 s")
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert str(cfg) in one_line(done.stderr)
    assert time.monotonic() - start < 10
    assert dump_db(db) == before


TAGGED = {
    "object-new-mapping": "watches:\n  - !!python/object/new:os.system\n"
                          "    args: [\"touch {m}\"]\n",
    "object-mapping": "watches:\n  - !!python/object:os.system {{a: 1}}\n",
    "module-scalar": "database: !!python/module:os\n",
    "name-in-metadata": "watches:\n  - id: w\n    path: {tree}\n    collection: c\n"
                        "    metadata: {{run: !!python/name:os.system }}\n",
    "apply-document": "--- !!python/object/apply:os.system [\"touch {m}\"]\n",
    "apply-verbatim": "watches:\n  - id: w\n    path: {tree}\n    collection: c\n    metadata:"
                      " !<tag:yaml.org,2002:python/object/apply:os.system> [\"touch {m}\"]\n",
    "apply-tag-directive": "%TAG !p! tag:yaml.org,2002:python/\n---\nwatches:\n  - id: w\n"
                           "    path: {tree}\n    collection: c\n"
                           "    metadata: !p!object/apply:os.system [\"touch {m}\"]\n",
    "apply-in-list-item": "watches:\n  - id: w\n    path: {tree}\n    collection: c\n"
                          "    patterns: [\"*.md\", "
                          "!!python/object/apply:os.system [\"touch {m}\"]]\n",
    "local-tag-mapping": "watches:\n  - !watch {{id: w, path: {tree}, collection: c}}\n",
    "set-tag": "watches:\n  - id: w\n    path: {tree}\n    collection: c\n"
               "    metadata: !!set {{a, b}}\n",
}


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", TAGGED)
def test_yaml_tags_beyond_the_existing_cases_are_refused(tmp_path, case):
    """Tags on documents, mappings, lists and scalars, by %TAG directive and verbatim, and
    non-Python tags (local, !!set) are refused with one line naming the file; nothing runs
    and the database is unchanged."""
    tree, db, before = _initialized(tmp_path)
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "tagged.yml"
    cfg.write_text(TAGGED[case].format(m=marker, tree=tree))
    done = wqscan(db, "--config", str(cfg), "list", timeout=30)
    assert not marker.exists()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert str(cfg) in one_line(done.stderr)
    assert dump_db(db) == before


# -- 7. the database's permissions -----------------------------------------------------------

_HOLD = """
import os, sys
from wqscan.store import Store
s = Store.open(sys.argv[1])
with s.write():
    s.conn.execute("UPDATE watch_folders SET updated_at = updated_at")
p = sys.argv[1]
print(" ".join(oct(os.stat(x).st_mode & 0o777) for x in (p, p + "-wal", p + "-shm")))
"""


@pytest.mark.scanner_free
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o077, 0o600, 0o700),
                                                        (0o022, 0o644, 0o755),
                                                        (0o027, 0o640, 0o750)],
                         ids=["umask-077", "umask-022", "umask-027"])
def test_database_created_no_wider_than_umask(tmp_path, umask, file_mode, dir_mode):
    """The database and the directories created for it get exactly what the umask allows;
    its -wal and -shm files, created later by a process with umask 0, get no more than the
    database itself."""
    tree = tmp_path / "tree"
    write(tree / "a.txt", "a")
    db = tmp_path / "new" / "deeper" / "wq.db"
    done = wqscan(db, "add", str(tree), "--collection", "c", "--settle", "0",
               preexec_fn=lambda: os.umask(umask))
    assert done.returncode == 0, done.stderr
    assert wqscan(db, "reconcile", preexec_fn=lambda: os.umask(umask)).returncode == 0
    assert stat.S_IMODE(db.stat().st_mode) == file_mode
    for d in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(d.stat().st_mode) == dir_mode, d
    held = subprocess.run([sys.executable, "-P", "-c", _HOLD, str(db)], capture_output=True,
                          text=True, timeout=60, preexec_fn=lambda: os.umask(0))
    assert held.returncode == 0, held.stderr
    assert held.stdout.split() == [oct(file_mode)] * 3
