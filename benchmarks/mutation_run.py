#!/usr/bin/env python3
"""Mutation testing of the modules that hold wqscan's rules, with the pure scanner (slow:
hours on two cores; kept out of CI). docs/mutation.md has the command and the last result.

usage: mutation_run.py [--workdir DIR] [MUTANT-GLOB ...]

Copies the files git tracks into DIR (default build/mutation; kept, so that a second run
resumes where the first stopped and retests only what changed), starts one throwaway
PostgreSQL server for the whole run, and runs `mutmut run` there, then `mutmut results`.
The `python -m wqscan` children the tests start import the mutants too, see which one is
active through the environment mutmut sets, and report the functions they call while
mutmut maps tests to functions (benchmarks/mutation_site/). Needs mutmut 3.8 or later
installed beside the test extras: `pip install -e '.[test]' 'mutmut>=3.8'`.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SITE = ROOT / "benchmarks" / "mutation_site"  # sitecustomize.py, mutation_hits.py


def tracked_files() -> list[str]:
    """The repository's files as git lists them: no build output, no compiled scanner."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def sync(workdir: Path) -> None:
    """Copies the tracked files that differ into `workdir`, leaving its mutants/ (mutmut's
    results so far) alone; files no longer tracked are removed."""
    wanted = set(tracked_files())
    for rel in wanted:
        src, dst = ROOT / rel, workdir / rel
        if not src.is_file():  # deleted in the work tree, not yet in the index
            continue
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    for path in workdir.rglob("*"):
        rel = path.relative_to(workdir).as_posix()
        if path.is_file() and not rel.startswith("mutants/") and rel not in wanted:
            path.unlink()


def mutant_env(workdir: Path) -> dict[str, str]:
    """This environment for tests of the mutants in `workdir`: the mutants first on the path
    (the children the tests start import them too), beside the mutation site."""
    env = dict(os.environ)
    env.pop("WQSCAN_NO_EXTENSIONS", None)  # no compiled scanner is copied: the pure one runs
    env["PYTHONPATH"] = os.pathsep.join([str(workdir / "mutants"), str(SITE)])
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("mutants", nargs="*", help="mutmut's names or globs (default: all)")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sync(workdir)

    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import Cluster

    env = mutant_env(workdir)
    env["PYTEST_PLUGINS"] = "mutation_hits"  # the children's calls count as the test's
    hits = workdir / "hits"
    shutil.rmtree(hits, ignore_errors=True)
    hits.mkdir()
    env["WQSCAN_MUTATION_HITS"] = str(hits)
    with Cluster() as cluster:
        env["WQSCAN_TEST_PG"] = cluster.url
        run = subprocess.run(["mutmut", "run", *args.mutants], cwd=workdir, env=env)
    subprocess.run(["mutmut", "results"], cwd=workdir, env=env)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
