#!/usr/bin/env python3
"""PostgreSQL against SQLite in one run, printed as ratios PostgreSQL / SQLite beside the
absolute numbers (for times, above 1 means PostgreSQL is slower; for rows/s, faster).

usage: pg_compare.py [N] [--runs R] [--first-runs F] [--claim-rows M] [--batch B]
                     [--consumers K ...] [--claim-runs C] [--pg-url URL] [--skip PART]

  scans   `wqscan reconcile` of the corpus /tmp/wqc-N (default N=100000;
          ../shared/bench/mkcorpus.py, seed 1, cached with compare.sh's stamp; else
          mktree.py): the first scan after `wqscan add` (a fresh SQLite file / PostgreSQL
          schema each run, median of F=3), the no-change rescan and, for scale, `reconcile`
          of a database without watches (each median of R=5); whole processes, timed after
          one warm-up run each, the engines taking turns; and the first scan less that
          fixed cost (the write path without start-up); the first scan's CPU, wqscan's
          and, on the throwaway cluster, the server's (/proc).
  claims  M=20000 pending rows written through the store API into a fresh database, then
          drained by K=4 processes each looping QueueClient.claim(B=50) and one
          complete(ids) of the batch until no row is pending; and, in the same run on the
          same table, by the bare floor (pg_claims.py: one UPDATE .. RETURNING claim, one
          DELETE of the ids): rows/s of each from the moment all K are connected to the
          end of the last (median of C=3), their ratio, with the consumers' CPU and, on
          the throwaway cluster, the server's (/proc) per 1,000 rows.
  trips   a first scan into PostgreSQL run in this process with libpq's trace (PQtrace)
          on the store's connection: round trips, i.e. frontend Sync and simple Query
          messages, after each of which the client waits for the server, per 1,000 queued
          files and by the statement that opened each; SQLite's transactions beside them
          (apsw's exec tracer); and the round trips per row of one traced consumer.
          Counted from the wire rather than with pg_stat_statements, which counts
          statements, not waits: a pipelined executemany is one round trip of many
          statements, and psycopg preparing a statement is a round trip of none.

PostgreSQL is the throwaway cluster of tests/pg_cluster.py (fsync and synchronous_commit
off; SQLite's WAL at synchronous=normal does not sync per commit either), or --pg-url
(schemas wqbench_* are made there and dropped). Run it with the interpreter wqscan is
installed in. Everything it makes is removed at the end, also on an error or SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from pg_claims import bench_claims, prefill, print_claims, server_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED", os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # pg_cluster.Cluster

ENGINES = ("sqlite", "postgresql")
ADD = ["--collection", "bench", "--id", "bench", "--settle", "0"]

class Db(NamedTuple):
    """One database under test: the global options naming it, its --db and schema."""

    engine: str
    argv: list[str]
    db: str
    schema: str


# -- setting up ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of wqscan processes: bytecode cached as installed (compare.sh)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wqscan_command() -> list[str]:
    """The wqscan program: $WQSCAN, else the script beside this interpreter, else PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "wqscan")
    found = os.environ.get("WQSCAN") or (beside if os.access(beside, os.X_OK)
                                         else shutil.which("wqscan"))
    if not found:
        raise SystemExit("pg_compare.py: no wqscan program (set WQSCAN or install wqscan)")
    return [found]


def compile_wqscan() -> None:
    """Compile wqscan's modules once, so that no timed run pays for it (as compare.sh)."""
    import wqscan

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(wqscan.__file__)], env=child_env(), check=True,
                   stdout=subprocess.DEVNULL)


def read(path: str) -> str:
    """A small file's text ('' when it is not there)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def corpus(n: int) -> str:
    """The tree /tmp/wqc-N, made as compare.sh makes it and kept for later runs."""
    tree = f"/tmp/wqc-{n}"
    generator = os.path.join(SHARED, "mkcorpus.py")
    if os.path.exists(generator):
        stamp = f"{tree}.stamp"
        if read(stamp).strip() != f"{n} 1":
            subprocess.run(["python3", generator, tree, str(n), "--seed", "1", "--force"],
                           check=True, stdout=subprocess.DEVNULL)
            with open(stamp, "w") as f:
                f.write(f"{n} 1\n")
    else:
        subprocess.run(["python3", os.path.join(HERE, "mktree.py"), tree, str(n)], check=True)
    return tree


class Databases:
    """Fresh databases of either engine, all removed by `cleanup`: SQLite files in a
    temporary directory, PostgreSQL schemas on one server."""

    def __init__(self, work: str, pg_url: str, data_dir: str | None = None) -> None:
        import psycopg

        self.work, self.pg_url, self.data_dir = work, pg_url, data_dir
        self.admin = psycopg.connect(pg_url, autocommit=True)
        self.schemas: list[str] = []
        self.count = 0

    def fresh(self, engine: str, tag: str) -> Db:
        """A database no one has written yet, named after `tag`."""
        self.count += 1
        name = f"wqbench_{re.sub(r'[^a-z0-9_]', '_', tag.lower())}_{self.count}"
        if engine == "sqlite":
            path = os.path.join(self.work, f"{name}.db")
            return Db(engine, ["--db", path], path, "wqscan")
        self.drop_schema(name)
        self.schemas.append(name)
        return Db(engine, ["--db", self.pg_url, "--pg-schema", name], self.pg_url, name)

    def drop(self, db: Db) -> None:
        """Remove a database made by `fresh`."""
        if db.engine == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db.db + suffix):
                    os.remove(db.db + suffix)
        else:
            self.drop_schema(db.schema)
            self.schemas.remove(db.schema)

    def drop_schema(self, name: str) -> None:
        self.admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def cleanup(self) -> None:
        """Drop every schema still there and close the admin connection."""
        try:
            for name in self.schemas:
                self.drop_schema(name)
        finally:
            self.admin.close()


# -- timing -------------------------------------------------------------------------------


def run(argv: list[str]) -> None:
    """Run a command to its end; its output is discarded, a failure stops the benchmark."""
    done = subprocess.run(argv, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pg_compare.py: {' '.join(argv)} exited {done.returncode}: "
                         f"{done.stderr.strip()[-500:]}")


def timed(argv: list[str]) -> float:
    """Seconds one run of a command takes, as a whole process."""
    start = time.perf_counter()
    run(argv)
    return time.perf_counter() - start


def medians(runs: int, bodies: dict[str, Callable[[], float]], warmup: bool = True
            ) -> dict[str, float]:
    """The median of `runs` measurements of each body, after one warm-up of each; the
    bodies take turns, so that load coming and going falls on both alike."""
    times: dict[str, list[float]] = {name: [] for name in bodies}
    for i in range(runs + warmup):
        for name, body in bodies.items():
            t = body()
            if i or not warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


# -- 1. scans -----------------------------------------------------------------------------


def first_scan(dbs: Databases, wq: list[str], engine: str, tree: str,
               cpu: dict[str, list[tuple[float, float | None]]]) -> float:
    """Seconds of `reconcile` into a new database after `add` (not timed); its CPU
    seconds, wqscan's and the server's (0 for SQLite, None off the throwaway cluster),
    appended to cpu[engine]."""
    import resource

    db = dbs.fresh(engine, "first")
    try:
        run(wq + db.argv + ["add", tree, *ADD])
        data_dir = dbs.data_dir if engine == "postgresql" else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu(data_dir)
        seconds = timed(wq + db.argv + ["reconcile", "-q"])
        after = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu(data_dir)
        client = sum(getattr(after[0], f) - getattr(before[0], f)
                     for f in ("ru_utime", "ru_stime"))
        server: float | None = 0.0
        if engine != "sqlite":
            server = None if None in (before[1], after[1]) else after[1] - before[1]
        cpu[engine].append((client, server))
        return seconds
    finally:
        dbs.drop(db)


def bench_scans(dbs: Databases, wq: list[str], tree: str, runs: int, first_runs: int
                ) -> dict[str, dict[str, Any]]:
    """Median first scan (and its CPU: wqscan's, the server's), no-change rescan and fixed
    cost of each engine, in seconds."""
    cpu: dict[str, list[tuple[float, float | None]]] = {e: [] for e in ENGINES}
    first = medians(first_runs, {e: lambda e=e: first_scan(dbs, wq, e, tree, cpu)
                                 for e in ENGINES})
    steady = {}
    for engine in ENGINES:  # filled, then settled (racy entries), as compare.sh does
        steady[engine] = db = dbs.fresh(engine, "nochange")
        run(wq + db.argv + ["add", tree, *ADD])
        run(wq + db.argv + ["reconcile", "-q"])
        run(wq + db.argv + ["reconcile", "-q"])
    nochange = medians(runs, {e: lambda e=e: timed(wq + steady[e].argv + ["reconcile", "-q"])
                              for e in ENGINES})
    empty = {}
    for engine in ENGINES:  # what every run pays: start, import, connect, find no watch
        empty[engine] = db = dbs.fresh(engine, "fixed")
        run(wq + db.argv + ["init", "-q"])
    fixed = medians(runs, {e: lambda e=e: timed(wq + empty[e].argv + ["reconcile", "-q"])
                           for e in ENGINES})
    for db in (*steady.values(), *empty.values()):
        dbs.drop(db)
    timed_cpu = {e: list(zip(*cpu[e][1:])) for e in ENGINES}  # the warm-up left out
    return {"first": first, "nochange": nochange, "fixed": fixed,
            "first_cpu": {e: statistics.median(c[0]) for e, c in timed_cpu.items()},
            "first_server_cpu": {e: None if None in c[1] else statistics.median(c[1])
                                 for e, c in timed_cpu.items()}}


# -- 3. round trips -----------------------------------------------------------------------


class Trips(NamedTuple):
    """What one traced first scan sent: round trips by the statement that opened each,
    transactions, statements, and the files it queued."""

    by_source: Counter[str]
    transactions: int
    statements: int
    queued: int


def label(sql: str) -> str:
    """A statement in a few words: what a round trip is attributed to."""
    words = re.sub(r"\s+", " ", sql).strip().split(" ")
    return " ".join(words[:4])[:60]


def parse_trace(lines: Iterator[str]) -> tuple[Counter[str], int, int]:
    """Round trips by the statement that opened each, COMMITs and statements executed,
    in a libpq trace."""
    # A round trip is a frontend Sync (the end of one extended-protocol exchange, or of a
    # pipeline) or a simple Query: after each the client waits for ReadyForQuery. psycopg
    # sends BEGIN and COMMIT as Parse/Bind/Execute too once it has prepared them.
    prepared: dict[str, str] = {}  # statement name ("" the unnamed one) -> its SQL
    trips: Counter[str] = Counter()
    opened = ""  # the first statement bound or queried since the last Sync
    parsed = ""  # the first statement parsed since then (alone: psycopg preparing it)
    bound = ""  # the statement of the portal Execute runs
    commits = statements = 0
    for line in lines:
        if not line.startswith("F\t"):
            continue
        _, _, kind, *rest = line.rstrip("\n").split("\t", 3)
        body = rest[0].strip() if rest else ""
        if kind == "Query":
            sql = body[1:-1]
            trips[label(sql)] += 1
            statements += 1
            commits += sql.lstrip().upper().startswith("COMMIT")
        elif kind == "Parse":
            m = re.match(r'"([^"]*)" "(.*)" \d+', body)
            if m:
                prepared[m.group(1)] = m.group(2)
                parsed = parsed or label(m.group(2))
        elif kind == "Bind":
            m = re.match(r'"[^"]*" "([^"]*)"', body)
            bound = prepared.get(m.group(1), "?") if m else "?"
            opened = opened or label(bound)
        elif kind == "Execute":
            statements += 1
            commits += bound.lstrip().upper().startswith("COMMIT")
        elif kind == "Sync":
            trips[opened or (f"(prepare) {parsed}" if parsed else "(empty Sync)")] += 1
            opened = parsed = ""
    return trips, commits, statements


@contextmanager
def traced(pgconn: Any, path: str) -> Iterator[None]:
    """libpq's trace of one connection written to `path` for the length of the block."""
    from psycopg import pq

    pgconn.trace(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
    try:
        yield
    finally:
        pgconn.untrace()  # flushes and closes the file


def read_trace(path: str) -> tuple[Counter[str], int, int]:
    """parse_trace of a trace file, which is then removed (it holds every row sent)."""
    try:
        with open(path, errors="replace") as f:
            return parse_trace(f)
    finally:
        os.remove(path)


def traced_first_scan(dbs: Databases, wq: list[str], tree: str, work: str) -> Trips:
    """A first scan into a new PostgreSQL schema, run here, with the store's connection
    traced."""
    from wqscan.reconcile import reconcile
    from wqscan.store import Store, Target

    db = dbs.fresh("postgresql", "trips")
    path = os.path.join(work, "scan.trace")
    try:
        run(wq + db.argv + ["add", tree, *ADD])
        with Store.open(Target(db.db, db.schema), create=False) as store, \
                traced(store.conn.raw.pgconn, path):
            reports = reconcile(store)
        trips, commits, statements = read_trace(path)
        bad = [r.reason for r in reports if not r.ok]
        if bad:
            raise SystemExit(f"pg_compare.py: traced scan failed: {bad}")
        return Trips(trips, commits, statements, sum(r.written for r in reports))
    finally:
        dbs.drop(db)


def traced_claims(dbs: Databases, batch: int, rows: int, work: str) -> Trips:
    """One consumer, run here, claiming `rows` PostgreSQL rows `batch` at a time and
    acknowledging each batch at once, with its connection traced."""
    from wqscan import QueueClient
    from wqscan.store import Target

    db = dbs.fresh("postgresql", "claimtrips")
    path = os.path.join(work, "claims.trace")
    try:
        prefill(db, rows)
        done = 0
        with QueueClient(Target(db.db, db.schema)) as q, traced(q.store.conn.raw.pgconn, path):
            while got := q.claim(batch):
                q.complete([r.queue_id for r in got])
                done += len(got)
        trips, commits, statements = read_trace(path)
        return Trips(trips, commits, statements, done)
    finally:
        dbs.drop(db)


def sqlite_transactions(dbs: Databases, wq: list[str], tree: str) -> tuple[int, int]:
    """COMMITs of a first scan into a new SQLite file (apsw's exec tracer), and the files
    it queued."""
    from wqscan.reconcile import reconcile
    from wqscan.store import Store, Target

    db = dbs.fresh("sqlite", "trips")
    commits = 0

    def count(cursor: object, sql: str, bindings: object) -> bool:
        nonlocal commits
        commits += sql.lstrip().upper().startswith("COMMIT")
        return True

    try:
        run(wq + db.argv + ["add", tree, *ADD])
        with Store.open(Target(db.db), create=False) as store:
            store.conn.exec_trace = count
            reports = reconcile(store)
            store.conn.exec_trace = None
        return commits, sum(r.written for r in reports)
    finally:
        dbs.drop(db)


# -- report -------------------------------------------------------------------------------


def per_k(count: int, queued: int) -> str:
    """A count per 1,000 queued files."""
    return f"{count * 1000 / queued:.2f}" if queued else "-"


def print_scans(n: int, scans: dict[str, dict[str, Any]]) -> None:
    """The scans' table, in compare.sh's Markdown."""
    print(f"\n| wqscan reconcile, {n} files | SQLite ms | PostgreSQL ms "
          "| PostgreSQL / SQLite |")
    print("|---|--:|--:|--:|")
    for key, name in (("first", "first scan (empty database)"),
                      ("nochange", "no-change rescan"),
                      ("fixed", "fixed cost: a database without watches")):
        s, p = scans[key]["sqlite"], scans[key]["postgresql"]
        print(f"| {name} | {s * 1000:.0f} | {p * 1000:.0f} | {p / s:.2f} |")
    # the write path alone: what a first scan takes beyond starting, connecting and finding
    # no watch (the fixed cost, which psycopg's import dominates)
    s, p = (scans["first"][e] - scans["fixed"][e] for e in ENGINES)
    print(f"| first scan less the fixed cost | {s * 1000:.0f} | {p * 1000:.0f} | {p / s:.2f} |")
    s, p = (scans["first_cpu"][e] for e in ENGINES)
    print(f"| first scan: wqscan's CPU | {s * 1000:.0f} | {p * 1000:.0f} | {p / s:.2f} |")
    server = scans["first_server_cpu"]["postgresql"]
    if server is not None:  # the server's CPU, on the throwaway cluster only
        print(f"| first scan: the server's CPU | - | {server * 1000:.0f} | |")


def print_trips(n: int, scan: Trips, sqlite_tx: tuple[int, int], claims: Trips,
                batch: int) -> None:
    """The round-trip tables: the first scan's, by source, and one consumer's per row."""
    q = scan.queued
    total = sum(scan.by_source.values())
    print(f"\n| first scan, {n} files, {q} queued | count | per 1,000 queued files |")
    print("|---|--:|--:|")
    print(f"| PostgreSQL round trips (Sync + simple Query) | {total} | {per_k(total, q)} |")
    print(f"| PostgreSQL transactions (COMMIT) | {scan.transactions} | "
          f"{per_k(scan.transactions, q)} |")
    print(f"| PostgreSQL statements executed | {scan.statements} | "
          f"{per_k(scan.statements, q)} |")
    print(f"| SQLite transactions (COMMIT), {sqlite_tx[1]} queued | {sqlite_tx[0]} | "
          f"{per_k(*sqlite_tx)} |")
    print("\n| PostgreSQL round trips of the first scan, opened by | count | "
          "per 1,000 queued files |")
    print("|---|--:|--:|")
    for source, count in scan.by_source.most_common():
        print(f"| `{source}` | {count} | {per_k(count, q)} |")
    rows = claims.queued
    total = sum(claims.by_source.values())
    print(f"\n| one consumer, claim({batch}) + batch complete, {rows} rows | PostgreSQL round "
          "trips | per row |")
    print("|---|--:|--:|")
    print(f"| all | {total} | {total / rows:.2f} |")
    for source, count in claims.by_source.most_common():
        print(f"| `{source}` | {count} | {count / rows:.2f} |")


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=100000, help="files in the corpus")
    ap.add_argument("--runs", type=int, default=5, help="timed no-change rescans")
    ap.add_argument("--first-runs", type=int, default=3, help="timed first scans")
    ap.add_argument("--claim-rows", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=50, help="rows per claim")
    ap.add_argument("--consumers", type=int, nargs="+", default=[4])
    ap.add_argument("--claim-runs", type=int, default=3, help="drains per engine and K")
    ap.add_argument("--pg-url", help="an existing server instead of a throwaway cluster")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["scans", "claims", "trips"])
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup runs on kill too
    wq = wqscan_command()
    compile_wqscan()
    tree = corpus(args.n) if {"scans", "trips"} - set(args.skip) else ""
    scans = claims = trips = None
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="wqscan-pgcmp-"))
        url, data_dir = args.pg_url, None
        if url is None:
            from pg_cluster import Cluster

            cluster = stack.enter_context(Cluster())
            url, data_dir = cluster.url, str(cluster.data)
        dbs = Databases(work, url, data_dir)
        stack.callback(dbs.cleanup)
        version = dbs.admin.execute("SHOW server_version").fetchone()[0]
        print(f"== PostgreSQL {version} at {url}; SQLite files in {work} ==", flush=True)
        if "scans" not in args.skip:
            print(f"== first scan and no-change rescan, {args.n} files ==", flush=True)
            scans = bench_scans(dbs, wq, tree, args.runs, args.first_runs)
        if "claims" not in args.skip:
            print(f"== claim({args.batch}) + batch complete, {args.claim_rows} rows, "
                  f"consumers {' '.join(map(str, args.consumers))}, QueueClient and bare "
                  "floor ==", flush=True)
            claims = bench_claims(dbs, ENGINES, args.claim_rows, args.batch, args.consumers,
                                  args.claim_runs)
        if "trips" not in args.skip:
            print(f"== round trips of a first scan, {args.n} files, and of claims ==",
                  flush=True)
            trips = (traced_first_scan(dbs, wq, tree, work),
                     sqlite_transactions(dbs, wq, tree),
                     traced_claims(dbs, args.batch, min(args.claim_rows, 2000), work))
    if scans:
        print_scans(args.n, scans)
    if claims:
        print_claims(claims, args.batch, args.claim_rows)
    if trips:
        print_trips(args.n, *trips, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
