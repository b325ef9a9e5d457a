"""The `lab` fixture: the network-mount lab directory, or a skip saying what is missing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from integration.lab import lab_dir


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
