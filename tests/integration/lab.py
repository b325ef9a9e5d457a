"""Bringing real mounts of the network-mount lab (../shared/lab) up and down for tests:
sshfs (OpenSSH on loopback), smb (Samba through smbnetfs) and slowfs (a passthrough FUSE
filesystem that adds a round-trip latency)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

KINDS = ("sshfs", "smb", "slowfs")


def lab_dir() -> Path:
    """$WQSCAN_LAB, else ../shared/lab next to the checkout."""
    env = os.environ.get("WQSCAN_LAB")
    return Path(env).resolve() if env else \
        (Path(__file__).resolve().parents[2] / ".." / "shared" / "lab").resolve()


#: Where the first test that had slowfs build its venv (with mfusepy) leaves it for the
#: others, so that a fresh machine builds it once per run, not once per module.
VENV_CACHE = Path(tempfile.gettempdir()) / "wqscan-lab-venv"


def lab_env(state: Path) -> dict[str, str]:
    """Environment for the lab scripts with a private LAB_STATE. An existing lab venv with
    mfusepy is linked in, so that no pip install is needed."""
    state.mkdir()
    for venv in (Path(os.environ.get("LAB_STATE", "/nonexistent")) / "venv",
                 Path("/tmp/netlab/venv"), VENV_CACHE):
        py = venv / "bin" / "python"
        if py.exists() and subprocess.run([str(py), "-c", "import mfusepy"],
                                          capture_output=True).returncode == 0:
            (state / "venv").symlink_to(venv)
            break
    return {**os.environ, "LAB_STATE": str(state)}


def up(lab: Path, env: dict[str, str], kind: str, src: Path, mnt: Path,
       latency_ms: float = 0) -> None:
    """Mount `src` at `mnt` (run again on a mount whose server died: remounts)."""
    args = [str(lab / f"{kind}-up.sh"), str(src), str(mnt)]
    if kind == "slowfs":
        args.append(f"{latency_ms:g}")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{kind}-up.sh failed ({r.returncode}): {r.stdout}{r.stderr}")


def down(lab: Path, env: dict[str, str], kind: str, mnt: Path | None = None) -> None:
    """Unmount (and stop the lab's server when nothing else uses it)."""
    args = [str(lab / f"{kind}-down.sh")] + ([str(mnt)] if mnt and kind != "smb" else [])
    subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def cleanup(env: dict[str, str]) -> None:
    """Remove the private state directory, never following the linked-in venv; a venv
    built here is kept in VENV_CACHE for the next test."""
    state = Path(env["LAB_STATE"])
    if (state / "venv").is_symlink():
        (state / "venv").unlink()
    elif (state / "venv").is_dir() and not VENV_CACHE.exists():
        shutil.move(str(state / "venv"), str(VENV_CACHE))
    shutil.rmtree(state, ignore_errors=True)


# -- helpers for module-scoped mounts and fault injection -----------------------------

def lab_missing() -> str | None:
    """Why the lab cannot run here (the `lab` fixture's checks, for module-scoped
    fixtures, which are set up before that function-scoped fixture), or None."""
    import sys

    if not sys.platform.startswith("linux"):
        return "FUSE lab needs Linux"
    if os.geteuid() != 0:
        return "the network mount lab needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    d = lab_dir()
    if not (d / "slowfs-up.sh").is_file() or not (d / "slowfs-down.sh").is_file():
        return f"no network mount lab at {d} (set WQSCAN_LAB)"
    return None


def _abspath(p: Path) -> str:
    """As lib.sh's abspath: the parent resolved, the last component left alone."""
    return os.path.join(os.path.realpath(os.path.dirname(str(p))), os.path.basename(str(p)))


def _pid_of(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_alive(pid: int) -> bool:
    """Running and not a zombie (as lib.sh's `alive`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rpartition(b")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def server_pidfile(env: dict[str, str], kind: str, mnt: Path | None = None) -> Path:
    """The pid file of the lab's server process for a mount of `kind` (for slowfs, the
    FUSE process of the mount at `mnt`)."""
    state = Path(env["LAB_STATE"])
    if kind == "sshfs":
        return state / "sshfs" / "sshd.pid"
    if kind == "smb":
        return state / "smb" / "run" / "smbd.pid"
    assert mnt is not None, "slowfs: which mount?"
    key = re.sub(r"[^A-Za-z0-9._-]", "_", _abspath(mnt))  # as slowfs-up.sh's `tr -c`
    return state / "slowfs" / f"{key}.pid"


def server_pids(env: dict[str, str], kind: str, mnt: Path | None = None) -> list[int]:
    """The server of a mount with every process it started (sshd's session processes,
    smbd's per-client children), alive ones only."""
    pid = _pid_of(server_pidfile(env, kind, mnt))
    if pid is None or not _proc_alive(pid):
        return []
    return [p for p in [pid, *_descendants(pid)] if _proc_alive(p)]


def kill_server(env: dict[str, str], kind: str, mnt: Path | None = None,
                sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` to the server of a mount (the server "dies" with SIGKILL); returns the
    pids signalled. The mount stays, dead: `up` brings the server back and remounts."""
    pids = server_pids(env, kind, mnt)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def reap(env: dict[str, str]) -> None:
    """After the -down scripts: kill any process still running from this LAB_STATE (its
    path is in their command lines): a server sshfs-down kept because some other lab
    sshfs mount exists (even one of another state), or a FUSE client that hung (smbnetfs
    can deadlock when its server dies under concurrent requests) and was aborted."""
    state = os.path.realpath(env["LAB_STATE"]).encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if state + b"/" in cmdline and _proc_alive(int(d)):
            try:
                os.kill(int(d), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _mountinfo(path: Path) -> list[tuple[str, str, str]]:
    """(mount point, major:minor, fstype) of the mounts at or below `path` (whose last
    component is not resolved: that would stat a mount point, which hangs when hung)."""
    prefix = _abspath(path)
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            fields = fields.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                out.append((point, fields[2], rest.split()[0]))
    return out


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from mountinfo, so dead FUSE mounts count too)."""
    return [point for point, _, _ in _mountinfo(path)]


def fuse_abort(path: Path) -> list[str]:
    """Abort the FUSE connections of the mounts at or below `path` (fusectl), so that
    processes blocked on a hung FUSE server get ENOTCONN instead of waiting forever (a
    request the server has received cannot be interrupted, not even by SIGKILL)."""
    conns = Path("/sys/fs/fuse/connections")
    found = [(point, dev) for point, dev, fstype in _mountinfo(path)
             if fstype.startswith("fuse")]
    if found and conns.is_dir() and not any(conns.iterdir()):
        subprocess.run(["mount", "-t", "fusectl", "none", str(conns)], capture_output=True)
    aborted = []
    for point, dev in found:
        try:
            (conns / dev.split(":")[1] / "abort").write_text("1")
            aborted.append(point)
        except OSError:
            pass
    return aborted


def run_unstuck(args: list[str], timeout: float, under: Path
                ) -> tuple[int, str, str, list[str]]:
    """Run a command; if it has not ended after `timeout` s, it is taken to be blocked on
    a hung FUSE mount: the FUSE connections below `under` are aborted and it is waited
    for again. Returns exit code, stdout, stderr and the mount points aborted."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    aborted: list[str] = []
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            aborted = fuse_abort(under)
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err, aborted


def force_unmount(path: Path) -> list[str]:
    """Last resort in a test's teardown: lazily unmount whatever is still mounted at or
    below `path`, deepest first; returns what was left mounted."""
    left = mounts_under(path)
    for point in sorted(left, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    return left


def wait_ready(mnt: Path, timeout: float = 30.0) -> None:
    """Wait until a (re)mounted share lists a non-empty root: after its server restarts,
    smbnetfs answers EIO for a second or two before it reconnects."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out, err, aborted = run_unstuck(["ls", "-A", str(mnt)], 10, mnt)
        if aborted:
            raise RuntimeError(f"{mnt} hung (FUSE connection aborted): {err}")
        if rc == 0 and out.strip():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mnt} not readable after {timeout:g} s: {err}")
        time.sleep(0.1)


#: Environment per kind for tests that change the source and scan right after: sshfs
#: caches names and attributes for 20 s by default (its dir_cache), hiding the change.
TEST_ENV = {"sshfs": {"SSHFS_OPTS": "dir_cache=no"}}


def visible_mtime(kind: str, mtime_ns: int) -> int:
    """The mtime a mount of `kind` reports for a source file's `mtime_ns`: SFTP v3 has
    whole seconds, SMB 100 ns (NT time); slowfs passes nanoseconds through."""
    if kind == "sshfs":
        return mtime_ns // 10**9 * 10**9
    if kind == "smb":
        return mtime_ns // 100 * 100
    return mtime_ns


def await_view(kind: str, src: Path, mnt: Path, rels, timeout: float = 20.0,
               content: bool = False) -> None:
    """Wait until the mount at `mnt` shows the files `rels` of `src` as they are now
    (size and mtime, with `content` their bytes too; gone when gone): FUSE clients cache
    attributes (smbnetfs: the kernel's 1 s; slowfs: 0.1 s)."""
    deadline = time.monotonic() + timeout
    for rel in rels:
        s, m = src / rel, mnt / rel
        while True:
            try:
                want = s.lstat()
            except FileNotFoundError:
                want = None
            try:
                if want is None:
                    ok = not os.path.lexists(m) and (not m.parent.is_dir()
                                                     or m.name not in os.listdir(m.parent))
                else:
                    got = m.lstat()
                    ok = got.st_size == want.st_size and \
                        got.st_mtime_ns == visible_mtime(kind, want.st_mtime_ns) and \
                        (not content or m.read_bytes() == s.read_bytes())
            except OSError:
                ok = False
            if ok:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{kind}: {m} does not show {s} after {timeout:g} s")
            time.sleep(0.05)


def lab_python(lab: Path, env: dict[str, str], scratch: Path) -> str:
    """The lab's Python, with mfusepy (slowfs-up.sh builds its venv the first time: a
    throwaway slowfs mount of an empty directory makes sure it exists)."""
    py = Path(env["LAB_STATE"]) / "venv" / "bin" / "python"
    if not py.exists():
        (scratch / "src").mkdir(parents=True)
        up(lab, env, "slowfs", scratch / "src", scratch / "mnt", 0)
        down(lab, env, "slowfs", scratch / "mnt")
    return str(py)
