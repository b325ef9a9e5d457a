"""The `lab` fixture: the network-mount lab directory, or a skip saying what is missing; the
module-wide `lab_state` of the modules that mount shares."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from integration.lab import cleanup, lab_dir, lab_env, lab_missing, reap


@pytest.fixture
def lab() -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("FUSE lab needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the network mount lab needs root")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    d = lab_dir()
    if not (d / "slowfs-up.sh").is_file() or not (d / "slowfs-down.sh").is_file():
        pytest.skip(f"no network mount lab at {d} (set WQSCAN_LAB)")
    return d


@pytest.fixture(scope="module")
def lab_state(tmp_path_factory):
    """One LAB_STATE for the module's mounts (so that slowfs's venv is made once)."""
    why = lab_missing()
    if why:
        pytest.skip(why)
    env = lab_env(tmp_path_factory.mktemp("lab") / "state")
    yield env
    reap(env)
    cleanup(env)
