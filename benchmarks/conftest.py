"""Fixtures for the scanner benchmarks: the twin under test and generated trees."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from helpers.twins import twin  # noqa: E402,F401  (the tests' fixture `twin`)


@pytest.fixture(scope="session")
def tree_dir(tmp_path_factory) -> str:
    """A 20,000-file tree, built once per session (N from $WQSCAN_BENCH_FILES)."""
    from mktree import build

    root = str(tmp_path_factory.mktemp("bench") / "tree")
    os.makedirs(root)
    build(root, int(os.environ.get("WQSCAN_BENCH_FILES", "20000")))
    return root
