#!/usr/bin/env python3
"""Change a fixed share of a tree's files for the incremental benchmark.

usage: mutate.py DIR [PERCENT]   (default 1): rewrites PERCENT% of the files with new
content and only touches another PERCENT%; each call uses new contents and mtimes.
"""
from __future__ import annotations

import os
import sys


def main() -> None:
    root, percent = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if not f.startswith("."))
    counter = os.path.join(root, ".mutate-generation")
    gen = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    with open(counter, "w") as f:
        f.write(str(gen))
    step = max(1, int(100 / percent))
    ns = (1_700_000_000 + gen) * 10**9
    for i, path in enumerate(files[::step // 2 or 1]):
        if i % 2 == 0:
            with open(path, "ab") as f:
                f.write(b"generation %d\n" % gen)
        os.utime(path, ns=(ns, ns))


if __name__ == "__main__":
    main()
