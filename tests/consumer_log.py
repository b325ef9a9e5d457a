"""A consumer process that logs each queue row it applies BEFORE completing it (one that
died between the two would apply the row again: the log would show it), the replay of
such logs into the consumers' combined view, and the view a tree itself gives.

Run as a script (`python consumer_log.py DB LOG STOP [options]`) it claims batches until
the file STOP exists and nothing is left to claim. DB is an SQLite file or a PostgreSQL
URL (with `--pg-schema`, default $WQSCAN_PG_SCHEMA, else wqscan's default schema). The
tests and benchmarks/soak.py use it, so it needs nothing but the standard library, wqscan
and xxhash (and psycopg for PostgreSQL).
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import xxhash

SCRIPT = str(Path(__file__).resolve())


def command(db: Any, log: Path | str, stop: Path | str, *options: str) -> list[str]:
    """The argv that runs this consumer in a process of its own; `db` is a file, a URL or
    a wqscan.store.Target (its PostgreSQL schema passed on with --pg-schema)."""
    schema = []
    if hasattr(db, "pg_schema"):  # a Target
        if db.is_pg:
            schema = ["--pg-schema", db.pg_schema]
        db = db.db
    return [sys.executable, SCRIPT, str(db), str(log), str(stop), *schema, *options]


def consume(db: Any, log: str, stop: str, batch: int, lease: float, work: float = 0.0,
            idle: float = 0.02, retry_busy: bool = False) -> None:
    """Claim `batch` rows at a time under a lease of `lease` s, take `work` s over each,
    log it, then complete it; a lost lease is logged too. A claim or a completion that
    meets a server down past the client's retries is tried again, and with `retry_busy`
    one that meets a busy database too, instead of failing."""
    from wqscan import QueueClient
    from wqscan.errors import DatabaseBusy, LeaseLost, StoreUnreachable

    # a server down past the client's retries: a consumer waits it out (as a real one would)
    busy = (StoreUnreachable, DatabaseBusy) if retry_busy else (StoreUnreachable,)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with QueueClient(db) as q:
        while True:
            stopping = os.path.exists(stop)
            try:
                rows = q.claim(batch, lease_seconds=lease)
            except busy:
                continue
            if not rows:
                if stopping:
                    break
                time.sleep(idle)  # an idle consumer polls gently
                continue
            for r in rows:
                if work:
                    time.sleep(work)
                line = {"id": r.queue_id, "op": r.operation, "path": r.file_absolute_path,
                        "hash": (r.metadata or {}).get("content_hash"), "pid": os.getpid(),
                        "collection": r.collection_name}
                os.write(fd, (json.dumps(line) + "\n").encode())
                while True:
                    try:
                        q.complete(r.queue_id)
                        break
                    except busy:
                        continue
                    except LeaseLost as e:
                        os.write(fd, (json.dumps({"lost": str(e)}) + "\n").encode())
                        break


def replay(log: Path | str) -> tuple[dict[str, str], list[str], list[dict[str, Any]]]:
    """The consumers' view from their log: (path -> hash, problems, the log's lines). A
    problem is a lost lease, a row applied twice, an ingest of a file the view holds, or
    an update or delete of one it lacks."""
    view: dict[str, str] = {}
    seen: set[str] = set()
    problems = []
    with open(log) as f:
        lines = [json.loads(line) for line in f]
    for line in lines:
        if "lost" in line:
            problems.append(f"lease lost: {line['lost']}")
            continue
        if line["id"] in seen:
            problems.append(f"row {line['id']} applied twice ({line['op']} {line['path']})")
        seen.add(line["id"])
        path, op = line["path"], line["op"]
        if op == "ingest" and path in view:
            problems.append(f"ingest of {path}, which the consumer already holds")
        if op in ("update", "delete") and path not in view:
            problems.append(f"{op} of {path}, which the consumer does not hold")
        if op == "delete":
            view.pop(path, None)
        else:
            view[path] = line["hash"]
    return view, problems, lines


def tree_hashes(root: Path | str, suffixes: tuple[str, ...] = ()) -> dict[str, str]:
    """{absolute path: XXH3-128 hex} of every regular file below `root` (resolved), or of
    those whose names end in one of `suffixes`."""
    out = {}
    for d, _dirs, files in os.walk(os.path.realpath(root)):
        for f in files:
            p = os.path.join(d, f)
            if (not suffixes or f.endswith(suffixes)) and stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as fh:
                    out[p] = xxhash.xxh3_128_hexdigest(fh.read())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db")
    ap.add_argument("log")
    ap.add_argument("stop")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lease", type=float, default=60.0)
    ap.add_argument("--work", type=float, default=0.0, help="seconds spent on each row")
    ap.add_argument("--idle", type=float, default=0.02, help="seconds between empty claims")
    ap.add_argument("--retry-busy", action="store_true")
    ap.add_argument("--pg-schema", default=os.environ.get("WQSCAN_PG_SCHEMA"),
                    help="PostgreSQL schema of wqscan's tables (a PostgreSQL DB only)")
    a = ap.parse_args()
    db: Any = a.db
    if a.pg_schema:
        from wqscan.store import Target

        db = Target(a.db, a.pg_schema)
    consume(db, a.log, a.stop, a.batch, a.lease, a.work, a.idle, a.retry_busy)


if __name__ == "__main__":
    main()
