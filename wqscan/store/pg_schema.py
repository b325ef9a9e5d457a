"""The wqscan layout in PostgreSQL: the tables of schema.py, in a schema of wqscan's own.

The declarations are schema.py's, translated: SQLite's types to PostgreSQL's, every text
column in the "C" collation (snapshot keys and ISO times are compared byte by byte, as
SQLite does), and the defaults of ids and times to the server's functions. Whatever else
lives in the database, in other schemas or in this one, is never read or altered.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

from .dialect import POSTGRES, SQLITE
from .layouts import WqscanLayout
from .schema import (OWN_DDL, OWN_INDEXES, QUEUE_COLUMNS, QUEUE_NAMES, SCHEMA_VERSION,
                     WATCH_COLUMNS, WATCH_SETTINGS, create_table_sql)

_TYPES = {"TEXT": 'TEXT COLLATE "C"', "INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION",
          "BLOB": "BYTEA"}
_TYPE_WORDS = re.compile(r"\b(TEXT|INTEGER|REAL|BLOB)\b")

# A file's key in the queue's indexes: digests (the dialect's file_key).
FILE_KEY = POSTGRES.file_key
# Tables keyed by (watch, directory): a directory's path may outgrow a btree entry too.
DIR_KEYED = ("wq_snapshot", "wq_labels", "wq_dircache")
LAYOUT = WqscanLayout(True, WATCH_SETTINGS, QUEUE_NAMES, *OWN_INDEXES)
# The queue table's storage and autovacuum parameters: a few live rows and a stream of dead
# ones (every claim and completion leaves one), vacuumed early and at full speed
# (docs/scaling-out.md says why each value).
QUEUE_STORAGE = {"fillfactor": "80", "autovacuum_vacuum_scale_factor": "0.02",
                 "autovacuum_vacuum_threshold": "1000", "autovacuum_vacuum_cost_delay": "0",
                 "autovacuum_analyze_scale_factor": "0.02",
                 "autovacuum_analyze_threshold": "1000"}


def translate(ddl: str) -> str:
    """One of schema.py's statements in PostgreSQL's terms."""
    ddl = ddl.replace(SQLITE.uuid_sql, POSTGRES.uuid_sql).replace(SQLITE.now_sql,
                                                                  POSTGRES.now_sql)
    return _TYPE_WORDS.sub(lambda m: _TYPES[m.group(1)], ddl)


def statements() -> list[str]:
    """Every statement that creates the layout and wqscan's own tables (all idempotent)."""
    pending, claim, active = OWN_INDEXES
    return [translate(create_table_sql("watch_folders", WATCH_COLUMNS)).replace(
                "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1),
            translate(create_table_sql("ingestion_queue", QUEUE_COLUMNS)).replace(
                "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1),
            f"CREATE UNIQUE INDEX IF NOT EXISTS {pending} ON ingestion_queue "
            f"({FILE_KEY}) WHERE status = 'pending'",
            f"CREATE INDEX IF NOT EXISTS {claim} ON ingestion_queue "
            "(status, priority DESC, scheduled_at, queued_timestamp)",
            f"CREATE INDEX IF NOT EXISTS {active} ON ingestion_queue "
            f"({FILE_KEY}) WHERE status = 'in_progress'",
            *(translate(ddl).replace(", UNIQUE (watch_id, dir))", ")")
              .replace(", PRIMARY KEY (watch_id, dir))", ")") for ddl in OWN_DDL),
            *(f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_key ON {t} (watch_id, md5(dir))"
              for t in DIR_KEYED),
            "ALTER TABLE ingestion_queue SET ("
            + ", ".join(f"{k} = {v}" for k, v in QUEUE_STORAGE.items()) + ")"]


def queue_tuned(options: Iterable[str] | None) -> bool:
    """Whether the queue table's options (pg_class.reloptions) set any parameter of
    QUEUE_STORAGE: ours, or values an operator chose instead, which are kept."""
    return any(option.split("=", 1)[0] in QUEUE_STORAGE for option in options or ())


def install(conn: Any) -> None:
    """Create the tables and record their version (inside the caller's transaction, under
    its lock); run again on a schema whose queue table lacks QUEUE_STORAGE. The layout
    starts at version 7: a later version adds its steps here."""
    for ddl in statements():
        conn.execute(ddl)
    conn.execute("INSERT INTO wq_meta (key, value) VALUES ('schema_version', ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))


def digests(texts: Iterable[str]) -> list[str]:
    """md5 in hex of each text, as the server's md5() has it (of its UTF-8)."""
    return [hashlib.md5(t.encode()).hexdigest() for t in texts]
