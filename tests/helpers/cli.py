"""wqscan's command line, in process (main) and as a child process (`python -m wqscan`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers.db import Db

from wqscan.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `wqscan ARGV` in process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    """stderr is exactly one line, without a traceback; returns it."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def child_env(**extra: str) -> dict[str, str]:
    """This environment without $WQSCAN_DB and $WQSCAN_CONFIG, plus `extra`."""
    env = dict(os.environ)
    for name in ("WQSCAN_DB", "WQSCAN_CONFIG"):
        env.pop(name, None)
    env.update(extra)
    return env


def db_argv(db: Path | str | Db | None) -> list[str]:
    """The global options naming a database on a wqscan command line (none for None)."""
    if db is None:
        return []
    return db.argv if isinstance(db, Db) else ["--db", str(db)]


def wqscan_argv(db: Path | str | Db | None, *args: str) -> list[str]:
    """`python -P -m wqscan --db DB ARGS` (-P: the child imports the installed package, not
    a source tree in its working directory)."""
    return [sys.executable, "-P", "-m", "wqscan", *db_argv(db), *args]


def wqscan(db: Path | str | Db | None, *args: str | bytes, env: dict[str, str] | None = None,
           timeout: float = 120, text: bool = True, **popen: Any
           ) -> subprocess.CompletedProcess:
    """Run `python -m wqscan` on the database `db` names (a path, a Db, or None for no
    option) with ARGS to completion: no stdin, output captured (text decoded leniently, or
    bytes), the environment child_env() unless `env` is given."""
    decode = {"encoding": "utf-8", "errors": "backslashreplace"} if text else {}
    return subprocess.run(wqscan_argv(db, *args), env=child_env() if env is None else env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          **decode, **popen)
