"""A throwaway PostgreSQL server for the tests: a fresh cluster in a temporary directory,
reachable only through a Unix socket there, stopped and deleted by `Cluster.stop`."""
from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

USER = "wqscan"  # the cluster's superuser, trusted on the socket
PORT = 5432  # only names the socket file; pinned so that $PGPORT cannot move it
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off"
    " -c full_page_writes=off -c max_connections=200"
)
# The kernel limits a socket's path (sun_path) to 107 bytes.
SOCKET_PATH_MAX = 107
DROP_TO = "nobody"  # PostgreSQL refuses to run as root: as root, the cluster runs as this user


class ClusterError(RuntimeError):
    """Why the cluster could not be created, started or stopped, in one line."""


def find_bindir() -> Path:
    """The directory with both `initdb` and `pg_ctl`: PATH first, else the highest
    /usr/lib/postgresql/*/bin (Debian keeps them off PATH)."""
    def has_both(d: Path) -> bool:
        return all(os.access(d / name, os.X_OK) for name in ("initdb", "pg_ctl"))

    on_path = shutil.which("initdb")
    if on_path and has_both(Path(on_path).parent):
        return Path(on_path).parent

    def version(d: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(d).parent.name))

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if has_both(Path(d)):
            return Path(d)
    raise ClusterError("initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin")


def _tail(text: str, lines: int = 3) -> str:
    """The last non-blank lines of a program's output, joined into one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"


def _searchable_by_all(path: Path) -> bool:
    """Whether every directory from / down to `path` lets any user through (mode o+x)."""
    return all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents))


class Cluster:
    """A PostgreSQL cluster started by the constructor; `url` reaches it, `stop()` ends
    it and deletes its directory. Failures raise ClusterError saying why."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self._prefix = self._privilege_drop()
        base = Path(tempfile.gettempdir())
        too_long = len(str(base)) + len("/wqscan-pg-XXXXXXXX/.s.PGSQL.5432") > SOCKET_PATH_MAX
        if too_long or (self._prefix and not _searchable_by_all(base)):
            base = Path("/tmp")  # short, and open to the unprivileged user
        self.dir = Path(tempfile.mkdtemp(prefix="wqscan-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        self._running = False
        try:
            if self._prefix:
                entry = pwd.getpwnam(DROP_TO)
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.dir, 0o755)  # the socket's directory: searchable by everyone
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """A libpq URL for database `postgres` as the superuser, through the socket."""
        return f"postgresql://{USER}@/postgres?host={quote(str(self.dir), safe='/')}&port={PORT}"

    def stop(self) -> None:
        """Stops the server at once (no checkpoint: the data is thrown away) and deletes the
        directory; does nothing the second time."""
        if not self.dir.exists():
            return
        error = None
        if self._running or (self.data / "postmaster.pid").exists():
            done = self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            pid = self._postmaster_pid()
            if done.returncode != 0 and pid is not None and self._is_our_postmaster(pid):
                os.kill(pid, signal.SIGKILL)  # its backends notice the postmaster's death
                error = f"pg_ctl stop failed ({_tail(done.stdout)}); killed postmaster {pid}"
        self._running = False
        shutil.rmtree(self.dir, ignore_errors=True)
        if error:
            raise ClusterError(error)

    def halt(self) -> None:
        """Stops the server as a restart does (every session cut), keeping its data for
        `start`: an outage. (Fast, not immediate: with synchronous_commit off, a crash would
        lose the last commits by the server's own choice.)"""
        done = self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])
        if done.returncode != 0:
            raise ClusterError(f"pg_ctl stop failed: {_tail(done.stdout)}")
        self._running = False

    def start(self) -> None:
        """Starts the server again after `halt` (crash recovery, then the same data)."""
        self._start()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _privilege_drop(self) -> list[str]:
        """The command prefix that runs PostgreSQL's programs as `nobody` when we are root
        (empty otherwise)."""
        if os.geteuid() != 0:
            return []
        try:
            entry = pwd.getpwnam(DROP_TO)
        except KeyError:
            raise ClusterError(f"running as root and there is no user {DROP_TO!r} to run "
                               "PostgreSQL as") from None
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                    "--clear-groups"]
        if shutil.which("runuser"):
            return ["runuser", "-u", DROP_TO, "--"]
        raise ClusterError("running as root and neither setpriv nor runuser is there to drop "
                           "to nobody")

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs one of PostgreSQL's programs (as the cluster's owner), output captured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        command = [*self._prefix, str(self.bindir / argv[0]), *argv[1:]]
        try:
            return subprocess.run(
                command, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{argv[0]} {argv[-1]} did not finish in {timeout:.0f}s") from None
        except OSError as e:
            raise ClusterError(f"could not run {command[0]}: {e}") from None

    def _initdb(self) -> None:
        """Creates the cluster: superuser `wqscan`, trusted, UTF8 (C.UTF-8, else no locale)."""
        base = ["initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8"]
        done = self._run([*base, "--locale=C.UTF-8"])
        if done.returncode != 0 and "locale" in done.stdout.lower():
            shutil.rmtree(self.data, ignore_errors=True)
            done = self._run([*base, "--no-locale"])
        if done.returncode != 0:
            raise ClusterError(f"initdb failed (exit {done.returncode}): {_tail(done.stdout)}")

    def _start(self) -> None:
        """Starts the server on the socket in the directory only, durability off (speed)."""
        options = f"-k {shlex.quote(str(self.dir))} -p {PORT} {SERVER_OPTIONS}"
        done = self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                          "-t", "60", "-w", "start"])
        self._running = True  # even if pg_ctl gave up waiting, a server may be there to stop
        if done.returncode != 0:
            try:
                log = self.log.read_text(errors="replace")
            except OSError:
                log = ""
            raise ClusterError(f"PostgreSQL did not start (pg_ctl exit {done.returncode}): "
                               f"{_tail(log or done.stdout)}")

    def _postmaster_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, if the file is still there."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        """Whether `pid` is a live postgres serving this data directory (a stale pid file's
        pid may name some other process by now)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return os.fsencode(self.data) in argv


def restartable() -> Cluster:
    """A cluster of the test's own (one the test may halt and start again without the
    rest of the session noticing); skips, saying why, where PostgreSQL is not there."""
    import pytest

    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        pytest.skip(f"PostgreSQL unavailable: psycopg is not importable ({e})")
    try:
        return Cluster()
    except (ClusterError, OSError) as e:
        pytest.skip(f"PostgreSQL unavailable: {e}")
