"""The progress line: on a terminal only, never with --quiet or --json; both twins report it."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_twin
from wqscan.records import PROGRESS_DIRS, ScanParams


def make_tree(root: Path, dirs: int) -> None:
    for i in range(dirs):
        d = root / f"d{i:04d}"
        d.mkdir(parents=True)
        (d / "f.txt").write_bytes(b"x")
        os.utime(d / "f.txt", ns=(1_700_000_000 * 10**9,) * 2)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A tree with more directories than one progress step."""
    root = tmp_path_factory.mktemp("progress") / "tree"
    make_tree(root, PROGRESS_DIRS * 2 + 10)
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


def test_progress_shown_on_a_terminal(tmp_path, big):
    """On a terminal a long scan rewrites one line in place, and clears it at the end."""
    db = tmp_path / "wq.db"
    add(db, big)
    err = run_wqscan(db, ["reconcile"], tty=True)
    assert "files/s" in err and "\r" in err
    assert f"{PROGRESS_DIRS} dirs" in err
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

    def progress(self, files: int, dirs: int) -> None:
        self.calls.append((files, dirs))


def test_twins_report_the_same_progress(big):
    """Both scanners call progress every PROGRESS_DIRS directories with the same counts."""
    got = {}
    for which in ("py", "c"):
        hooks = Recorder()
        load_twin(which).walk(ScanParams(root=str(big), start_ns=2_000_000_000 * 10**9), hooks)
        got[which] = hooks.calls
    assert [d for _, d in got["py"]] == [PROGRESS_DIRS, 2 * PROGRESS_DIRS]
    assert got["c"] == got["py"]
