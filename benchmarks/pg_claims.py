"""The consumers' part of pg_compare.py: K processes draining M pending rows, each claiming
B rows and acknowledging them in one batch, with QueueClient and with a bare loop on the
same table in the same run (the floor), on SQLite and on PostgreSQL.

The bare loops are what the fastest queues do: one claim statement (`UPDATE .. RETURNING`
over `SELECT .. LIMIT B`, with `FOR UPDATE SKIP LOCKED` on PostgreSQL and inside `BEGIN
IMMEDIATE` on SQLite), then one `DELETE` of the claimed ids. They keep none of wqscan's
rules (one file with one consumer at a time, expired leases taken over): the ratio says
what those rules and the client's Python cost.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any, NamedTuple

KINDS = ("client", "bare")  # QueueClient, and the floor

CONSUMER = r"""
import resource, sys, time
kind, engine, db, schema, batch = sys.argv[1:5] + [int(sys.argv[5])]

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def client():
    from wqscan import QueueClient
    from wqscan.store import Target
    q = QueueClient(Target(db, schema))
    def step():
        rows = q.claim(batch)
        if rows:
            q.complete([r.queue_id for r in rows])
        return len(rows)
    return step, lambda: q.stats()["by_status"]["pending"]

CLAIM = ("UPDATE ingestion_queue SET status = 'in_progress', lease_owner = {m}, "
         "lease_expires_at = {m} WHERE queue_id IN (SELECT queue_id FROM ingestion_queue "
         "WHERE status = 'pending' AND scheduled_at <= {m} "
         "ORDER BY priority DESC, scheduled_at, queued_timestamp LIMIT {m}{lock}) RETURNING *")
FAR = "9999-12-31T00:00:00.000Z"

def bare_pg():
    import psycopg
    conn = psycopg.connect(db, autocommit=True)
    conn.execute("SELECT set_config('search_path', %s, false)", ('"' + schema + '"',))
    claim = CLAIM.format(m="%s", lock=" FOR UPDATE SKIP LOCKED")
    def step():
        rows = conn.execute(claim, ("bare", FAR, FAR, batch)).fetchall()
        if rows:
            conn.execute("DELETE FROM ingestion_queue WHERE queue_id = ANY(%s)",
                         ([r[0] for r in rows],))
        return len(rows)
    pending = "SELECT count(*) FROM ingestion_queue WHERE status = 'pending'"
    return step, lambda: conn.execute(pending).fetchone()[0]

def bare_sqlite():
    import apsw
    conn = apsw.Connection(db)
    conn.execute("PRAGMA busy_timeout = 5000")
    claim = CLAIM.format(m="?", lock="")
    def step():
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(claim, ("bare", FAR, FAR, batch)).fetchall()
        conn.execute("COMMIT")
        if rows:
            conn.execute("DELETE FROM ingestion_queue WHERE queue_id IN (%s)"
                         % ", ".join("?" * len(rows)), [r[0] for r in rows])
        return len(rows)
    pending = "SELECT count(*) FROM ingestion_queue WHERE status = 'pending'"
    return step, lambda: conn.execute(pending).fetchone()[0]

step, pending = client() if kind == "client" else \
    bare_pg() if engine == "postgresql" else bare_sqlite()
print("ready", flush=True)
sys.stdin.readline()
cpu0, done = cpu(), 0
while True:
    n = step()
    if not n and not pending():  # none claimable: finished, unless others hold the rest
        break
    done += n
print(done, time.monotonic(), cpu() - cpu0, flush=True)
"""


class Drain(NamedTuple):
    """One drain of the queue: seconds, and CPU seconds of the consumers and of the server
    (None when the server is not the throwaway cluster of this run)."""

    seconds: float
    client_cpu: float
    server_cpu: float | None


def child_env() -> dict[str, str]:
    """The environment of the consumers: bytecode cached as installed."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def prefill(db: Any, rows: int) -> None:
    """Write `rows` pending ingest rows, shaped as a scan writes them, in one transaction."""
    from wqscan.clock import now_iso
    from wqscan.model import DEFAULT_PRIORITY
    from wqscan.queue.writes import enqueue, new_queue_ids
    from wqscan.store import Store, Target
    from wqscan.store.rows import Row

    now = now_iso()
    ids = new_queue_ids(rows)
    batch = []
    for i, queue_id in enumerate(ids):
        rel = f"d{i // 16:05d}/f{i:07d}.txt"
        meta = (f'{{"watch_id":"bench","relative_path":"{rel}","size":4096,"mtime_ns":'
                f'{1_700_000_000_000_000_000 + i},'
                f'"content_hash":"{queue_id.replace("-", "")}",'
                f'"detected_at":"{now}","source":"wqscan"}}')
        batch.append(Row(queue_id, f"/bench/claims/{rel}", "bench", "bench", "main", "ingest",
                         DEFAULT_PRIORITY, "bench", meta, now, now))
    with Store.open(Target(db.db, db.schema)) as store, store.write():
        written = enqueue(store, batch).changed
    if written != rows:
        raise SystemExit(f"pg_claims.py: prefill wrote {written} of {rows} rows")


def server_cpu(data_dir: str | None) -> float | None:
    """CPU seconds the PostgreSQL cluster serving `data_dir` has used so far: the
    postmaster with its reaped children, and its live children (/proc)."""
    if data_dir is None:
        return None
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError):
        return None
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(pid) == postmaster:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def drain(db: Any, kind: str, consumers: int, batch: int, rows: int,
          data_dir: str | None) -> Drain:
    """Drain `db` with `consumers` processes of one kind: timed from the moment all are
    connected to the end of the last."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(consumers):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", CONSUMER, kind, db.engine, db.db, db.schema,
                 str(batch)], env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"pg_claims.py: a consumer did not start (exit {p.wait()})")
        server0 = server_cpu(data_dir)
        start = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        ends, done, client = [], 0, 0.0
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0 or not out.strip():
                raise SystemExit(f"pg_claims.py: a consumer exited {p.returncode}")
            n, end, cpu = out.split()
            done += int(n)
            ends.append(float(end))
            client += float(cpu)
        server1 = server_cpu(data_dir)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if done != rows:
        raise SystemExit(f"pg_claims.py: {kind} consumers completed {done} rows of {rows}")
    server = server1 - server0 if server0 is not None and server1 is not None else None
    return Drain(max(ends) - start, client, server)


def claim_once(dbs: Any, engine: str, kind: str, consumers: int, batch: int, rows: int
               ) -> Drain:
    """Drain a freshly filled queue of `rows` rows with one kind of consumer."""
    db = dbs.fresh(engine, f"claim{consumers}{kind}")
    try:
        prefill(db, rows)
        return drain(db, kind, consumers, batch, rows,
                     dbs.data_dir if engine == "postgresql" else None)
    finally:
        dbs.drop(db)


def bench_claims(dbs: Any, engines: tuple[str, ...], rows: int, batch: int, ks: list[int],
                 runs: int) -> dict[int, dict[tuple[str, str], Drain]]:
    """For each number of consumers, engine and kind (QueueClient, bare floor), the median
    of `runs` drains (each field's own median); all four take turns in every run."""
    out: dict[int, dict[tuple[str, str], Drain]] = {}
    for k in ks:
        got: dict[tuple[str, str], list[Drain]] = {(e, c): [] for e in engines for c in KINDS}
        for _ in range(runs):
            for key in got:
                got[key].append(claim_once(dbs, *key, k, batch, rows))
        out[k] = {key: Drain(*(statistics.median(x) if None not in x else None
                               for x in zip(*ds))) for key, ds in got.items()}
    return out


def print_claims(claims: dict[int, dict[tuple[str, str], Drain]], batch: int, rows: int
                 ) -> None:
    """The claims' table: rows/s of QueueClient and of the bare floor by engine and
    consumers, their ratio, and the CPU they took."""
    print(f"\n| claim({batch}) + one batch acknowledgement, {rows} rows | engine | "
          "QueueClient rows/s | bare floor rows/s | QueueClient / floor | CPU ms per "
          "1,000 rows: QueueClient consumers | floor consumers | server (QueueClient) | "
          "server (floor) |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for k, r in claims.items():
        for engine in dict.fromkeys(e for e, _ in r):
            c, b = r[(engine, "client")], r[(engine, "bare")]
            ms = [f"{x * 1e6 / rows:.0f}" if x is not None else "-"
                  for x in (c.client_cpu, b.client_cpu, c.server_cpu, b.server_cpu)]
            print(f"| {k} consumer{'s' if k > 1 else ''} | {engine} | {rows / c.seconds:,.0f} "
                  f"| {rows / b.seconds:,.0f} | {b.seconds / c.seconds:.2f} | "
                  f"{' | '.join(ms)} |")
