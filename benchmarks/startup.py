#!/usr/bin/env python3
"""Start-up of `wqscan`: what a run costs before it does any work, and what it imports.

usage: startup.py [--runs R] [--against PYTHON]

Whole processes taking turns (R=31 rounds after a warm-up round, medians), with wqscan's
modules compiled:
  pass           `python -c pass` of the same interpreter (the floor of any process)
  no watch       `wqscan reconcile -q` on an SQLite file without watches
  --version      `wqscan --version`
With --against, the same two commands of another environment's wqscan (a previous
release, say) take turns with these, and the ratios between them are printed.

Then the import budget: the modules `reconcile` imports beyond `python -c pass`, on a
database without watches and on one whose watch is an empty directory (all a scan
needs), by self time (`python -X importtime`), with the modules a run without watches
must not load (the scanner and its rules, the queue writes, git, URL parsing:
`NOT_WITHOUT_WATCHES` of tests/test_startup.py).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from pg_fixed_cost import child_env  # also puts tests/ on the path
from test_startup import NOT_WITHOUT_WATCHES

TARGET_MS = 15.0  # a run without watches, above `python -c pass`


def wqscan_of(python: str) -> list[str]:
    """The `wqscan` command of the environment `python` belongs to."""
    script = os.path.join(os.path.dirname(python), "wqscan")
    return [script] if os.path.exists(script) else [python, "-m", "wqscan"]


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=child_env(), check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (wall * 1000, (after.ru_utime - before.ru_utime
                          + after.ru_stime - before.ru_stime) * 1000)


def imports(argv: list[str]) -> dict[str, int]:
    """Self microseconds of each module `argv` (a Python command) imports."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=child_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            self_us, _, name = line[len("import time:"):].split("|")
            if self_us.strip().isdigit():
                out[name.strip()] = int(self_us)
    return out


def budget(label: str, argv: list[str], floor: dict[str, int], strict: bool) -> None:
    """Print what `argv` imports beyond the floor, by self time, and any module it must not
    load."""
    mods = {m: us for m, us in imports(argv).items() if m not in floor}
    groups: dict[str, int] = {}
    for m, us in mods.items():
        group = "wqscan" if m.startswith("wqscan") else \
            "stdlib" if m.split(".")[0] in sys.stdlib_module_names else "third-party"
        groups[group] = groups.get(group, 0) + us
    print(f"\n{label}: {len(mods)} modules beyond `python -c pass`, "
          f"{sum(mods.values()) / 1000:.1f} ms of self time under -X importtime ("
          + ", ".join(f"{g} {us / 1000:.1f}" for g, us in sorted(groups.items())) + ")")
    for m, us in sorted(mods.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {us / 1000:6.2f} ms  {m}")
    if strict:
        banned = sorted(m for m in mods if m.startswith(NOT_WITHOUT_WATCHES))
        print("  over budget: " + (", ".join(banned) if banned else "none of "
                                   + ", ".join(NOT_WITHOUT_WATCHES)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--against", help="the interpreter of another wqscan environment")
    args = parser.parse_args()
    import wqscan

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(wqscan.__file__)], env=child_env(), check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="wqbench-startup-") as tmp:
        empty, tree = os.path.join(tmp, "empty.db"), os.path.join(tmp, "tree")
        one = os.path.join(tmp, "one.db")
        os.mkdir(tree)
        wq = wqscan_of(sys.executable)
        subprocess.run(wq + ["--db", empty, "-q", "init"], env=child_env(), check=True)
        subprocess.run(wq + ["--db", one, "add", tree, "--collection", "c"],
                       env=child_env(), check=True, stdout=subprocess.DEVNULL)
        commands = {"pass": [sys.executable, "-c", "pass"],
                    "no watch": wq + ["--db", empty, "reconcile", "-q"],
                    "--version": wq + ["--db", empty, "--version"]}
        if args.against:
            other = wqscan_of(args.against)
            commands["no watch (against)"] = other + ["--db", empty, "reconcile", "-q"]
            commands["--version (against)"] = other + ["--db", empty, "--version"]
        wall: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.runs + 1):
            for name, argv in commands.items():
                w, c = timed(argv)
                if round_:  # the first round warms the caches
                    wall[name].append(w)
                    cpu[name].append(c)
        med = {name: statistics.median(v) for name, v in wall.items()}
        med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
        print(f"medians of {args.runs} interleaved runs: wall ms, CPU ms, wall above pass")
        for name in commands:
            print(f"  {name:22} {med[name]:7.1f} {med_cpu[name]:7.1f} "
                  f"{med[name] - med['pass']:+7.1f}")
        print(f"no watch above pass: {med['no watch'] - med['pass']:+.1f} ms "
              f"(target at most +{TARGET_MS:.0f} ms)")
        if args.against:
            for name in ("no watch", "--version"):
                ours = med[name] - med["pass"]
                theirs = med[f"{name} (against)"] - med["pass"]
                print(f"{name} above pass, this / against: {ours:.1f} / {theirs:.1f} ms = "
                      f"{ours / theirs:.2f}x")
        floor = imports([sys.executable, "-c", "pass"])
        runner = [sys.executable, "-m", "wqscan"]
        budget("reconcile, no watch", runner + ["--db", empty, "reconcile", "-q"], floor, True)
        budget("reconcile of one watch (an empty directory)",
               runner + ["--db", one, "reconcile", "-q"], floor, False)


if __name__ == "__main__":
    main()
