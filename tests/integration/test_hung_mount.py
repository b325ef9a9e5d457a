"""A hung network mount beside a healthy watch (issue 4 item 2, SPEC §6 "Scheduler"): the
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
from pathlib import Path

import pytest
from helpers import alive, read_dicts, wqscan, wqscan_argv, write

from integration.lab import cleanup, down, lab_env, up
from wqscan.clock import parse_iso

pytestmark = [pytest.mark.slow, pytest.mark.network]

TIMEOUT = 3  # --timeout of the hung watch, seconds
FROZEN_FOR = 12.0  # seconds `run` runs against the frozen server...
FROZEN_MAX = 20.0  # ...or longer, up to this, until two hung scans have been abandoned
FILES = 300


def cli(db: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return wqscan(db, *args, timeout=timeout)


def stats(db: Path) -> dict[str, dict]:
    return {d["watch_id"]: d for d in read_dicts(db, "SELECT * FROM wq_watch_stats")}


def thaw(server: int | None) -> None:
    """Let a frozen lab server (if any) run again."""
    if server is not None:
        try:
            os.kill(server, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_hung_mount_is_abandoned_and_healthy_watch_keeps_schedule(tmp_path, lab):
    """With the slowfs server frozen, `run` abandons the hung watch's scans after 3 s and
    reports them failed ("abandoned"), scans the healthy watch every ~1-2 s throughout,
    answers `status`, exits 0 on SIGTERM; the watch recovers once the server resumes."""
    src = tmp_path / "src"
    for i in range(FILES):
        write(src / f"d{i % 10}" / f"f{i:03d}.txt", f"remote file {i}\n")
    healthy_root = tmp_path / "local"
    write(healthy_root / "a.txt", "local file\n")
    mnt = tmp_path / "mnt"
    env = lab_env(tmp_path / "lab-state")
    db = tmp_path / "wq.db"
    log_path = tmp_path / "run.err"
    server: int | None = None
    run: subprocess.Popen | None = None
    try:
        up(lab, env, "slowfs", src, mnt, 1)
        (pidfile,) = (Path(env["LAB_STATE"]) / "slowfs").glob("*.pid")
        server = int(pidfile.read_text())

        r = cli(db, "add", str(mnt), "--collection", "remote", "--id", "hung",
                "--timeout", str(TIMEOUT), "--interval", "1", "--settle", "0")
        assert r.returncode == 0, r.stderr
        r = cli(db, "add", str(healthy_root), "--collection", "local", "--id", "healthy",
                "--interval", "1", "--settle", "0")
        assert r.returncode == 0, r.stderr
        r = cli(db, "run", "--once")  # both scan once while the server answers
        assert r.returncode == 0, r.stderr
        s = stats(db)
        assert s["hung"]["scans_ok"] == 1 and s["hung"]["last_files"] == FILES, s["hung"]
        assert s["healthy"]["scans_ok"] == 1, s["healthy"]

        os.kill(server, signal.SIGSTOP)  # every request to the mount now blocks
        with open(log_path, "wb") as err:
            run = subprocess.Popen(wqscan_argv(db, "run"), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err)
        t_start_ns = time.time_ns()
        healthy_starts: list[int] = []
        hung_failures: dict[int, str] = {}  # start (ns) of each abandoned scan -> reason
        t0 = time.monotonic()
        while time.monotonic() - t0 < FROZEN_FOR or \
                (len(hung_failures) < 2 and time.monotonic() - t0 < FROZEN_MAX):
            assert run.poll() is None, log_path.read_text()
            s = stats(db)
            h = s["healthy"]["last_scan_start"]
            if h and parse_iso(h) > t_start_ns and \
                    (not healthy_starts or healthy_starts[-1] != parse_iso(h)):
                healthy_starts.append(parse_iso(h))
            g = s["hung"]
            if g["last_result"] == "failed":
                hung_failures[parse_iso(g["last_scan_start"])] = g["last_reason"]
            time.sleep(0.05)

        frozen_for = time.monotonic() - t0
        # `status` answers while the mount hangs, and shows the hung watch as failed
        t0 = time.monotonic()
        r = cli(db, "status", "--json", timeout=20)
        status_took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        doc = {w["watch_id"]: w for w in json.loads(r.stdout)["watches"]}

        t0 = time.monotonic()
        run.send_signal(signal.SIGTERM)
        rc = run.wait(10)
        stop_took = time.monotonic() - t0
        log = log_path.read_text(errors="replace")

        gaps = [(b - a) / 1e9 for a, b in zip(healthy_starts, healthy_starts[1:])]
        print(f"\nhealthy watch: {len(healthy_starts)} scans in {frozen_for:.1f} s with the "
              f"mount hung; largest gap between scan starts {max(gaps, default=0):.2f} s "
              f"(mean {sum(gaps) / max(1, len(gaps)):.2f} s); hung watch: "
              f"{len(hung_failures)} scans abandoned; status took {status_took:.2f} s; "
              f"run stopped {stop_took:.2f} s after SIGTERM")

        assert rc == 0, log
        assert stop_took < 5.0, f"run took {stop_took:.1f} s to stop"
        # the hung watch: abandoned after its timeout, reported as failed
        assert len(hung_failures) >= 2, (hung_failures, log)
        assert all("abandoned" in reason for reason in hung_failures.values()), hung_failures
        assert "hung: scan abandoned after 3 s" in log, log
        end_stats = stats(db)
        assert end_stats["hung"]["scans_ok"] == 1
        assert end_stats["hung"]["scans_failed"] >= len(hung_failures)
        assert doc["hung"]["last_result"] == "failed"
        assert "abandoned" in doc["hung"]["last_reason"], doc["hung"]
        assert doc["healthy"]["last_result"] == "ok"
        assert status_took < 5.0
        # the healthy watch kept its schedule: scanned all along, including while each
        # hung scan was waiting out its timeout
        assert len(healthy_starts) >= 5, (healthy_starts, log)
        assert end_stats["healthy"]["scans_failed"] == 0
        for start in hung_failures:
            during = [h for h in healthy_starts if start <= h <= start + TIMEOUT * 10**9]
            assert during, f"no healthy scan while the hung scan of {start} waited"
        assert max(gaps) < TIMEOUT + 1, gaps

        # the server resumes: nothing stays stuck, and the watch scans fine again
        os.kill(server, signal.SIGCONT)
        scans = [int(p) for p in re.findall(r"scan started \(pid (\d+)\)", log)]
        deadline = time.monotonic() + 5
        while any(alive(p, str(db)) for p in scans) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in scans if alive(p, str(db))], "scan processes left behind"
        r = cli(db, "reconcile", "hung")
        assert r.returncode == 0, (r.returncode, r.stderr)
        s = stats(db)["hung"]
        assert (s["last_result"], s["consecutive_failures"]) == ("ok", 0), s
    finally:
        thaw(server)
        if run is not None:
            if run.poll() is None:
                run.kill()
            run.wait()
            if log_path.exists():
                for pid in re.findall(r"scan started \(pid (\d+)\)", log_path.read_text()):
                    if alive(int(pid), str(db)):
                        os.kill(int(pid), signal.SIGKILL)
        down(lab, env, "slowfs", mnt)
    assert not os.path.ismount(mnt)
    cleanup(env)


def test_one_shot_reconcile_on_a_hung_mount_is_abandoned(tmp_path, lab):
    """`wqscan reconcile` (not `run`) on a mount whose server froze honours the watch's
    --timeout: one line, exit 1, the failure recorded, the lease released, the process gone
    although a thread of it is stuck in the kernel (issue 11 #5)."""
    src = tmp_path / "src"
    for i in range(FILES):
        write(src / f"d{i % 10}" / f"f{i:03d}.txt", f"remote file {i}\n")
    mnt = tmp_path / "mnt"
    env = lab_env(tmp_path / "lab-state")
    db = tmp_path / "wq.db"
    server: int | None = None
    try:
        up(lab, env, "slowfs", src, mnt, 1)
        (pidfile,) = (Path(env["LAB_STATE"]) / "slowfs").glob("*.pid")
        server = int(pidfile.read_text())
        r = cli(db, "add", str(mnt), "--collection", "remote", "--id", "hung",
                "--timeout", str(TIMEOUT), "--settle", "0")
        assert r.returncode == 0, r.stderr
        assert cli(db, "reconcile", "-q").returncode == 0
        os.kill(server, signal.SIGSTOP)
        t0 = time.monotonic()
        r = cli(db, "reconcile", "hung", timeout=60)
        took = time.monotonic() - t0
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
        r = cli(db, "reconcile", "hung", "--timeout", "1", timeout=60)  # the option wins
        assert r.returncode == 1 and "abandoned after 1 s" in r.stderr, r.stderr
        os.kill(server, signal.SIGCONT)
        r = cli(db, "reconcile", "hung")
        assert r.returncode == 0, r.stderr
        assert stats(db)["hung"]["last_result"] == "ok"
    finally:
        thaw(server)
        down(lab, env, "slowfs", mnt)
    cleanup(env)
