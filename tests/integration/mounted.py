"""wqscan on a lab mount as a user and a consumer see it: the command line (never left
hanging on a FUSE mount), a watch, a scan's report, the pending rows."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from helpers.cli import wqscan_argv
from helpers.db import queue

from integration.lab import run_unstuck


def unstuck_wqscan(db: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`wqscan --db DB ARGS...`. Should it hang on a FUSE mount, the connections of the
    session's mounts (below the test session's temporary directory, where `db` lies
    two levels down) are aborted so that it ends, and the test fails saying so."""
    argv = wqscan_argv(db, *args)
    rc, out, err, aborted = run_unstuck(argv, timeout, db.parent.parent)
    assert not aborted, f"wqscan {' '.join(args)} hung on a FUSE mount; aborted {aborted}"
    return subprocess.CompletedProcess(argv, rc, out, err)


def add(db: Path, root: Path, wid: str = "w", *extra: str) -> None:
    r = unstuck_wqscan(db, "add", str(root), "--collection", "c", "--id", wid, "--settle", "0",
                       *extra)
    assert r.returncode == 0, r.stderr


def scan(db: Path, wid: str = "w", expect_rc: int | None = 0) -> dict[str, Any]:
    """`reconcile WID --json`; the watch's report, with the exit code and stderr added."""
    r = unstuck_wqscan(db, "reconcile", wid, "--json")
    assert "Traceback" not in r.stderr, r.stderr
    if expect_rc is not None:
        assert r.returncode == expect_rc, (r.returncode, r.stdout, r.stderr)
    (report,) = json.loads(r.stdout)["watches"]
    return {**report, "rc": r.returncode, "stderr": r.stderr}


def pending(db: Path) -> dict[str, dict[str, Any]]:
    """Pending queue rows by relative path, metadata decoded."""
    rows = queue(db)
    out = {}
    for r in rows:
        out[r["metadata"]["relative_path"]] = r
    assert len(out) == len(rows), rows
    return out


def ops(db: Path) -> dict[str, str]:
    return {rel: r["operation"] for rel, r in pending(db).items()}


def body(tag: str, i: int) -> bytes:
    """Distinct contents of varied sizes (a rename is paired by content hash)."""
    return (f"{tag} file {i}\n" * (1 + i % 9)).encode()
