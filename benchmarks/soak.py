#!/usr/bin/env python3
"""Soak: for a bounded time a mutator changes a tree at random while `wqscan run` and a
loop of `wqscan reconcile` scan it and three consumer processes drain the queue. Then
the mutator stops, a final reconcile runs, the consumers drain what is left, and the
consumers' combined view (their log of applied operations, replayed in order) must equal
the tree, with no row applied twice and every file's operations in a valid order.

usage: soak.py [--seconds 120] [--files 400] [--consumers 3] [--work DIR] [--seed S]
Exit 0 and a report of the counts when it holds; exit 1 naming the first mismatch.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

# The consumer process and the replay of its log are the tests' own (tests/consumer_log.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import consumer_log  # noqa: E402
from helpers.cli import wqscan  # noqa: E402

RECONCILER = r"""
import os, subprocess, sys
db, stop = sys.argv[1:]
n = 0
while not os.path.exists(stop):
    r = subprocess.run([sys.executable, "-m", "wqscan", "--db", db, "-q", "reconcile"],
                       capture_output=True, text=True)
    if r.returncode not in (0, 75):  # 75: `run` holds the watch just now
        sys.exit(f"reconcile exited {r.returncode}: {r.stderr}")
    n += r.returncode == 0
print(n)
"""


def mutate(root: str, rng: random.Random, until: float, counts: Counter) -> None:
    """Change the tree at random until the deadline: writes in place and by rename,
    appends, deletes, renames, new and removed directories."""
    while time.monotonic() < until:
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        dirs = [d for d, _, _ in os.walk(root)]
        action = rng.choices(("write", "append", "replace", "delete", "rename", "mkdir",
                              "rmtree"), (6, 4, 4, 4, 4, 2, 1))[0]
        try:
            if action in ("write", "append", "replace") or not files:
                path = rng.choice(files) if files and rng.random() < 0.7 else \
                    os.path.join(rng.choice(dirs), f"n{rng.randrange(10**6)}.txt")
                data = os.urandom(rng.randrange(1, 20000))
                if action == "replace":
                    tmp = path + ".tmp~"  # ignored by the default list
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                else:
                    with open(path, "ab" if action == "append" else "wb") as f:
                        f.write(data)
            elif action == "delete":
                os.unlink(rng.choice(files))
            elif action == "rename":
                src = rng.choice(files)
                os.rename(src, os.path.join(rng.choice(dirs), f"m{rng.randrange(10**6)}.txt"))
            elif action == "mkdir":
                d = os.path.join(rng.choice(dirs), f"d{rng.randrange(10**6)}")
                os.makedirs(d, exist_ok=True)
                for i in range(rng.randrange(1, 8)):
                    with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
                        f.write(os.urandom(rng.randrange(1, 5000)))
            elif action == "rmtree" and len(dirs) > 1:
                shutil.rmtree(rng.choice(dirs[1:]))
            counts[action] += 1
        except FileNotFoundError:
            counts["raced"] += 1  # another step removed it meanwhile
        time.sleep(rng.random() * 0.01)


def check(root: str, log: str) -> tuple[Counter, list[str]]:
    """Replay the consumers' log; returns the counts of applied operations and problems."""
    view, problems, lines = consumer_log.replay(log)
    ops = Counter(line["op"] for line in lines if "op" in line)
    tree = consumer_log.tree_hashes(root)
    for p in sorted(set(view) | set(tree)):
        if view.get(p) != tree.get(p):
            problems.append(f"{p}: consumers hold {view.get(p)}, tree has {tree.get(p)}")
    return ops, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", help="directory for the tree, database and logs "
                    "(default: a new temporary one, removed on success)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="wqscan-soak-")
    root, db = os.path.join(work, "tree"), os.path.join(work, "wq.db")
    log, stop = os.path.join(work, "applied.jsonl"), os.path.join(work, "stop")
    rng = random.Random(args.seed)
    for i in range(args.files):
        d = os.path.join(root, f"d{i % 20}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
            f.write(os.urandom(rng.randrange(1, 20000)))
    r = wqscan(db, "-q", "add", root, "--collection", "soak", "--id", "soak", "--settle", "0",
               "--interval", "1", timeout=600)
    if r.returncode:
        sys.exit(r.stderr)
    py = sys.executable
    consumer = consumer_log.command(db, log, stop, "--batch", "10", "--lease", "60",
                                    "--idle", "0.05")
    consumers = [subprocess.Popen(consumer) for _ in range(args.consumers)]
    runner = subprocess.Popen([py, "-m", "wqscan", "--db", db, "-q", "run"])
    loop = subprocess.Popen([py, "-c", RECONCILER, db, stop + ".loop"], stdout=subprocess.PIPE,
                            text=True)
    mutations: Counter = Counter()
    mutate(root, rng, time.monotonic() + args.seconds, mutations)

    open(stop + ".loop", "w").close()
    runner.send_signal(signal.SIGTERM)
    loop_scans = int(loop.communicate(timeout=600)[0] or 0)
    if runner.wait(timeout=60) != 0 or loop.returncode != 0:
        print(f"run exited {runner.returncode}, the reconcile loop {loop.returncode}")
        return 1
    r = wqscan(db, "-q", "reconcile", timeout=600)
    if r.returncode:
        print(f"final reconcile exited {r.returncode}: {r.stderr}")
        return 1
    open(stop, "w").close()
    for c in consumers:
        if c.wait(timeout=600) != 0:
            print(f"a consumer exited {c.returncode}")
            return 1
    status = json.loads(wqscan(db, "-q", "status", "--json", timeout=600).stdout)
    counters = status["watches"][0]["counters"]
    left = json.loads(wqscan(db, "-q", "queue", "stats", "--json", timeout=600).stdout)["total"]
    ops, problems = check(root, log)
    print(f"soak {args.seconds:g} s: mutations {dict(mutations)}")
    print(f"scans: {counters['scans_ok']} ok ({loop_scans} by the reconcile loop, the rest "
          f"by run), {counters['scans_failed']} failed; operations applied {dict(ops)}; "
          f"rows left {left}")
    if left:
        problems.append(f"{left} rows left in the queue")
    for p in problems[:20]:
        print("PROBLEM:", p)
    if problems:
        print(f"{len(problems)} problems; work dir kept: {work}")
        return 1
    print("consumers' view equals the tree")
    if not args.work:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
