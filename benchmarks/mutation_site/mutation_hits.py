"""A pytest plugin for mutmut's first pass (loaded through $PYTEST_PLUGINS by
benchmarks/mutation_run.py): the functions a test's child processes called, recorded by
sitecustomize.py, count as called by the test, so that mutmut runs the test against their
mutants too."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pytest_runtest_makereport(item: Any, call: Any) -> None:
    if call.when != "call" or os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return
    from mutmut.state import state

    for path in Path(os.environ["WQSCAN_MUTATION_HITS"]).glob("*.hits"):
        state()._stats.update(path.read_text().split())
        path.unlink()
