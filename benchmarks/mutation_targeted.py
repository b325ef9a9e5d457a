#!/usr/bin/env python3
"""Check mutants of a module against chosen test files, two at a time: the mutants a
mutmut run left unchecked (or, with --status survived, those it left alive). Much faster
than the run for functions that every scan reaches, whose survivors mutmut tests against
every test mapped to them; a mutant these files leave alive is not proven alive, only
left to look at. docs/mutation.md says how it was used.

usage: mutation_targeted.py [--workdir DIR] [--jobs N] [--status S] [--skip FILE]
                             MODULE=TESTS ...
  e.g. 'wqscan.reconcile.root=tests/test_scan_rules.py tests/test_scan_edges.py'

Run after benchmarks/mutation_run.py, on the code that run mutated (it reads that run's
results and mutants in DIR/mutants; the tests are copied there afresh, so tests written
since count; they must pass there without a mutant first, or nothing is checked). Prints
each mutant with K (killed), S (survived) or T (timed out), and writes them to
DIR/targeted.json. --skip leaves out mutants checked already or shown equivalent.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mutation_run import ROOT, mutant_env

TIMEOUT = 600


def mutants(workdir: Path, module: str, status: str) -> list[str]:
    """The mutants of `module` whose result in mutmut's files is `status` (not checked:
    none yet; survived: exit code 0)."""
    meta = workdir / "mutants" / (module.replace(".", "/") + ".py.meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    want = (lambda c: c is None) if status == "not-checked" else (lambda c: c == 0)
    return sorted(name for name, code in codes.items() if want(code))


def check(workdir: Path, env: dict[str, str], name: str, tests: list[str]) -> str:
    """K, S or T for one mutant against the tests (the first failure ends the run)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=workdir / "mutants", env={**env, "MUTANT_UNDER_TEST": name},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "T"
    return {0: "S", 1: "K"}.get(done.returncode, f"error {done.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--status", choices=("not-checked", "survived"), default="not-checked")
    parser.add_argument("--skip", type=Path, help="a file whose lines start with mutants not "
                        "to run (checked already, or shown equivalent)")
    parser.add_argument("targets", nargs="+", help="MODULE=TEST_FILES (space-separated)")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    skip = {line.split()[0] for line in args.skip.read_text().splitlines() if line.strip()} \
        if args.skip else set()
    targets = [(module, tests.split())
               for module, _, tests in (t.partition("=") for t in args.targets)]
    todo = [(name, tests) for module, tests in targets
            for name in mutants(workdir, module, args.status) if name not in skip]

    shutil.copytree(ROOT / "tests", workdir / "mutants" / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import Cluster

    env = mutant_env(workdir)
    results: dict[str, str] = {}
    with Cluster() as cluster, ThreadPoolExecutor(args.jobs) as pool:
        env["WQSCAN_TEST_PG"] = cluster.url
        for _, tests in targets:  # a failure without a mutant would kill every mutant
            if (clean := check(workdir, env, "none", tests)) != "S":
                print(f"the tests fail without a mutant ({clean}): {' '.join(tests)}; "
                      f"are {workdir / 'mutants'}'s sources those the tests expect?")
                return 1
        for (name, _), result in zip(todo, pool.map(lambda t: check(workdir, env, *t), todo)):
            results[name] = result
            print(name, result, flush=True)
    (workdir / "targeted.json").write_text(json.dumps(results, indent=1))
    tally = {r: list(results.values()).count(r) for r in sorted(set(results.values()))}
    print(f"{len(results)} mutants: {tally}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
