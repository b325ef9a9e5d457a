"""What a run loads before it works: `reconcile` starts often (from cron, from git hooks),
and one without a watch to scan loads neither the scanner, nor the queue writes, nor git,
nor URL parsing (benchmarks/startup.py measures the time)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import child_env

pytestmark = pytest.mark.scanner_free

NOT_WITHOUT_WATCHES = ("wqscan._scan", "wqscan.queue.writes", "wqscan.scan.gitinfo",
                       "wqscan.scan.labels", "wqscan.scan.filters", "xxhash", "git", "urllib")

_LOADED = """
import sys
before = set(sys.modules)
from wqscan.cli import main
code = main(sys.argv[1:])
print(code, *sorted(set(sys.modules) - before))
"""


def loaded(*argv: str) -> tuple[int, list[str]]:
    """The exit code of `wqscan ARGV` in a fresh interpreter, and the modules it loaded."""
    done = subprocess.run([sys.executable, "-P", "-c", _LOADED, *argv], env=child_env(),
                          capture_output=True, text=True, check=True, timeout=60)
    code, *mods = done.stdout.splitlines()[-1].split()
    return int(code), mods


def shunned(mods: list[str]) -> list[str]:
    """Those of `mods` a run without watches does not load (names starting with one of
    NOT_WITHOUT_WATCHES: the scanner's twins, gitdb)."""
    return [m for m in mods if m.startswith(NOT_WITHOUT_WATCHES)]


def test_reconcile_without_watches_loads_no_scanner_queue_writes_or_git(tmp_path: Path):
    db = str(tmp_path / "wq.db")
    assert loaded("--db", db, "init", "-q")[0] == 0
    code, mods = loaded("--db", db, "reconcile", "-q")
    assert code == 0
    assert "wqscan.store.sqlite" in mods  # it opened the database
    assert shunned(mods) == []


def test_reconcile_of_a_watch_loads_the_scanner(tmp_path: Path):
    """The check above sees what a scan loads."""
    db, tree = str(tmp_path / "wq.db"), tmp_path / "tree"
    tree.mkdir()
    assert loaded("--db", db, "add", str(tree), "--collection", "c")[0] == 0
    code, mods = loaded("--db", db, "reconcile", "-q")
    assert code == 0
    assert {"wqscan._scan", "wqscan.queue.writes", "wqscan.scan.filters"} <= set(
        shunned(mods))



@pytest.mark.parametrize("how", ["script", "caller"])
def test_the_script_freezes_what_start_up_made_and_a_caller_keeps_its_collector(
        tmp_path: Path, how: str):
    """The `wqscan` script (no argv given) moves what start-up made out of the collector's
    way (gc.freeze); a program calling main(argv) in its own process keeps its collector
    as it was."""
    db = str(tmp_path / "wq.db")
    run = ("import gc, sys\nfrom wqscan.cli import main\n"
           "argv = sys.argv[2:]\n"
           "if sys.argv[1] == 'script':\n    sys.argv[1:] = argv\n    argv = None\n"
           "code = main(argv)\nprint(code, gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-P", "-c", run, how, "--db", db, "init", "-q"],
                          env=child_env(), capture_output=True, text=True, check=True,
                          timeout=60)
    code, frozen = map(int, done.stdout.split())
    assert code == 0
    assert (frozen > 0) == (how == "script")
