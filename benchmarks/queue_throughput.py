#!/usr/bin/env python3
"""Claim+complete throughput of the queue with 1 and 4 consumer processes, against a bare
apsw reference doing the same transactions in the same run.

usage: queue_throughput.py [--rows N] [--batch B] [--consumers 1 4] [--repeat R]

A tree of N tiny files is scanned once into a template database; each measurement drains
a fresh copy of it. A wqscan consumer loops `QueueClient.claim(B)` then `complete()` per
row. The reference claims B rows with one UPDATE ... RETURNING in a BEGIN IMMEDIATE
transaction and deletes each row in its own transaction: SQLite's floor for this protocol.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mktree import build  # noqa: E402

WQSCAN = r"""
import sys
from wqscan import QueueClient
db, batch = sys.argv[1], int(sys.argv[2])
with QueueClient(db) as q:
    while rows := q.claim(batch):
        for r in rows:
            q.complete(r.queue_id)
"""

REFERENCE = r"""
import os, sys, apsw
db, batch = sys.argv[1], int(sys.argv[2])
conn = apsw.Connection(db)
conn.set_busy_timeout(10000)
conn.pragma("synchronous", "normal")  # as wqscan's connections: no fsync per commit in WAL
me = str(os.getpid())
while True:
    conn.execute("BEGIN IMMEDIATE")
    ids = [r[0] for r in conn.execute(
            "UPDATE ingestion_queue SET status = 'in_progress', lease_owner = ?, "
            "lease_expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+300 seconds') "
            "WHERE queue_id IN (SELECT queue_id FROM ingestion_queue WHERE status = 'pending' "
            "AND scheduled_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
            "ORDER BY priority DESC, scheduled_at, queued_timestamp LIMIT ?) "
            "RETURNING queue_id", (me, batch))]
    conn.execute("COMMIT")
    if not ids:
        break
    for q in ids:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM ingestion_queue WHERE queue_id = ? AND lease_owner = ?",
                     (q, me))
        conn.execute("COMMIT")
"""


def template(rows: int, work: str) -> str:
    """A database holding `rows` pending ingest rows (made once by a real scan)."""
    tree, db = os.path.join(work, f"tree-{rows}"), os.path.join(work, f"queue-{rows}.db")
    build(tree, rows, max_size=200)
    if not os.path.exists(db):
        wq = [sys.executable, "-m", "wqscan", "--db", db, "-q"]
        subprocess.run(wq + ["add", tree, "--collection", "bench", "--settle", "0"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(wq + ["reconcile"], check=True)
    return db


def drain(code: str, db: str, consumers: int, batch: int) -> float:
    """Seconds for `consumers` processes running `code` to empty the queue of `db`."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code, db, str(batch)])
             for _ in range(consumers)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a consumer exited {p.returncode}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--consumers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/tmp/wqscan-bench")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    db = template(args.rows, args.work)
    copy = os.path.join(args.work, "queue-run.db")
    print("| consumers | wqscan rows/s | reference rows/s | wqscan / reference time |")
    print("|--:|--:|--:|--:|")
    for k in args.consumers:
        times: dict[str, list[float]] = {"wqscan": [], "reference": []}
        for _ in range(args.repeat):
            for name, code in (("wqscan", WQSCAN), ("reference", REFERENCE)):
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(copy + suffix):
                        os.remove(copy + suffix)
                shutil.copyfile(db, copy)
                times[name].append(drain(code, copy, k, args.batch))
        wq, ref = statistics.median(times["wqscan"]), statistics.median(times["reference"])
        print(f"| {k} | {args.rows / wq:,.0f} | {args.rows / ref:,.0f} | {wq / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
