"""Default places of wqscan's files, by the XDG base directory rules: the database, and
the log of the scans git hooks start."""
from __future__ import annotations

import os

HOOK_LOG_BYTES = 1 << 20  # a run log past this size is rotated to LOG.1 before a run


def _xdg(variable: str, *fallback: str) -> str:
    """$VARIABLE if it is an absolute path (the XDG rules ignore a relative one), else
    ~/FALLBACK."""
    value = os.environ.get(variable, "")
    if os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), *fallback)


def default_db() -> str:
    """$XDG_DATA_HOME/wqscan/wqscan.db (~/.local/share/wqscan/wqscan.db)."""
    return os.path.join(_xdg("XDG_DATA_HOME", ".local", "share"), "wqscan", "wqscan.db")


def default_hook_log() -> str:
    """$XDG_STATE_HOME/wqscan/hooks.log (~/.local/state/wqscan/hooks.log)."""
    return os.path.join(_xdg("XDG_STATE_HOME", ".local", "state"), "wqscan", "hooks.log")


def append_output_to(path: str) -> None:
    """Send this process's stdout and stderr to the end of `path` (created with its
    directory; rotated to `path.1` first when past HOOK_LOG_BYTES), so that a run nobody
    watches (a git hook's) leaves its output where `status` points."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        if os.path.getsize(path) > HOOK_LOG_BYTES:
            os.replace(path, path + ".1")
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o644)
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
