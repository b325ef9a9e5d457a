"""Bringing real mounts of the network-mount lab (../shared/lab) up and down for tests:
sshfs (OpenSSH on loopback), smb (Samba through smbnetfs) and slowfs (a passthrough FUSE
filesystem that adds a round-trip latency)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

KINDS = ("sshfs", "smb", "slowfs")


def lab_dir() -> Path:
    """$WQSCAN_LAB, else ../shared/lab next to the checkout."""
    env = os.environ.get("WQSCAN_LAB")
    return Path(env).resolve() if env else \
        (Path(__file__).resolve().parents[2] / ".." / "shared" / "lab").resolve()


def lab_env(state: Path) -> dict[str, str]:
    """Environment for the lab scripts with a private LAB_STATE. An existing lab venv with
    mfusepy (the default state's) is linked in, so that no pip install is needed."""
    state.mkdir()
    for candidate in (os.environ.get("LAB_STATE"), "/tmp/netlab"):
        if not candidate:
            continue
        py = Path(candidate) / "venv" / "bin" / "python"
        if py.exists() and subprocess.run([str(py), "-c", "import mfusepy"],
                                          capture_output=True).returncode == 0:
            (state / "venv").symlink_to(Path(candidate) / "venv")
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
    """Remove the private state directory, never following the linked-in venv."""
    state = Path(env["LAB_STATE"])
    if (state / "venv").is_symlink():
        (state / "venv").unlink()
    shutil.rmtree(state, ignore_errors=True)
