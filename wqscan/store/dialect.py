"""The few pieces of SQL in which SQLite and PostgreSQL differ, one record per engine, and
the backoff of a busy write; every other statement is written once."""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence, TypeVar

BUSY_RETRIES = (0.5, 1.0, 2.0)  # seconds slept before each retry of a busy write
IN_LIST = 500  # values in one IN (...) list: within every engine's limit of parameters

T = TypeVar("T")


def in_parts(values: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """`values` in slices of at most IN_LIST, each with the `?, ?, ...` of its IN list."""
    for i in range(0, len(values), IN_LIST):
        part = values[i:i + IN_LIST]
        yield part, ", ".join("?" * len(part))


class Dialect(NamedTuple):
    """The SQL in which the engines differ; every other statement is written once, with
    `?` placeholders."""

    single_writer: bool  # one write transaction at a time, whole-database
    mark: str  # the driver's placeholder for the store's `?`
    index_hint: str  # the clause that makes the planner use an index ({} its name)
    # Row locks, where writers run side by side: a row read to be rewritten stays as read
    # until the rewrite commits; a claim passes over rows locked meanwhile.
    lock_rows: str
    lock_claim: str
    # the key of a file in the queue's indexes, and rows a and q being of one file (in a
    # form the in-progress index serves)
    file_key: str
    same_file: str
    now_sql: str  # now, as ISO-8601 UTC text with milliseconds
    uuid_sql: str  # a random UUID (version 4) as text

    def hint(self, index: str) -> str:
        """The clause that makes the planner use `index` ('' where there is none)."""
        return self.index_hint.format(index) if self.index_hint else ""


_SAME_FILE = ("a.file_absolute_path = q.file_absolute_path "
              "AND a.collection_name = q.collection_name")

SQLITE = Dialect(
    single_writer=True, mark="?", index_hint="INDEXED BY {}", lock_rows="", lock_claim="",
    file_key="file_absolute_path, collection_name", same_file=_SAME_FILE,
    now_sql="strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    uuid_sql=("lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || "
              "substr('89ab', 1 + (abs(random()) % 4), 1) || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"))

# A btree entry holds at most 2704 bytes in PostgreSQL and a path with its collection
# name may be longer: files are keyed by digests (SQLite has no such limit).
POSTGRES = Dialect(
    single_writer=False, mark="%s", index_hint="", lock_rows=" FOR UPDATE",
    lock_claim=" FOR UPDATE OF q SKIP LOCKED",
    file_key="md5(file_absolute_path), md5(collection_name)",
    same_file=("md5(a.file_absolute_path) = md5(q.file_absolute_path) AND "
               "md5(a.collection_name) = md5(q.collection_name) AND " + _SAME_FILE),
    now_sql="to_char(clock_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    uuid_sql="gen_random_uuid()::text")
