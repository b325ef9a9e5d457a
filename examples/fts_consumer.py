#!/usr/bin/env python3
"""A worked consumer of the wqscan queue: keeps a full-text index of the watched files.

    python examples/fts_consumer.py --db WQSCAN_DB --index INDEX_DB        # drain the queue
    python examples/fts_consumer.py --index INDEX_DB --search WORD         # query the index

--db defaults to $WQSCAN_DB and --pg-schema (for a postgresql:// --db) to $WQSCAN_PG_SCHEMA
or `wqscan`, as for wqscan itself. A problem (a missing database or
index, a wqscan error) is one line on stderr and exit code 2.

It claims batches of rows, indexes the text of each ingested or updated file in an
SQLite FTS5 table (or drops a deleted one), completes each batch at once, fails a row
whose file it cannot read or whose content is no longer the one the row names (wqscan
retries it with backoff), and exits when nothing is left to claim.
Several copies may run at once: wqscan never hands one row, or one file, to two of them.
"""
from __future__ import annotations

import argparse
import os
import sys

import apsw
import xxhash

from wqscan import QueueClient
from wqscan.errors import WqscanError
from wqscan.store import Target

MAX_TEXT = 10 * 1024 * 1024  # index at most this much of a file


def open_index(path: str) -> apsw.Connection:
    """The index: one FTS5 row per (collection, file)."""
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10_000)  # several consumers may write at once
    conn.pragma("journal_mode", "wal")
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5("
                 "collection UNINDEXED, path UNINDEXED, content_hash UNINDEXED, body)")
    return conn


class Changed(Exception):
    """The file is no longer the content the row names: it changed again since the scan."""


def apply(index: apsw.Connection, row) -> None:
    """Make the index agree with one queue row. A file that is gone by now is dropped: the
    scanner queues its delete on the next scan. A file whose content is not the row's
    raises Changed: the row is failed and retried, so the index never holds a version
    the queue does not know it holds."""
    body = None
    content_hash = (row.metadata or {}).get("content_hash")
    if row.operation != "delete":
        digest, head = xxhash.xxh3_128(), b""
        try:
            with open(row.file_absolute_path, "rb") as f:
                while chunk := f.read(1 << 20):  # hashed whole, indexed up to MAX_TEXT
                    digest.update(chunk)
                    head += chunk[:MAX_TEXT - len(head)]
        except FileNotFoundError:
            digest = None
        if digest is not None:
            if content_hash and digest.hexdigest() != content_hash:
                raise Changed("changed since it was queued; retried later")
            body = head.decode("utf-8", errors="replace")
    with index:  # one transaction
        index.execute("DELETE FROM docs WHERE collection = ? AND path = ?",
                      (row.collection_name, row.file_absolute_path))
        if body is not None:
            index.execute("INSERT INTO docs (collection, path, content_hash, body) "
                          "VALUES (?, ?, ?, ?)",
                          (row.collection_name, row.file_absolute_path, content_hash, body))


def drain(db: Target, index_path: str, batch: int, lease: float) -> dict[str, int]:
    """Consume until no row is due; returns counts of what was done."""
    counts = {"ingest": 0, "update": 0, "delete": 0, "failed": 0}
    with QueueClient(db) as queue:  # first: a missing database creates no index
        index = open_index(index_path)
        while rows := queue.claim(batch, lease_seconds=lease):
            done = []
            for row in rows:
                try:
                    apply(index, row)
                except (OSError, Changed) as e:  # unreadable, or changed: retried later
                    queue.fail(row.queue_id, f"{type(e).__name__}: {e}")
                    counts["failed"] += 1
                    continue
                done.append(row.queue_id)
                counts[row.operation] += 1
            queue.complete(done)  # the batch's rows, in one transaction
    index.close()
    return counts


def search(index_path: str, query: str) -> list[str]:
    """Paths of the indexed files that match an FTS5 query, best first (ties by path). Text
    that is not FTS5 query syntax (`a-b`, say) is searched as the words written."""
    if not os.path.isfile(index_path):  # a search creates nothing
        raise FileNotFoundError(f"no index at {index_path} (drain the queue into it first)")
    index = open_index(index_path)
    sql = "SELECT path FROM docs WHERE docs MATCH ? ORDER BY rank, path"
    try:
        return [path for (path,) in index.execute(sql, (query,))]
    except apsw.SQLError:
        words = " ".join('"' + w.replace('"', '""') + '"' for w in query.split())
        return [path for (path,) in index.execute(sql, (words,))] if words else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default=os.environ.get("WQSCAN_DB"),
                   help="the wqscan database (needed to drain the queue; default $WQSCAN_DB)")
    p.add_argument("--pg-schema", default=os.environ.get("WQSCAN_PG_SCHEMA") or "wqscan",
                   help="the schema of wqscan's tables in a PostgreSQL --db (default "
                   "$WQSCAN_PG_SCHEMA, else wqscan)")
    p.add_argument("--index", required=True, help="the full-text index to keep")
    p.add_argument("--batch", type=int, default=50, help="rows claimed at a time")
    p.add_argument("--lease", type=float, default=300, help="seconds a claim holds")
    p.add_argument("--search", metavar="QUERY", help="print the files matching QUERY")
    args = p.parse_args()
    try:
        if args.search is not None:
            for path in search(args.index, args.search):
                print(path)
            return 0
        if not args.db:
            p.error("--db (or $WQSCAN_DB) is needed to drain the queue")
        counts = drain(Target(args.db, args.pg_schema), args.index, args.batch, args.lease)
    except (WqscanError, OSError, apsw.Error) as e:
        print(f"fts_consumer: error: {e}", file=sys.stderr)
        return 2
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
