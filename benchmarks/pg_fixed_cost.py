#!/usr/bin/env python3
"""The fixed cost of a PostgreSQL store against the SQLite file, in one run: where the
milliseconds of `wqscan reconcile` on a database without watches go.

usage: pg_fixed_cost.py [--runs R] [--pg-url URL]

Whole processes, the commands taking turns (R=21 rounds, median of each), after one
warm-up round and with wqscan's modules compiled:
  pass        `python -c pass` of the same interpreter (the floor of any process)
  psycopg     `python -c "import psycopg"` (psycopg's own import: not wqscan's to cut)
  sqlite      `wqscan reconcile -q` on an SQLite file without watches
  postgresql  `wqscan reconcile -q` on a PostgreSQL schema without watches
It prints the medians, PostgreSQL's cost above SQLite's, and that cost less psycopg's
import (what remains is wqscan's: connecting, its statements), then the statements
one such reconcile sends (from the server's log: each is a round trip).

PostgreSQL is the throwaway cluster of tests/pg_cluster.py (over its Unix socket), or
--pg-url (a schema wqbench_fixed is made there and dropped). Run it with the interpreter
wqscan is installed in.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # pg_cluster.Cluster
SCHEMA = "wqbench_fixed"


def child_env() -> dict[str, str]:
    """The environment of the timed processes: bytecode cached as installed."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "WQSCAN_DB", "WQSCAN_CONFIG")}


def timed(argv: list[str]) -> float:
    """Milliseconds of one process, which must succeed."""
    t0 = time.perf_counter()
    subprocess.run(argv, env=child_env(), check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def statements(cluster, argv: list[str]) -> list[str]:
    """The statements one run of `argv` sends, read from the throwaway server's log."""
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        admin.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the reload reaches the server's processes
    before = len(cluster.log.read_text(errors="replace").splitlines())
    subprocess.run(argv, env=child_env(), check=True, stdout=subprocess.DEVNULL)
    time.sleep(0.3)  # the log is written
    lines = cluster.log.read_text(errors="replace").splitlines()[before:]
    return [line.split("LOG:  ", 1)[1] for line in lines
            if "LOG:  statement:" in line or "LOG:  execute" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--pg-url")
    args = parser.parse_args()
    import wqscan

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(wqscan.__file__)], env=child_env(), check=True,
                   stdout=subprocess.DEVNULL)
    with ExitStack() as stack:
        cluster = None
        url = args.pg_url
        if url is None:
            from pg_cluster import Cluster

            cluster = stack.enter_context(Cluster())
            url = cluster.url
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="wqbench-fixed-"))
        wq = [sys.executable, "-m", "wqscan"]
        dbs = {"sqlite": ["--db", os.path.join(tmp, "wq.db")],
               "postgresql": ["--db", url, "--pg-schema", SCHEMA]}
        for argv in dbs.values():
            subprocess.run(wq + argv + ["-q", "init"], env=child_env(), check=True)
        stack.callback(_drop_schema, url)
        commands = {"pass": [sys.executable, "-c", "pass"],
                    "psycopg": [sys.executable, "-c", "import psycopg"],
                    **{e: wq + argv + ["reconcile", "-q"] for e, argv in dbs.items()}}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.runs + 1):
            for name, argv in commands.items():
                ms = timed(argv)
                if round_:  # the first round warms the caches
                    times[name].append(ms)
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"medians of {args.runs} interleaved runs (ms):")
        for name, ms in med.items():
            print(f"  {name:11} {ms:7.1f}")
        above = med["postgresql"] - med["sqlite"]
        psycopg_import = med["psycopg"] - med["pass"]
        print(f"PostgreSQL above SQLite: {above:+.1f} ms (target at most +60 ms); "
              f"ratio {med['postgresql'] / med['sqlite']:.2f}x")
        print(f"  psycopg's import:      {psycopg_import:+.1f} ms")
        print(f"  the rest (wqscan's):   {above - psycopg_import:+.1f} ms")
        if cluster is not None:
            sent = statements(cluster, commands["postgresql"])
            print(f"statements of one reconcile on PostgreSQL ({len(sent)}):")
            for s in sent:
                print(f"  {s[:110]}")


def _drop_schema(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


if __name__ == "__main__":
    main()
