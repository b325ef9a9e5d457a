"""Network mounts failing under a watch (docs/operations.md, "When things go wrong"): the
server of a real sshfs / SMB / slowfs mount (../shared/lab) dies, or the share is
unmounted, before or during a scan. No delete may be queued for files that are merely
unreachable; a failed watch exits 1 with one line naming it; once the share is back the
next scan converges: exactly the changes made meanwhile, nothing spurious.

To have a scan reliably in flight when the fault strikes, the exported tree holds a
second slowfs mount (`zz-slow/`, a chain of nested directories) whose latency is raised
to LATENCY_MS for the faulted scan: the rest of the tree is walked at once, the chain
takes seconds, and the fault is injected at FAULT_AFTER seconds into the scan.

Needs root, /dev/fuse and the lab (see conftest.py); skipped otherwise."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers.cli import wqscan_argv
from helpers.db import drain, stats
from helpers.trees import OLD_NS, h, write

from integration.lab import (KINDS, TEST_ENV, await_view, down, force_unmount, fuse_abort,
    kill_server, lab_dir, reap, run_unstuck, server_pids, up, wait_ready)
from integration.mounted import add, body, ops, pending, scan

pytestmark = [pytest.mark.network]

FILES = 150  # > the guard's 100, so the mass-delete guard is armed
CHAIN = 20  # nested directories (one file each) in the slow part
LATENCY_MS = 50  # of the slow part during a faulted scan
FAULT_AFTER = 1.5  # seconds after the faulted scan starts
HUNG_AFTER = 30  # a scan of a faulted mount still running then is blocked in its client


class Share(NamedTuple):
    kind: str
    src: Path
    mnt: Path
    env: dict[str, str]
    slow_src: Path  # source of the nested slowfs mount...
    slow_mnt: Path  # ...mounted at src/zz-slow

    def up(self) -> None:
        up(lab_dir(), self.env, self.kind, self.src, self.mnt)
        wait_ready(self.mnt)

    def down(self) -> None:
        down(lab_dir(), self.env, self.kind, self.mnt)

    def slow(self, latency_ms: float) -> None:
        """(Re)mount the nested part with this latency (the lab script remounts)."""
        up(lab_dir(), self.env, "slowfs", self.slow_src, self.slow_mnt, latency_ms)

    def sync(self, *rels: str) -> None:
        await_view(self.kind, self.src, self.mnt, rels)


@pytest.fixture(scope="module", params=KINDS)
def share(request, lab_state, tmp_path_factory):
    """A tree of FILES files plus the nested slow chain, shared over one mount of each
    kind; the module's tests watch the mount point itself."""
    kind = request.param
    base = tmp_path_factory.mktemp(kind)
    src, mnt, slow_src = base / "src", base / "mnt", base / "slow-src"
    for i in range(FILES):
        write(src / f"d{i % 10}" / f"s{i % 3}" / f"f{i:03d}.txt", body("share", i),
              OLD_NS + i)
    rel = ""
    for level in range(1, CHAIN + 1):
        rel += f"l{level}/"
        write(slow_src / rel / f"deep{level}.txt", body("deep", level), OLD_NS + level)
    env = {**lab_state, **TEST_ENV.get(kind, {})}
    s = Share(kind, src, mnt, env, slow_src, src / "zz-slow")
    try:
        s.slow(0)
        s.up()
        yield s
    finally:
        s.down()
        down(lab_dir(), env, "slowfs", s.slow_mnt)
        reap(env)
        left = force_unmount(base)
        assert not left, f"left mounted: {left}"


@pytest.fixture
def healthy(share: Share) -> Share:
    """The share as a test expects to find it (a failed test may have left it broken)."""
    share.slow(0)
    share.up()
    return share


def all_files(s: Share) -> list[str]:
    out = []
    for d, _, names in os.walk(s.src):
        out += [os.path.relpath(os.path.join(d, n), s.src) for n in names]
    return out


def start_baseline(s: Share, db: Path) -> int:
    """Watch the mount point itself, scan, drain; returns the number of files."""
    n = len(all_files(s))
    add(db, s.mnt)
    rep = scan(db)
    assert (rep["ingest"], rep["update"], rep["delete"], rep["errors"]) == (n, 0, 0, 0), rep
    drain(db)
    return n


class Changes(NamedTuple):
    update: str
    delete: str
    ingest: str


def make_changes(s: Share, k: int) -> Changes:
    """One update, one delete, one new file in the fast part of the tree; each test has
    its own `k`, as the module's tests share the tree."""
    c = Changes(f"d1/s2/f{11 + 30 * k:03d}.txt", f"d2/s2/f{2 + 30 * k:03d}.txt",
                f"d3/new-{k}.txt")
    for rel in (c.update, c.delete):
        assert (s.src / rel).is_file(), rel
    write(s.src / c.update, f"updated while away ({k})\n", OLD_NS + 10**12)
    (s.src / c.delete).unlink()
    write(s.src / c.ingest, f"new while away ({k})\n", OLD_NS + 10**12)
    return c


def converge(s: Share, db: Path, c: Changes, also: dict[str, str] | None = None) -> None:
    """Back up: the next scan queues exactly the changes (and `also`, queued earlier);
    the one after, nothing."""
    s.sync(*c)
    rep = scan(db)
    assert rep["errors"] == 0, rep
    assert ops(db) == {c.update: "update", c.delete: "delete", c.ingest: "ingest",
                       **(also or {})}, rep
    rows = pending(db)
    assert rows[c.update]["metadata"]["content_hash"] == h((s.src / c.update).read_bytes())
    assert rows[c.ingest]["metadata"]["content_hash"] == h((s.src / c.ingest).read_bytes())
    drain(db)
    rep = scan(db)
    assert (rep["ingest"], rep["update"], rep["delete"], rep["errors"]) == (0, 0, 0, 0), rep
    assert ops(db) == {}


def last_scan(db: Path) -> dict:
    """The watch's persisted statistics of its last scan."""
    st = stats(db, "w")
    assert st is not None, "no statistics of watch w"
    return st


def reconcile(db: Path, s: Share, *extra: str) -> dict:
    """`reconcile w` as cron runs it (human output) on a faulted share: exit code, stderr
    and the last scan's statistics. A FUSE client that hangs on its dead server (smbnetfs
    can) has its connection aborted after HUNG_AFTER s, as an operator would."""
    rc, _, err, aborted = run_unstuck(
        wqscan_argv(db, "reconcile", "w", *extra), HUNG_AFTER, s.mnt)
    if aborted:
        print(f"\n{s.kind}: the FUSE client hung; connection aborted")
    assert "Traceback" not in err, err
    return {"rc": rc, "stderr": err, **last_scan(db)}


def assert_failed_cleanly(db: Path, rep: dict, *words: str,
                          queued: dict[str, str] | None = None) -> None:
    """Exit 1, one readable line naming the watch and the reason, the failure recorded,
    nothing queued (beyond `queued`, there before)."""
    assert rep["rc"] == 1 and rep["last_result"] == "failed", rep
    lines = [ln for ln in rep["stderr"].splitlines() if ln.startswith("wqscan: error:")]
    assert lines == [f"wqscan: error: w: {rep['last_reason']}"], rep["stderr"]
    for w in words:
        assert w in rep["last_reason"], rep["last_reason"]
    assert ops(db) == (queued or {}), "a failed watch wrote operations"


def run_faulted(db: Path, s: Share, fault, tag: str) -> dict:
    """Start `reconcile w`, call `fault()` FAULT_AFTER seconds in, while the scan is still
    walking, and wait for the scan to end; as `reconcile` reports it."""
    proc = subprocess.Popen(wqscan_argv(db, "reconcile", "w"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hung = False
    try:
        deadline = time.monotonic() + FAULT_AFTER
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, f"{tag}: the scan ended before the fault: " \
            f"{proc.communicate()}"
        t0 = time.monotonic()
        fault()
        try:
            _, err = proc.communicate(timeout=HUNG_AFTER)
        except subprocess.TimeoutExpired:  # blocked in a hung FUSE client
            hung = bool(fuse_abort(s.mnt))
            _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    rep = {"rc": proc.returncode, "stderr": err, **last_scan(db)}
    print(f"\n{tag}: scan ended {time.monotonic() - t0:.2f} s after the fault"
          f"{' (the FUSE client hung: connection aborted)' if hung else ''}, exit "
          f"{proc.returncode}, {rep['last_files']} files seen, {rep['last_errors']} "
          f"warnings, reason: {rep['last_reason']}")
    return rep


# -- the server dies -----------------------------------------------------------------

@pytest.mark.slow  # up to ~10 s on SMB (smbnetfs takes 2 s to notice, 2 s to reconnect)
def test_server_dies_during_and_before_scans_no_delete_then_converges(lab, healthy,
                                                                      tmp_path):
    """The server is killed while a scan walks the tree: unreachable entries keep their
    snapshot (no delete); the watch fails (always, when the mount answered with I/O
    errors), or finishes with warnings. While the server
    stays dead the mount answers EIO / ENOTCONN: the next scan fails as a whole (root
    unavailable) and writes nothing. Once the server is back, the next scan queues
    exactly what changed, before the fault and while the server was away."""
    s, db = healthy, tmp_path / "wq.db"
    start_baseline(s, db)
    before = "d4/s0/f024.txt"  # changed before the faulted scan: may be queued by it
    write(s.src / before, "changed before the fault\n", OLD_NS + 10**12)
    s.sync(before)
    s.slow(LATENCY_MS)
    rep = run_faulted(db, s, lambda: kill_server(s.env, s.kind, s.mnt), f"{s.kind} killed")
    queued = ops(db)
    assert "delete" not in queued.values(), queued
    assert queued in ({}, {before: "update"}), queued
    if rep["rc"] == 0:  # the walk finished: the unreachable part was kept, with warnings,
        assert rep["last_errors"] > 0 and rep["last_delete"] == 0, rep
        for io_error in ("Input/output error", "not connected", "timed out"):  # none of
            assert io_error not in rep["stderr"], rep  # which was an I/O error
    else:
        assert rep["rc"] == 1 and rep["last_result"] == "failed", rep
        assert rep["stderr"].count("wqscan: error: w: ") == 1, rep["stderr"]
    assert not server_pids(s.env, s.kind, s.mnt)
    s.slow(0)

    c = make_changes(s, 0)  # while the server is dead
    rep = reconcile(db, s)
    assert_failed_cleanly(db, rep, str(s.mnt), queued=queued)
    s.up()  # restarts the server (and remounts a dead slowfs)
    s.sync(before)
    converge(s, db, c, also={before: "update"})


# -- the share is unmounted ----------------------------------------------------------

def test_unmount_during_and_before_scans_writes_nothing_then_converges(lab, healthy,
                                                                       tmp_path):
    """The share is unmounted while a scan walks it, with a change to commit. The scan
    holds the mount busy, so the unmount is lazy (as the lab's -down scripts and an
    operator's `umount -l` do): the mountpoint shows the empty directory beneath at once,
    while the scan's open directories keep answering. The root is checked again before
    anything is committed, so nothing is written and the watch fails.
    Then, unmounted, the share leaves an empty mountpoint: the guard fails the watch
    with the documented reason and writes nothing, also for a scan scoped to a directory
    of the share (a git hook's); with a stray file in the bare mountpoint, the 50 % rule
    holds instead. Remounted, the next scan finds exactly what changed meanwhile."""
    s, db = healthy, tmp_path / "wq.db"
    n = start_baseline(s, db)
    before = "d6/s0/f036.txt"  # changed before the faulted scan, found by it
    write(s.src / before, "changed before the unmount\n", OLD_NS + 10**12)
    s.sync(before)
    s.slow(LATENCY_MS)

    def unmount() -> None:
        r = subprocess.run(["umount", "-l", str(s.mnt)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(s.mnt) and os.listdir(s.mnt) == []
        s.slow(0)  # the rest of the walk need not crawl

    rep = run_faulted(db, s, unmount, f"{s.kind} unmounted")
    assert_failed_cleanly(db, rep)
    s.down()  # stops the server of the detached mount

    assert not os.path.ismount(s.mnt) and os.listdir(s.mnt) == []
    c = make_changes(s, 1)
    rep = reconcile(db, s)
    assert_failed_cleanly(db, rep, "empty", f"{n} files")
    assert f"wqscan: error: w: root {s.mnt} is empty" in rep["stderr"]
    rep = reconcile(db, s, "--path", str(s.mnt / "d1"))
    assert_failed_cleanly(db, rep, "empty", f"{n} files")
    write(s.mnt / "stray.txt", "written into the bare mountpoint\n")
    rep = reconcile(db, s)
    assert_failed_cleanly(db, rep, "mass-delete guard", f"{n} of {n}")
    (s.mnt / "stray.txt").unlink()
    s.up()
    converge(s, db, c, also={before: "update"})
