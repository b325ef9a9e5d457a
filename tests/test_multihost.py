"""Several hosts on one PostgreSQL schema (docs/scaling-out.md: a team that outgrew one machine):
three schedulers, each on a host of its own name (a UTS namespace), scan three trees
(a watch each) while six consumer processes claim and complete, and the test keeps
changing the trees. No row is applied twice, each file's operations apply in order,
the consumers' combined view ends equal to the trees; and a host whose scheduler is
stopped in the middle of a scan leaves that watch to the other hosts at once.

wqscan has no way to tie a watch to a host: every scheduler takes whichever watch is
due, so the three hosts meet on the same watches and the leases (owners named
host:pid:start, an owner on another host judged by the server's clock) decide which
host scans. Real processes, real trees, a throwaway PostgreSQL server (fixture
pg_server); mtimes are set with os.utime(ns=...), so no change hides in a timestamp.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import consumer_log
import pytest
from helpers.cli import child_env, wqscan
from helpers.db import Db
from helpers.procs import pending_signals, proc_state, wait_until
from helpers.trees import OLD_NS, make_big_tree, write
from pg_cluster import Cluster, restartable

from wqscan.cli import main
from wqscan.store import Target

# Runs in both CI passes: its scanners are `wqscan run` processes, pure-Python in the second.
pytestmark = [pytest.mark.usefixtures("no_ambient_config")]

HOSTS = 3
CONSUMERS = 6
FILES = 40  # per tree at the start
MIN_FILES = 12  # a tree never shrinks below this: far from the mass-delete guard
MUTATE_SECONDS = 15.0
OUTAGE_SECONDS = 3.0  # the server restart of the restart variant
HOST_NAMES = [f"scanner-{n}" for n in range(HOSTS)]
OWNER = re.compile(r"(scanner-\d+):(\d+):(\d+)")


def _unshare_uts() -> list[str]:
    """The command prefix that runs a command in a UTS namespace of its own, or a skip
    saying why there is none."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot give scanners host names of their own")
    probe = subprocess.run(["unshare", "--uts", "sh", "-c", "hostname scanner-probe && hostname"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or probe.stdout.strip() != "scanner-probe":
        pytest.skip("cannot run a process in a UTS namespace of its own (unshare --uts needs "
                    f"root or CAP_SYS_ADMIN): {probe.stderr.strip() or probe.stdout.strip()}")
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']


class Trees:
    """Three trees the test changes at random: creates, rewrites with new content, renames
    and deletes, each write with an mtime of its own."""

    def __init__(self, base: Path) -> None:
        self.roots = [base / f"tree{n}" for n in range(HOSTS)]
        self.names: list[list[str]] = [[] for _ in range(HOSTS)]
        self.rng = random.Random(7)
        self.stamp = 0
        self.done: dict[str, int] = {"create": 0, "rewrite": 0, "rename": 0, "delete": 0}
        for n, root in enumerate(self.roots):
            for i in range(FILES):
                name = f"d{i % 4}/f{i}.txt"
                write(root / name, f"tree {n} file {i}", self._mtime())
                self.names[n].append(name)

    def _mtime(self) -> int:
        self.stamp += 1
        return OLD_NS + self.stamp * 1_000

    def mutate(self, actions: int) -> None:
        rng = self.rng
        for _ in range(actions):
            n = rng.randrange(HOSTS)
            root, names = self.roots[n], self.names[n]
            action = rng.choice(("create", "rewrite", "rewrite", "rename", "delete"))
            if action == "create" or len(names) <= MIN_FILES and action in ("delete", "rename"):
                name = f"d{rng.randrange(5)}/n{rng.randrange(FILES * 2)}.txt"
                write(root / name, f"{name} {self.stamp} {rng.random()}", self._mtime())
                if name not in names:
                    names.append(name)
                action = "create"
            elif action == "rewrite":
                name = rng.choice(names)
                write(root / name, f"{name} {self.stamp} {rng.random()}", self._mtime())
            elif action == "rename":
                name = names.pop(rng.randrange(len(names)))
                new = f"d{rng.randrange(5)}/r{rng.randrange(FILES * 2)}.txt"
                if new in names:
                    names.append(name)
                    continue
                (root / new).parent.mkdir(exist_ok=True)
                os.rename(root / name, root / new)
                names.append(new)
            else:
                name = names.pop(rng.randrange(len(names)))
                (root / name).unlink()
            self.done[action] += 1


def add_watches(db: Db, trees: Trees) -> dict[str, str]:
    """A watch w<n> of collection c<n> over each tree, scanned every second; returns
    {resolved root: collection}."""
    collection = {}
    for n, root in enumerate(trees.roots):
        done = wqscan(db, "-q", "add", str(root), "--collection", f"c{n}", "--id", f"w{n}",
                      "--settle", "0", "--interval", "1")
        assert done.returncode == 0, done.stderr
        collection[os.path.realpath(root)] = f"c{n}"
    return collection


class Fleet(NamedTuple):
    """The processes of the test: a scheduler on each host, the consumers."""

    scanners: list[subprocess.Popen]
    consumers: list[subprocess.Popen]


@contextmanager
def fleet(db: Db, prefix: list[str], consumer: list[str], scanner_logs: list[Path]
          ) -> Iterator[Fleet]:
    """`wqscan run --jobs 3` on each host of HOST_NAMES (output to its log) and CONSUMERS
    consumer processes; whatever is still running at the end is killed."""
    procs: list[subprocess.Popen] = []
    files = []
    try:
        for name, path in zip(HOST_NAMES, scanner_logs):
            f = open(path, "w")
            files.append(f)
            procs.append(subprocess.Popen(
                [*prefix, name, sys.executable, "-m", "wqscan", *db.argv, "run", "--jobs", "3"],
                env=child_env(), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT))
        scanners = list(procs)
        consumers = [subprocess.Popen(consumer, env=child_env(), stdin=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
                     for _ in range(CONSUMERS)]
        procs += consumers
        yield Fleet(scanners, consumers)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for p in procs:
            if p.stderr:
                p.stderr.close()
        for f in files:
            f.close()


def mutate_watching_leases(db: Db, trees: Trees, running: Fleet,
                           cluster: Cluster | None = None) -> set[str]:
    """Change the trees for MUTATE_SECONDS while every process keeps running; returns the
    lease owners seen meanwhile, as a consumer host sees who holds the watches. Halfway,
    `cluster` (if given) is stopped for OUTAGE_SECONDS, the trees changing meanwhile."""
    owners: set[str] = set()
    with db.open() as store:
        start = time.monotonic()
        end = start + MUTATE_SECONDS
        while time.monotonic() < end:
            if cluster is not None and time.monotonic() > start + MUTATE_SECONDS / 2:
                cluster.halt()
                down = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < down:
                    trees.mutate(4)
                    time.sleep(0.05)
                cluster.start()
                cluster = None
            trees.mutate(4)
            for n in range(HOSTS):
                lease = store.lease(f"w{n}")
                if lease is not None:
                    owners.add(lease[0])
            time.sleep(0.05)
            for p in running.scanners + running.consumers:
                assert p.poll() is None, (f"{p.args} ended early with {p.returncode}: "
                                          f"{p.stderr.read()[-3000:] if p.stderr else ''}")
    return owners


def rest_and_drain(db: Db, running: Fleet, stop: Path) -> None:
    """The trees stay as they are: the schedulers start no more scans (they read the watch
    list at every tick), one last scan of each watch from this host waits for whichever
    host is scanning it; then the schedulers stop, every lease given back, and the
    consumers drain the queue and exit."""
    for n in range(HOSTS):
        assert main([*db.argv, "-q", "set", f"w{n}", "--interval", "3600"]) == 0
    done = wqscan(db, "-q", "reconcile", *(f"w{n}" for n in range(HOSTS)), "--wait", "60")
    assert done.returncode == 0, done.stderr
    for p in running.scanners:
        p.terminate()
    for p in running.scanners:
        assert p.wait(timeout=30) == 0
    with db.open() as store:  # no scan was under way: every lease was given back
        assert [store.lease(f"w{n}") for n in range(HOSTS)] == [None] * HOSTS
    stop.touch()
    for p in running.consumers:
        assert p.wait(timeout=60) == 0, p.stderr.read()


def assert_hosts_took_turns(scanner_logs: list[Path], owners: set[str]) -> None:
    """The hosts took turns, each scan under a lease naming its host; none failed."""
    texts = {h: path.read_text() for h, path in zip(HOST_NAMES, scanner_logs)}
    for host, text in texts.items():
        assert "Traceback" not in text and "scan failed" not in text, (host, text[-3000:])
    scanned = {h for h, text in texts.items() if re.search(r"w\d: scan done", text)}
    assert len(scanned) >= 2, texts
    assert owners, "no lease was ever seen held"
    hosts_seen = set()
    for owner in owners:
        m = OWNER.fullmatch(owner)
        assert m, f"lease owner {owner!r} is not scanner-N:pid:start"
        hosts_seen.add(m.group(1))
    assert len(hosts_seen) >= 2, owners


def assert_applied_once_in_order(db: Db, log: Path, collection: dict[str, str],
                                 trees: Trees) -> None:
    """The consumers' log: each row once, each file's operations in order, under its
    watch's collection; the queue is empty and the view equals the trees."""
    view, problems, lines = consumer_log.replay(log)
    assert not problems, problems[:20]
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids))
    assert len({line["pid"] for line in lines}) > 1, "only one consumer ever got work"
    for line in lines:
        root = next(r for r in collection if line["path"].startswith(r + "/"))
        assert line["collection"] == collection[root], line
    assert db.queue() == []
    tree = {}
    for root in trees.roots:
        tree.update(consumer_log.tree_hashes(root))
    assert view == tree
    ops = {op: sum(line["op"] == op for line in lines) for op in ("ingest", "update", "delete")}
    assert ops["update"] > 20 and ops["delete"] > 20, (ops, trees.done)


def test_three_hosts_six_consumers_one_schema(tmp_path: Path, pg_server: str,
                                              pg_schema: str) -> None:
    """Three schedulers on hosts scanner-0..2 and six consumers share one schema while the
    trees change for 15 s; then the schedulers are told to rest (a watch setting, read at
    their next tick) and each watch is scanned once more from this host, waiting for the
    host scanning it. After the drain: every row was applied once, each file's operations
    in a valid order (ingest first, no update or delete of a file the consumers do not
    hold), the combined view equals the three trees (paths, content hashes, collections),
    and the hosts took turns, under leases naming them."""
    three_hosts(Db("pg", Target(pg_server, pg_schema)), tmp_path)


def test_three_hosts_ride_out_a_server_restart(tmp_path: Path) -> None:
    """The same, with the server (a cluster of the test's own) stopped for 3 s halfway
    through, every session cut, while the trees keep changing: the schedulers, their
    scans and the consumers ride it out (reconnecting; a transaction cut at COMMIT read
    back), and nothing is lost or applied twice."""
    cluster = restartable()
    try:
        three_hosts(Db("pg", Target(cluster.url, "multihost")), tmp_path, cluster)
    finally:
        cluster.stop()


def three_hosts(db: Db, tmp_path: Path, outage: Cluster | None = None) -> None:
    """The body of the two tests above (`outage`: the server to stop halfway)."""
    prefix = _unshare_uts()
    trees = Trees(tmp_path)
    collection = add_watches(db, trees)
    log, stop = tmp_path / "applied.jsonl", tmp_path / "stop"
    consumer = consumer_log.command(db.target, log, stop, "--batch", "5", "--lease", "120",
                                    "--work", "0.005", "--idle", "0.05")
    scanner_logs = [tmp_path / f"{h}.log" for h in HOST_NAMES]
    with fleet(db, prefix, consumer, scanner_logs) as running:
        owners = mutate_watching_leases(db, trees, running, outage)
        rest_and_drain(db, running, stop)
    assert_hosts_took_turns(scanner_logs, owners)
    assert_applied_once_in_order(db, log, collection, trees)
    if outage is not None:  # each scheduler saw the store go and come back
        for path in scanner_logs:
            text = path.read_text()
            assert text.count("store unreachable") == 1, text[-3000:]
            assert text.count("store reachable again") == 1, text[-3000:]


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one (15,000 files take a quarter of a second
    there, up to 15 s on a busy disk), else the test's own."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    top = Path(tempfile.mkdtemp(prefix="wqscan-multihost-", dir=shm))
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_host_stopped_mid_scan_leaves_its_watch_to_the_others(tmp_path: Path, fast_dir: Path,
                                                                pg_server: str,
                                                                pg_schema: str) -> None:
    """`wqscan run` on host scanner-0, stopped with SIGTERM (systemctl stop) while its scan
    of a 15,000-file tree holds the watch's lease: run ends within a few seconds, and the
    watch is free at once for every other host: no lease of the stopped host is left, and
    `reconcile --wait 5` on another host scans it. (A lease left by a process on another
    host could only be judged by its expiry, LEASE_SECONDS = 300 s later.)"""
    prefix = _unshare_uts()
    db = Db("pg", Target(pg_server, pg_schema))
    files = make_big_tree(fast_dir / "big", 150, 100)
    done = wqscan(db, "-q", "add", str(fast_dir / "big"), "--collection", "c", "--id", "big",
                  "--settle", "0", "--interval", "3600")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "run.log", "w") as out:
        run = subprocess.Popen([*prefix, "scanner-0", sys.executable, "-m", "wqscan", *db.argv,
                                "run"], env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT)
    scanner = None
    try:
        with db.open() as store:
            def held() -> bool:
                lease = store.lease("big")
                return lease is not None and lease[0].startswith("scanner-0:")

            assert wait_until(held, 60), (tmp_path / "run.log").read_text()
            owner = store.lease("big")[0]
            scanner = int(owner.split(":")[1])
            os.kill(scanner, signal.SIGSTOP)  # frozen while it holds the lease, mid-scan
            assert store.lease("big") is not None and store.lease("big")[0] == owner, \
                "the scan ended before it could be frozen"
            assert store.snapshot_files("big") < len(files)
            t0 = time.monotonic()
            run.send_signal(signal.SIGTERM)
            # run passes SIGTERM on to its scan: let the scan take it where it stopped
            assert wait_until(lambda: pending_signals(scanner) & (1 << (signal.SIGTERM - 1))
                              or proc_state(scanner) in (None, "Z"), 10)
            try:
                os.kill(scanner, signal.SIGCONT)
            except ProcessLookupError:  # gone already
                pass
            assert run.wait(timeout=10) == 0, (tmp_path / "run.log").read_text()
            assert time.monotonic() - t0 < 5
            assert wait_until(lambda: proc_state(scanner) in (None, "Z"), 10)
            left = store.lease("big")
        done = wqscan(db, "-q", "reconcile", "big", "--wait", "5")
    finally:
        if scanner is not None and proc_state(scanner) not in (None, "Z"):
            os.kill(scanner, signal.SIGCONT)
        if run.poll() is None:
            run.kill()
        run.wait()
    assert left is None and done.returncode == 0, (
        f"the stopped host's lease is left behind: {left}; `reconcile --wait 5` on another "
        f"host: exit {done.returncode}: {done.stderr.strip()}")
    rows = db.queue()
    assert sorted(r["file_absolute_path"] for r in rows) == sorted(files)
    assert {r["operation"] for r in rows} == {"ingest"}
