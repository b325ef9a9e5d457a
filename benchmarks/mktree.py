#!/usr/bin/env python3
"""Deterministic tree for benchmarks: N files of 200 B..64 KiB in directories of ~20 entries.

usage: mktree.py DIR N [--seed S] [--max-size B]   (does nothing if DIR holds this tree)
"""
from __future__ import annotations

import argparse
import os
import random

T0 = 1_700_000_000 * 10**9  # fixed mtimes, far enough in the past for any settle time


def build(root: str, n: int, seed: int = 1, max_size: int = 65536) -> None:
    """Write the tree; files get fixed mtimes so that two builds are identical."""
    marker = os.path.join(root, ".mktree")
    want = f"{n} {seed} {max_size}\n"
    if os.path.exists(marker) and open(marker).read() == want:
        return
    rng = random.Random(seed)
    dirs = [root]
    made = 0
    while made < n:
        parent = dirs[rng.randrange(len(dirs))]
        d = os.path.join(parent, f"d{len(dirs):05d}")
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
        for _ in range(min(16, n - made)):
            size = int(min(max_size, max(min(200, max_size), rng.lognormvariate(8.3, 1.0))))
            path = os.path.join(d, f"f{made:07d}.txt")
            with open(path, "wb") as f:
                f.write(rng.randbytes(size))
            os.utime(path, ns=(T0 + made, T0 + made))
            made += 1
    with open(marker, "w") as f:
        f.write(want)
    os.utime(marker, ns=(T0, T0))  # old like every file, so that no entry is racy


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-size", type=int, default=65536)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    build(a.dir, a.n, a.seed, a.max_size)
