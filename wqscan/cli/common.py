"""What every command shares: the database and configuration the arguments name, and
printing JSON and tables."""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import UsageError
from ..settings import MAX_SECONDS
from .text import table


def resolve(args: argparse.Namespace):
    """The database (a Target) and the loaded configuration (or None): --db, then
    $WQSCAN_DB, then the configuration's `database:`, then the default file."""
    from ..store import DEFAULT_PG_SCHEMA, Target
    from ..watches.config import config_path, load
    from .paths import default_db

    path = config_path(args.config)
    config = load(path) if path else None
    db = args.db or os.environ.get("WQSCAN_DB") or (config.database if config else None) \
        or default_db()
    target = Target(db, getattr(args, "pg_schema", None) or os.environ.get("WQSCAN_PG_SCHEMA")
                    or DEFAULT_PG_SCHEMA, bool(getattr(args, "allow_network_db", False)))
    if not target.is_pg:
        target = target._replace(db=os.path.expanduser(db))
    return target, config


def open_store(args: argparse.Namespace, layout: str | None = None, create: bool = False):
    """The store, with the configuration's watches applied."""
    return open_configured(args, layout, create)[0]


def open_configured(args: argparse.Namespace, layout: str | None = None,
                     create: bool = False):
    """(store, configuration or None), the configuration's watches applied. Only what
    defines work creates a database: the commands that do (`create`), and a configuration
    that lists watches (the cron form `wqscan --config F reconcile` on a new machine);
    otherwise a missing database is refused (a mistyped $WQSCAN_DB is not an empty
    queue)."""
    from ..store import Store
    from ..watches.config import apply

    target, config = resolve(args)
    if config is not None and config.watches:
        create = True
    store = Store.open(target, layout, create=create)
    if config is not None:
        apply(store, config)
    return store, config


def print_json(doc: Any) -> None:
    import json

    print(json.dumps(doc, indent=2, sort_keys=False, default=str))


def print_table(rows: list[tuple[str, ...]]) -> None:
    for line in table(rows):
        print(line)


def seconds(value: float, option: str) -> float:
    """A duration option: 0 or more, at most the ten years every duration is bounded by."""
    if not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{option} must be between 0 and {MAX_SECONDS}, not {value}")
    return value
