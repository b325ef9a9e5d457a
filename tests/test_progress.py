"""The progress line: on a terminal only, never with --quiet or --json; both twins report it."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.twins import load_twin

from wqscan.scan.records import EAGER_ALL, ScanParams

DIRS = 1034  # directories of the `big` tree
BIG = 512 << 20  # bytes of a sparse file whose hashing takes a while


def make_tree(root: Path, dirs: int) -> None:
    for i in range(dirs):
        d = root / f"d{i:04d}"
        d.mkdir(parents=True)
        (d / "f.txt").write_bytes(b"x")
        os.utime(d / "f.txt", ns=(1_700_000_000 * 10**9,) * 2)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A tree of many directories."""
    root = tmp_path_factory.mktemp("progress") / "tree"
    make_tree(root, DIRS)
    return root


def run_wqscan(db: Path, args: list[str], tty: bool) -> str:
    """Run `wqscan` with stderr on a pseudo-terminal (tty) or a pipe; returns stderr."""
    cmd = [sys.executable, "-m", "wqscan", "--db", str(db), *args]
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait() == 0, out
    return out.decode(errors="replace")


def add(db: Path, root: Path) -> None:
    subprocess.run([sys.executable, "-m", "wqscan", "--db", str(db), "add", str(root),
                    "--collection", "c", "--settle", "0", "--threads", "1"], check=True,
                   capture_output=True)


def test_progress_shown_on_a_terminal(tmp_path):
    """On a terminal a scan that takes a while (here: hashing one big file, a few hundred
    small ones) rewrites one line in place, with the bytes hashed so far, and clears it at
    the end (by time, not every 512 directories)."""
    root = tmp_path / "tree"
    make_tree(root, 31)
    with open(root / "big.bin", "wb") as f:  # sparse: reading it costs time, not disk
        f.truncate(BIG)
    os.utime(root / "big.bin", ns=(1_700_000_000 * 10**9,) * 2)
    db = tmp_path / "wq.db"
    add(db, root)
    err = run_wqscan(db, ["reconcile"], tty=True)
    assert "files/s" in err and "\r" in err
    assert re.search(r"[0-9.]+ [kMG]?B hashed", err), err
    assert err.rstrip().endswith("\x1b[K")  # the line is cleared before the summary


@pytest.mark.parametrize("args,tty", [(["reconcile"], False), (["reconcile", "-q"], True),
                                      (["reconcile", "--json"], True)])
def test_no_progress_off_a_terminal_or_when_quiet(tmp_path, big, args, tty):
    """Not on a pipe, not with --quiet, not with --json."""
    db = tmp_path / "wq.db"
    add(db, big)
    err = run_wqscan(db, args, tty=tty)
    assert "files/s" not in err


class Recorder:
    """Hooks over an empty snapshot that record the progress calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def rows(self):
        return []

    def repo(self, rel: str) -> None:
        pass

    def emit(self, result) -> None:
        pass

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        pass

    def progress(self, files: int, dirs: int, bytes_hashed: int) -> None:
        self.calls.append((files, dirs, bytes_hashed))


def test_twins_report_the_same_progress(big):
    """With no interval both scanners report after every directory, with the same counts."""
    got = {}
    for which in ("py", "c"):
        hooks = Recorder()
        load_twin(which).walk(ScanParams(root=str(big), start_ns=2_000_000_000 * 10**9,
                                         progress_ns=0), hooks)
        got[which] = [(f, d) for f, d, _ in hooks.calls]
    assert [d for _, d in got["py"]] == list(range(1, DIRS + 2))  # the root too
    assert got["c"] == got["py"]


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
def test_progress_while_a_big_file_is_hashed(twin, tmp_path, threads):
    """A scan busy hashing one big file still reports progress, by time, with the bytes
    read of that file so far: a 3,001-file tree with one 1.5 GB file showed nothing for
    4 s."""
    root = tmp_path / "tree"
    make_tree(root, 3)
    with open(root / "big.bin", "wb") as f:
        f.truncate(BIG)
    hooks = Recorder()
    twin.walk(ScanParams(root=str(root), start_ns=2_000_000_000 * 10**9, threads=threads,
                         eager_from_ns=EAGER_ALL, progress_ns=1_000_000), hooks)
    during = [b for _, _, b in hooks.calls if 0 < b < BIG]
    assert during, hooks.calls  # reported while the big file was being read
    assert all(b2 >= b1 for (_, _, b1), (_, _, b2) in zip(hooks.calls, hooks.calls[1:]))
