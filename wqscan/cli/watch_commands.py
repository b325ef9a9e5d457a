"""The commands that define watches: init, add, set, list, show, remove, enable, disable."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, UsageError
from ..settings import SETTINGS
from .common import open_store, print_json, print_table
from .text import printable

if TYPE_CHECKING:
    from ..queue.writes import Enqueued


def cmd_init(args: argparse.Namespace) -> int:
    from ..store import SCHEMA_VERSION

    with open_store(args, args.layout, create=True) as store, store.write():
        pass  # wqscan's own tables, in an adopted database too
    if args.json:
        print_json({"database": store.path, "layout": store.layout.name,
                     "schema_version": SCHEMA_VERSION})
    elif not args.quiet:
        print(f"database {store.path} ready ({store.layout.name} layout, schema version "
              f"{SCHEMA_VERSION})")
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    from ..watches import add_watch

    settings = {s.name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)}
    with open_store(args, create=True) as store:
        watch = add_watch(store, args.path, watch_id=args.watch_id,
                          must_exist=not args.allow_missing, **settings)
    if args.json:
        print_json(watch.to_json())
    else:
        print(watch.watch_id)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    from ..watches import set_watch

    changes: dict[str, Any] = {s.name: getattr(args, s.name) for s in SETTINGS
                               if hasattr(args, s.name)}
    for s in SETTINGS:
        if getattr(args, f"clear_{s.name}", False):
            if s.name in changes:
                raise UsageError(f"set: {s.clear_flag} and the option it clears, not both")
            changes[s.name] = []
    if not changes:
        raise UsageError("set: nothing to change (see wqscan set --help)")
    with open_store(args) as store:
        edit = set_watch(store, args.watch_id, **changes)
    if args.json:
        print_json(edit.watch.to_json())
    elif not args.quiet and not edit.changed:
        print(f"nothing changed: {args.watch_id} already has those settings")
    elif not args.quiet:
        print(printable(f"changed {args.watch_id}: " + ", ".join(edit.changed)
                        + (f"; {_deletes(edit.deletes)} into the old collection "
                           f"{edit.old_collection}" if "collection" in edit.changed else "")))
    return EXIT_OK


def _deletes(done: "Enqueued") -> str:
    """What queued deletes did, in words: '3 deletes queued, 1 pending ingest cancelled'."""
    queued = done.changed - done.cancelled
    text = f"{queued} delete{'s' if queued != 1 else ''} queued"
    if done.cancelled:
        text += (f", {done.cancelled} pending ingest{'s' if done.cancelled != 1 else ''} "
                 "cancelled (never consumed)")
    return text


def cmd_list(args: argparse.Namespace) -> int:
    from ..service.status import status
    from ..watches import list_watches

    with open_store(args) as store:
        watches = list_watches(store)
        if args.json:
            print_json([w.to_json() for w in watches])
            return EXIT_OK
        last = {w["watch_id"]: w for w in status(store)["watches"]}
    rows = [("ID", "ENABLED", "COLLECTION", "INTERVAL", "LAST SCAN", "PATH")]
    rows += [(printable(w.watch_id), "yes" if w.enabled else "no", printable(w.collection),
              f"{w.interval:g}s", _last_scan(last[w.watch_id]),
              printable(w.path)) for w in watches]
    print_table(rows)
    return EXIT_OK


def _last_scan(watch: dict[str, Any]) -> str:
    """When the last scan started and how it ended; "never" only when none was tried."""
    start = watch["last_scan_start"] or watch["last_scan"]
    return f"{start} ({watch['last_result'] or 'ok'})" if start else "never"


def cmd_show(args: argparse.Namespace) -> int:
    from ..service.status import watch_status

    with open_store(args) as store:
        doc = watch_status(store, args.watch_id)
    if args.json:
        print_json(doc)
        return EXIT_OK
    from .text import watch_lines

    for line in watch_lines(doc):
        print(line)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from ..watches import remove_watch

    with open_store(args) as store:
        done = remove_watch(store, args.watch_id, args.emit_deletes)
    if not args.quiet:
        print(f"removed {args.watch_id}" + (f"; {_deletes(done)}" if args.emit_deletes else ""))
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    return _toggle(args, True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _toggle(args, False)


def _toggle(args: argparse.Namespace, enabled: bool) -> int:
    from ..watches import set_enabled

    with open_store(args) as store:
        set_enabled(store, args.watch_id, enabled)
    if not args.quiet:
        print(f"{'enabled' if enabled else 'disabled'} {args.watch_id}")
    return EXIT_OK
