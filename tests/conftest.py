"""Shared fixtures: the scanner twin under test (ids `c` and `py`), in process or in a child's
environment, a database, trees, no configuration from the environment."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import TWIN_NAMES, load_twin, twin_environ
from wqscan import _scan
from wqscan.store import Store

# Subprocesses (`python -m wqscan`, `python -c`) must import the installed package, not
# the source tree of a checkout that has no compiled scanner: no cwd on their sys.path.
os.environ["PYTHONSAFEPATH"] = "1"


def pytest_collection_modifyitems(config, items) -> None:
    """With WQSCAN_NO_EXTENSIONS=1 (the pure-Python scanner pass) skip what the
    compiled-scanner pass already ran unchanged: tests whose subject is not the scanner,
    and tests parametrized over the twins (that pass runs their `py` case too). What is
    left runs on the scanner the selector picks: the pure one."""
    if not _scan.NO_EXTENSIONS:
        return
    free = pytest.mark.skip(reason="not about the scanner; runs in the compiled-scanner pass")
    twins = pytest.mark.skip(reason="runs with both twins in the compiled-scanner pass")
    for item in items:
        if item.get_closest_marker("scanner_free"):
            item.add_marker(free)
        elif "twin" in getattr(item, "fixturenames", ()):
            item.add_marker(twins)


@pytest.fixture(params=["c", "py"])
def twin(request, monkeypatch):
    """Routes `wqscan._scan` to one twin for the duration of a test."""
    mod = load_twin(request.param)
    for name in TWIN_NAMES:
        monkeypatch.setattr(_scan, name, getattr(mod, name))
    monkeypatch.setattr(_scan, "BACKEND", "cython" if request.param == "c" else "python")
    return mod


@pytest.fixture(params=["c", "py"])
def env(request) -> dict[str, str]:
    """The environment that makes `python -m wqscan` use one scanner twin."""
    load_twin(request.param)  # skips `c` when the test run asks for the pure scanner
    return twin_environ(request.param)


@pytest.fixture
def no_ambient_config(monkeypatch, tmp_path) -> None:
    """No database or configuration from the environment of whoever runs the tests; a
    default database, if one is ever used, lands in the test's directory."""
    monkeypatch.delenv("WQSCAN_DB", raising=False)
    monkeypatch.delenv("WQSCAN_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.open(str(tmp_path / "wq.db"))
    yield s
    s.close()


@pytest.fixture
def root(tmp_path) -> Path:
    d = tmp_path / "tree"
    d.mkdir()
    return d


