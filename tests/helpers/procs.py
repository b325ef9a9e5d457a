"""Processes as /proc shows them, and polling for a condition."""
from __future__ import annotations

import os
import time
from typing import Callable


def proc_state(pid: int) -> str | None:
    """The state letter of a process in /proc (R, S, T, Z, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2:].split()[0].decode()
    except (OSError, IndexError):
        return None


def alive(pid: int, marker: str) -> bool:
    """Process `pid` runs (not a zombie) and its command line contains `marker`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return marker.encode() in cmdline and proc_state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of its main thread); [] when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def holds_tree(pid: int, root: str) -> bool:
    """True while process `pid` holds a descriptor open on the tree (its walk is under way)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == root or target.startswith(root + "/"):
            return True
    return False


def wait_until(cond: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Poll `cond` every 50 ms for up to `seconds`; returns whether it came to hold."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def pending_signals(pid: int) -> int:
    """The process-wide pending signal mask (ShdPnd) of a process; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("ShdPnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0
