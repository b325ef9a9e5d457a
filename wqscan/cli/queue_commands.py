"""`wqscan queue`: the consumer side of the queue from the shell (list, stats, claim,
complete, fail, retry, purge), loaded only when that command runs."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..model import MAX_RETRIES
from .common import open_store, print_json, print_table
from .text import printable


def cmd_queue(args: argparse.Namespace) -> int:
    """`wqscan queue ACTION`."""
    views = {"list": _queue_list, "stats": _queue_stats}
    actions = {"claim": _queue_claim, "complete": _queue_complete, "fail": _queue_fail,
               "retry": _queue_retry, "purge": _queue_purge}
    with open_store(args) as store:
        if args.queue_command in views:
            return views[args.queue_command](store, args)
        from ..queue.consumer import QueueClient

        client = QueueClient(store, owner=getattr(args, "owner", None) or _shell_owner(),
                             max_retries=getattr(args, "max_retries", MAX_RETRIES))
        return actions[args.queue_command](client, args)


def _shell_owner() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _queue_list(store, args: argparse.Namespace) -> int:
    from ..queue import info as queue_info
    from ..queue.consumer import QueueRow

    limit = args.limit or None
    rows = queue_info.rows(store, args.status, limit, args.collection)
    missing = queue_info.left_out(store, len(rows), limit, args.status, args.collection)
    if store.layout.claims:
        rows = [QueueRow.from_db(r).to_json() for r in rows]
    if args.json:
        print_json(rows)
    elif rows:
        print_table(_row_table(rows, store.layout.claims))
    if missing and not args.quiet:
        print(f"wqscan: {len(rows)} rows shown, {missing} more left out (--limit N, or "
              "--limit 0 for all)", file=sys.stderr)
    return EXIT_OK


def _row_table(rows: list[dict[str, Any]], claims: bool) -> list[tuple[str, ...]]:
    """`queue list` as text: the wqscan layout's ids, statuses and leases, or the
    workspace-qdrant-mcp layout's rows keyed by path."""
    if claims:
        table = [("ID", "STATUS", "OPERATION", "PRIORITY", "RETRIES", "SCHEDULED", "OWNER",
                  "COLLECTION", "PATH", "ERROR")]
        return table + [(r["queue_id"], r["status"], r["operation"], str(r["priority"]),
                         str(r["retry_count"]), r["scheduled_at"],
                         printable(r["lease_owner"] or "-"), printable(r["collection_name"]),
                         printable(r["file_absolute_path"]),
                         printable(r["error_message"] or "-")) for r in rows]
    table = [("OPERATION", "PRIORITY", "RETRIES", "QUEUED", "COLLECTION", "PATH")]
    return table + [(r["operation"], str(r["priority"]), str(r.get("retry_count", "-")),
                     str(r["queued_timestamp"]), printable(r["collection_name"]),
                     printable(r["file_absolute_path"])) for r in rows]


def _queue_stats(store, args: argparse.Namespace) -> int:
    from ..queue import info as queue_info

    doc = queue_info.stats(store, storage=True)
    if args.json:
        print_json(doc)
        return EXIT_OK
    for status, n in doc["by_status"].items():
        ops = ", ".join(f"{op} {k}" for op, k in doc["by_operation"][status].items())
        print(f"{status + ':':13}{n}" + (f" ({ops})" if ops else ""))
    print(f"{'due now:':13}{doc['due']}; later (backoff): {doc['scheduled_later']}; "
          f"expired leases: {doc['expired_leases']}")
    print(f"{'oldest:':13}{doc['oldest_pending'] or '-'}")
    if "storage" in doc:
        _print_storage(doc["storage"])
    return EXIT_OK


def _print_storage(s: dict) -> None:
    """The queue table's health on PostgreSQL: dead rows, vacuums, the oldest transaction."""
    print(f"{'table:':13}{s.get('live_rows', '-')} live rows, {s.get('dead_rows', '-')} dead; "
          f"last autovacuum {s.get('last_autovacuum') or '-'}, "
          f"last vacuum {s.get('last_vacuum') or '-'}")
    t = s["oldest_transaction"]
    if t is None:
        print(f"{'oldest xact:':13}-")
        return
    seconds = "-" if t["seconds"] is None else f"{t['seconds']:.0f} s"
    print(f"{'oldest xact:':13}pid {t['pid']} ({printable(t['application_name'] or '-')}, "
          f"{t['state'] or '-'}), {t['xid_age']} transactions ago, open {seconds}")


def _queue_claim(client, args: argparse.Namespace) -> int:
    rows = client.claim(args.n, args.lease, args.collection, args.tenant)
    if not rows and args.wait != 0 and client.wait(args.wait, args.collection, args.tenant):
        rows = client.claim(args.n, args.lease, args.collection, args.tenant)
    if args.json:
        print_json([r.to_json() for r in rows])
    else:
        for r in rows:
            print(f"{r.queue_id}\t{r.operation}\t{printable(r.file_absolute_path)}")
    return EXIT_OK


def _queue_complete(client, args: argparse.Namespace) -> int:
    """Every id in one transaction; each id no longer this consumer's is one error line."""
    from ..errors import LeaseLost

    ids = list(dict.fromkeys(args.queue_ids))
    try:
        client.complete(ids)
        lost: dict[str, str] = {}
    except LeaseLost as e:
        lost = e.lost
    if args.json:
        print_json({"completed": [q for q in ids if q not in lost],
                    "lost": [{"queue_id": q, "error": why} for q, why in lost.items()]})
    else:
        for why in lost.values():
            print(printable(f"wqscan: error: {why}"), file=sys.stderr)
        if not args.quiet:
            print(f"completed {len(ids) - len(lost)}")
    return EXIT_FAILED if lost else EXIT_OK


def _queue_fail(client, args: argparse.Namespace) -> int:
    row = client.fail(args.queue_id, args.error)
    if args.json:
        print_json(row.to_json() if row is not None else None)
    elif not args.quiet:
        if row is None:
            print(f"{args.queue_id}: cancelled out by a newer pending row of the same file")
        elif row.status == "failed":
            print(f"{row.queue_id}: failed after {row.retry_count} attempt"
                  + ("s" if row.retry_count != 1 else ""))
        else:
            print(f"{row.queue_id}: pending again at {row.scheduled_at} "
                  f"(attempt {row.retry_count} of {client.max_retries} failed)")
    return EXIT_OK


def _queue_retry(client, args: argparse.Namespace) -> int:
    if args.all and args.queue_ids:
        raise UsageError("queue retry: give IDs or --all, not both")
    n = client.retry(args.queue_ids or None)
    if args.json:
        print_json({"returned": n})
    elif not args.quiet:
        print(f"returned {n} failed rows to pending")
    return EXIT_OK


def _queue_purge(client, args: argparse.Namespace) -> int:
    n = client.purge(args.status)
    if args.json:
        print_json({"purged": n, "status": args.status})
    elif not args.quiet:
        print(f"purged {n} {args.status} rows")
    return EXIT_OK
