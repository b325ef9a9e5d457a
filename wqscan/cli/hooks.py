"""Git hooks that start a scoped reconcile after checkout, merge and rewrite.

`install` writes `post-checkout`, `post-merge` and `post-rewrite` into the hooks
directory git itself uses (`core.hooksPath` respected). A hook already there is
kept as `<name>.wqscan-chained` and run first, with the same arguments, input and
exit status. The wqscan hook then starts `wqscan reconcile --path <repository>
--until-settled 300` in the background against the database resolved at install
time, so git never waits for a scan, and the files git just wrote (younger than
the settle time) are queued by that same run once they settle. The scan records itself as
the hook's (`--hook`, shown by `status`) and appends its output to a bounded log
(`--log`, by default $XDG_STATE_HOME/wqscan/hooks.log). `uninstall` removes only what
`install` added.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UsageError
from .text import printable

if TYPE_CHECKING:
    from ..store import Target

HOOKS = ("post-checkout", "post-merge", "post-rewrite")
MARKER = "# wqscan-hook"
DATABASE_LINE = "# wqscan-hook database: "
CHAINED = ".wqscan-chained"
SETTLE_FOR = 300  # seconds the hook's scan waits for the files git just wrote to settle


def _git(repo: str, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed") from None
    if done.returncode != 0:
        raise UsageError(f"{repo} is not a git repository: "
                         f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return done.stdout.strip()


def locate(repo: str) -> tuple[str, str]:
    """(work tree root, hooks directory) of the repository containing `repo`."""
    repo = os.path.abspath(repo)
    if not os.path.isdir(repo):
        raise UsageError(f"{repo} is not a directory")
    top = _git(repo, "rev-parse", "--show-toplevel")
    hooks = _git(repo, "rev-parse", "--git-path", "hooks")
    return os.path.realpath(top), os.path.abspath(os.path.join(repo, hooks))


def _script(name: str, top: str, db: Target, log: str) -> str:
    chained = shlex.quote(name + CHAINED)
    reconcile = " ".join(shlex.quote(a) for a in (
        sys.executable, "-P", "-m", "wqscan", *db.argv(), "reconcile", "--path", top,
        "--until-settled", str(SETTLE_FOR), "--hook", name, "--log", log))
    return f"""#!/bin/sh
{MARKER}: installed by `wqscan hook install`; `wqscan hook uninstall` removes it.
{DATABASE_LINE}{printable(db.name)}
# Runs the hook that was here before (if any), then rescans the repository in the
# background so that git does not wait; the scan's output goes to {printable(log)}.
status=0
chained="$(dirname "$0")"/{chained}
if [ -x "$chained" ]; then
    "$chained" "$@" || status=$?
fi
( {reconcile} </dev/null >/dev/null 2>&1 & )
exit $status
"""


def _database_of(path: str) -> str | None:
    """The database an installed hook of ours names, if it says."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f.read(8192).splitlines():
                if line.startswith(DATABASE_LINE):
                    return line[len(DATABASE_LINE):]
    except OSError:
        pass
    return None


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


class Installed(NamedTuple):
    """What `install` did: the hook files written, the database they use, the one they
    used before if it was another (they are re-pointed), and the log their scans append
    to."""

    written: list[str]
    database: str
    repointed_from: str | None
    log: str


def install(repo: str, db: Target, log: str) -> Installed:
    """Install the hooks, whose scans use database `db` and append their output to `log`."""
    top, hooks = locate(repo)
    os.makedirs(hooks, exist_ok=True)
    if not db.is_pg:
        db = db._replace(db=os.path.abspath(db.db))
    written = []
    before: str | None = None
    for name in HOOKS:
        path = os.path.join(hooks, name)
        chained = path + CHAINED
        if _ours(path):
            old = _database_of(path)
            if old is not None and old != printable(db.name):
                before = before or old
        elif os.path.lexists(path):
            if os.path.lexists(chained):
                raise UsageError(f"{chained} exists already; move it away first")
            os.rename(path, chained)
        tmp = path + ".wqscan-tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a leftover, or a planted symlink: never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o755)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_script(name, top, db, log))
            os.fchmod(f.fileno(), 0o755)
        os.replace(tmp, path)
        written.append(path)
    return Installed(written, printable(db.name), before, log)


def uninstall(repo: str) -> list[str]:
    """Remove the hooks `install` wrote and put chained hooks back; returns what changed."""
    _, hooks = locate(repo)
    changed = []
    for name in HOOKS:
        path = os.path.join(hooks, name)
        chained = path + CHAINED
        if _ours(path):
            os.unlink(path)
            changed.append(path)
            if os.path.lexists(chained):
                os.rename(chained, path)
    return changed
