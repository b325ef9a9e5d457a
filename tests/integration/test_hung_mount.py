"""A hung network mount beside a healthy watch (docs/operations.md, "Running it for months"): the
FUSE server of a real slowfs mount (../shared/lab) is frozen with SIGSTOP, so every stat
on it blocks; `wqscan run` abandons the stuck scan after its timeout, reports the watch as
failed, keeps scanning the healthy watch on schedule and still stops on SIGTERM.

Needs root, /dev/fuse and the lab (see conftest.py); skipped otherwise."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, TypeVar

import pytest
from helpers.cli import wqscan, wqscan_argv
from helpers.ondisk import read_dicts
from helpers.procs import alive
from helpers.trees import write

from integration.lab import cleanup, down, lab_env, up
from wqscan.clock import parse_iso

pytestmark = [pytest.mark.slow, pytest.mark.network]

TIMEOUT = 3  # --timeout of the hung watch, seconds
FROZEN_FOR = 12.0  # seconds `run` runs against the frozen server...
FROZEN_MAX = 20.0  # ...or longer, up to this, until two hung scans have been abandoned
FILES = 300
T = TypeVar("T")


def stats(db: Path) -> dict[str, dict]:
    return {d["watch_id"]: d for d in read_dicts(db, "SELECT * FROM wq_watch_stats")}


def thaw(server: int | None) -> None:
    """Let a frozen lab server (if any) run again."""
    if server is not None:
        try:
            os.kill(server, signal.SIGCONT)
        except ProcessLookupError:
            pass


@contextmanager
def slowfs_mount(tmp_path: Path, lab: Path) -> Iterator[tuple[Path, int]]:
    """FILES remote files on a slowfs mount of the lab; yields (mount point, the FUSE
    server's pid). At the end the server runs again and the mount is taken down, whatever
    happened; the lab's state is removed after a test that passed."""
    src = tmp_path / "src"
    for i in range(FILES):
        write(src / f"d{i % 10}" / f"f{i:03d}.txt", f"remote file {i}\n")
    mnt = tmp_path / "mnt"
    env = lab_env(tmp_path / "lab-state")
    server: int | None = None
    try:
        up(lab, env, "slowfs", src, mnt, 1)
        (pidfile,) = (Path(env["LAB_STATE"]) / "slowfs").glob("*.pid")
        server = int(pidfile.read_text())
        yield mnt, server
    finally:
        thaw(server)
        down(lab, env, "slowfs", mnt)
    cleanup(env)


def scan_started(log: str) -> list[int]:
    """The pids of the scan processes a `run` log names."""
    return [int(p) for p in re.findall(r"scan started \(pid (\d+)\)", log)]


@contextmanager
def running(db: Path, log_path: Path, server: int) -> Iterator[subprocess.Popen]:
    """`wqscan run` in the background, stderr to `log_path`; at the end the server runs
    again first (a process blocked on the mount cannot die before), then `run` and any
    scan process it left are killed."""
    with open(log_path, "wb") as err:
        run = subprocess.Popen(wqscan_argv(db, "run"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield run
    finally:
        thaw(server)
        if run.poll() is None:
            run.kill()
        run.wait()
        for pid in scan_started(log_path.read_text()):
            if alive(pid, str(db)):
                os.kill(pid, signal.SIGKILL)


def add_both_watches(db: Path, mnt: Path, healthy_root: Path) -> None:
    """The hung watch (on the mount) and the healthy one, each scanned once while the
    server still answers."""
    r = wqscan(db, "add", str(mnt), "--collection", "remote", "--id", "hung",
               "--timeout", str(TIMEOUT), "--interval", "1", "--settle", "0", timeout=60)
    assert r.returncode == 0, r.stderr
    r = wqscan(db, "add", str(healthy_root), "--collection", "local", "--id", "healthy",
               "--interval", "1", "--settle", "0", timeout=60)
    assert r.returncode == 0, r.stderr
    r = wqscan(db, "run", "--once", timeout=60)
    assert r.returncode == 0, r.stderr
    s = stats(db)
    assert s["hung"]["scans_ok"] == 1 and s["hung"]["last_files"] == FILES, s["hung"]
    assert s["healthy"]["scans_ok"] == 1, s["healthy"]


class Frozen(NamedTuple):
    """What the statistics showed while the server was frozen."""

    healthy_starts: list[int]  # start (ns) of each healthy scan, in order
    hung_failures: dict[int, str]  # start (ns) of each abandoned scan -> reason
    seconds: float  # how long it was watched


def watch_frozen(db: Path, run: subprocess.Popen, log_path: Path) -> Frozen:
    """Poll the statistics for FROZEN_FOR seconds (up to FROZEN_MAX, until two hung scans
    have been abandoned) while `run` keeps running."""
    t_start_ns = time.time_ns()
    seen = Frozen([], {}, 0.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < FROZEN_FOR or \
            (len(seen.hung_failures) < 2 and time.monotonic() - t0 < FROZEN_MAX):
        assert run.poll() is None, log_path.read_text()
        s = stats(db)
        h = s["healthy"]["last_scan_start"]
        if h and parse_iso(h) > t_start_ns and \
                (not seen.healthy_starts or seen.healthy_starts[-1] != parse_iso(h)):
            seen.healthy_starts.append(parse_iso(h))
        g = s["hung"]
        if g["last_result"] == "failed":
            seen.hung_failures[parse_iso(g["last_scan_start"])] = g["last_reason"]
        time.sleep(0.05)
    return seen._replace(seconds=time.monotonic() - t0)


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What `call` returns, and how many seconds it took."""
    t0 = time.monotonic()
    result = call()
    return result, time.monotonic() - t0


def assert_abandoned_and_on_schedule(seen: Frozen, doc: dict[str, dict],
                                     end_stats: dict[str, dict], log: str) -> None:
    """The hung watch's scans were abandoned after its timeout and reported failed; the
    healthy watch was scanned all along, including while each hung scan waited out its
    timeout."""
    assert len(seen.hung_failures) >= 2, (seen.hung_failures, log)
    assert all("abandoned" in reason for reason in seen.hung_failures.values()), \
        seen.hung_failures
    assert "hung: scan abandoned after 3 s" in log, log
    assert end_stats["hung"]["scans_ok"] == 1
    assert end_stats["hung"]["scans_failed"] >= len(seen.hung_failures)
    assert doc["hung"]["last_result"] == "failed"
    assert "abandoned" in doc["hung"]["last_reason"], doc["hung"]
    assert doc["healthy"]["last_result"] == "ok"
    assert len(seen.healthy_starts) >= 5, (seen.healthy_starts, log)
    assert end_stats["healthy"]["scans_failed"] == 0
    for start in seen.hung_failures:
        during = [h for h in seen.healthy_starts if start <= h <= start + TIMEOUT * 10**9]
        assert during, f"no healthy scan while the hung scan of {start} waited"
    gaps = [(b - a) / 1e9 for a, b in zip(seen.healthy_starts, seen.healthy_starts[1:])]
    assert max(gaps) < TIMEOUT + 1, gaps


def assert_recovers(db: Path, server: int, log: str) -> None:
    """Once the server resumes, no scan process stays stuck and the watch scans fine."""
    os.kill(server, signal.SIGCONT)
    scans = scan_started(log)
    deadline = time.monotonic() + 5
    while any(alive(p, str(db)) for p in scans) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in scans if alive(p, str(db))], "scan processes left behind"
    r = wqscan(db, "reconcile", "hung", timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
    s = stats(db)["hung"]
    assert (s["last_result"], s["consecutive_failures"]) == ("ok", 0), s


def test_hung_mount_is_abandoned_and_healthy_watch_keeps_schedule(tmp_path, lab):
    """With the slowfs server frozen, `run` abandons the hung watch's scans after 3 s and
    reports them failed ("abandoned"), scans the healthy watch every ~1-2 s throughout,
    answers `status`, exits 0 on SIGTERM; the watch recovers once the server resumes."""
    healthy_root = tmp_path / "local"
    write(healthy_root / "a.txt", "local file\n")
    db = tmp_path / "wq.db"
    log_path = tmp_path / "run.err"
    with slowfs_mount(tmp_path, lab) as (mnt, server):
        add_both_watches(db, mnt, healthy_root)
        os.kill(server, signal.SIGSTOP)  # every request to the mount now blocks
        with running(db, log_path, server) as run:
            seen = watch_frozen(db, run, log_path)
            # `status` answers while the mount hangs, and shows the hung watch as failed
            r, status_took = timed(lambda: wqscan(db, "status", "--json", timeout=20))
            assert r.returncode == 0, r.stderr
            doc = {w["watch_id"]: w for w in json.loads(r.stdout)["watches"]}
            run.send_signal(signal.SIGTERM)
            rc, stop_took = timed(lambda: run.wait(10))
            log = log_path.read_text(errors="replace")
            gaps = [(b - a) / 1e9
                    for a, b in zip(seen.healthy_starts, seen.healthy_starts[1:])]
            print(f"\nhealthy watch: {len(seen.healthy_starts)} scans in {seen.seconds:.1f} s "
                  f"with the mount hung; largest gap between scan starts "
                  f"{max(gaps, default=0):.2f} s (mean {sum(gaps) / max(1, len(gaps)):.2f} s); "
                  f"hung watch: {len(seen.hung_failures)} scans abandoned; status took "
                  f"{status_took:.2f} s; run stopped {stop_took:.2f} s after SIGTERM")
            assert rc == 0, log
            assert stop_took < 5.0, f"run took {stop_took:.1f} s to stop"
            assert_abandoned_and_on_schedule(seen, doc, stats(db), log)
            assert status_took < 5.0
            assert_recovers(db, server, log)
    assert not os.path.ismount(mnt)


def test_one_shot_reconcile_on_a_hung_mount_is_abandoned(tmp_path, lab):
    """`wqscan reconcile` (not `run`) on a mount whose server froze honours the watch's
    --timeout: one line, exit 1, the failure recorded, the lease released, the process gone
    although a thread of it is stuck in the kernel."""
    db = tmp_path / "wq.db"
    with slowfs_mount(tmp_path, lab) as (mnt, server):
        r = wqscan(db, "add", str(mnt), "--collection", "remote", "--id", "hung",
                   "--timeout", str(TIMEOUT), "--settle", "0", timeout=60)
        assert r.returncode == 0, r.stderr
        assert wqscan(db, "reconcile", "-q", timeout=60).returncode == 0
        os.kill(server, signal.SIGSTOP)
        r, took = timed(lambda: wqscan(db, "reconcile", "hung", timeout=60))
        assert r.returncode == 1, (r.returncode, r.stderr)
        line = r.stderr.strip()
        assert len(r.stderr.splitlines()) == 1, r.stderr
        assert line == (f"wqscan: error: hung: scan abandoned after {TIMEOUT} s without "
                        "finishing (hung mount? --timeout sets the limit)")
        assert TIMEOUT <= took < TIMEOUT + 5, took
        s = stats(db)["hung"]
        assert (s["last_result"], s["scans_failed"]) == ("failed", 1), s
        assert "abandoned" in s["last_reason"]
        assert read_dicts(db, "SELECT * FROM wq_leases") == []
        r = wqscan(db, "reconcile", "hung", "--timeout", "1", timeout=60)  # the option wins
        assert r.returncode == 1 and "abandoned after 1 s" in r.stderr, r.stderr
        os.kill(server, signal.SIGCONT)
        r = wqscan(db, "reconcile", "hung", timeout=60)
        assert r.returncode == 0, r.stderr
        assert stats(db)["hung"]["last_result"] == "ok"
