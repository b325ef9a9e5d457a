"""The scanner twin under test: the compiled one (`c`) or the pure-Python one (`py`), in
process or in a child's environment."""
from __future__ import annotations

import os
from types import ModuleType

import pytest

from wqscan import _scan, _scan_py

#: The names both scanner twins export.
TWIN_NAMES = ("walk", "encode_entries", "decode_entries", "glob_match", "gitignore_rules")


def load_twin(name: str) -> ModuleType:
    """The scanner module for id `c` or `py`; `c` skips when the variable asks for Python,
    or in a source tree without the compiled twin (the mutation run's copy: in an install,
    tests/test_twins.py::test_extension_loaded fails instead)."""
    if name == "py":
        return _scan_py
    if _scan.NO_EXTENSIONS:
        pytest.skip("WQSCAN_NO_EXTENSIONS asks for the pure-Python scanner")
    if _scan.BACKEND == "python":
        pytest.skip("no compiled scanner here: the selector fell back to the pure one")
    from wqscan import _scan_c

    return _scan_c


def twin_environ(name: str) -> dict[str, str]:
    """The environment that makes a `python -m wqscan` child use twin `c` or `py`."""
    env = dict(os.environ)
    env.pop("WQSCAN_NO_EXTENSIONS", None)
    if name == "py":
        env["WQSCAN_NO_EXTENSIONS"] = "1"
    return env


def twin_env(twin: ModuleType) -> dict[str, str]:
    """twin_environ of the twin module a test runs on (fixture `twin`)."""
    return twin_environ("py" if twin.__name__.endswith("_scan_py") else "c")


@pytest.fixture(params=["c", "py"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Routes `wqscan._scan` to one twin for the duration of a test (a fixture, made
    available by tests/conftest.py and the benchmarks' conftest)."""
    mod = load_twin(request.param)
    for name in TWIN_NAMES:
        monkeypatch.setattr(_scan, name, getattr(mod, name))
    monkeypatch.setattr(_scan, "BACKEND", "cython" if request.param == "c" else "python")
    return mod
