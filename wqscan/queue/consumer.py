"""The consumer side of `ingestion_queue` (docs/consuming.md): claim rows under a lease, then
complete, fail (with backoff) or retry them; purge and count.

Every call is one write transaction, run again whole when the database answers busy, so
two consumers never claim the same row (SQLite: one writer at a time; PostgreSQL: claims
pass over rows another claim locked). A claim also leaves alone the pending row of a
file that has a row in progress, so one file is never worked on by two consumers at once
and its operations are applied in the order they were queued.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, NamedTuple, Sequence, TypeVar

from ..clock import iso_from_ns
from ..errors import LeaseLost, OutcomeUnknown, UsageError
from ..model import MAX_RETRIES, PURGEABLE_STATUSES
from ..store import Store, Target
from . import info as queue_info
from .writes import merged

T = TypeVar("T")
BACKOFF_SECONDS = 60.0
MAX_CLAIM = 100_000  # rows in one claim
MAX_BACKOFF_SECONDS = 86400.0  # 60 s x 2^k passes a day at the 12th failure


class QueueRow(NamedTuple):
    """One row of `ingestion_queue`, with `metadata` decoded (None when absent or not JSON)."""

    queue_id: str
    file_absolute_path: str
    collection_name: str
    tenant_id: str
    branch: str
    operation: str
    priority: int
    status: str
    queued_timestamp: str
    scheduled_at: str
    retry_count: int
    retry_from: str | None
    error_message: str | None
    lease_owner: str | None
    lease_expires_at: str | None
    watch_id: str | None
    metadata: dict[str, Any] | None

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> "QueueRow":
        """From a row as read (a table of another program may hold more columns)."""
        get = row.get
        return tuple.__new__(cls, (*map(get, _PLAIN), _decode(get("metadata"))))

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


_PLAIN = QueueRow._fields[:-1]  # the columns a QueueRow holds as read


def default_owner() -> str:
    """A consumer name unique to this client: host, pid and a random part."""
    return f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"


class QueueClient:
    """A consumer of one wqscan database's queue.

    `owner` names this consumer in `lease_owner` (default: unique to the client);
    `max_retries` is the failure that marks a row `failed`; a failed attempt is retried
    after `backoff_seconds` x 2^(retry_count-1), at most a day.

    Do not open the same database file with Python's `sqlite3` in this process while the
    client is open: that is a second SQLite library, and closing its connection drops the
    POSIX locks (and can delete the WAL) this client's SQLite relies on, losing commits.
    Use `sqlite3` on that file from another process, or go through this client only.
    """

    def __init__(self, db: str | Target | Store, *, owner: str | None = None,
                 max_retries: int = MAX_RETRIES, backoff_seconds: float = BACKOFF_SECONDS
                 ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) \
                or max_retries < 1:
            raise UsageError(f"max_retries must be a whole number of at least 1, "
                             f"not {max_retries!r}", field="max_retries")
        if not backoff_seconds >= 0:
            raise UsageError(f"backoff_seconds must be 0 or more, not {backoff_seconds!r}",
                             field="backoff_seconds")
        self._own_store = not isinstance(db, Store)
        self.store = Store.open((db if isinstance(db, Target) else Target(db))._replace(
            consumer=True), create=False) if self._own_store else db
        refused = self.store.layout.claims_refused(self.store.path)
        if refused:
            self.close()
            raise UsageError(refused)
        self.owner = owner or default_owner()
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._owners: dict[str, str] = {}  # queue_id -> owner it was claimed as
        # the filters of the last claim if it took all it asked for: there is likely more
        self._full: tuple[str | None, str | None] | None = None

    def close(self) -> None:
        """Close the database, unless the caller passed in its own Store."""
        if self._own_store:
            self.store.close()

    def __enter__(self) -> "QueueClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- claiming --------------------------------------------------------------------

    def claim(self, n: int, lease_seconds: float = 300, collection: str | None = None,
              tenant_id: str | None = None, owner: str | None = None) -> list[QueueRow]:
        """Move up to n due rows to `in_progress` under a lease and return them, ordered by
        priority (highest first), scheduled_at, queued_timestamp. At most one row per file."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CLAIM:
            raise UsageError(f"claim takes a whole number of rows from 1 to {MAX_CLAIM}, "
                             f"not {n!r}", field="n")
        if not 0 < lease_seconds <= 10 ** 7:
            raise UsageError(f"lease_seconds must be above 0 and at most 10000000, "
                             f"not {lease_seconds!r}", field="lease_seconds")
        owner = owner or self.owner
        filters = (collection, tenant_id)
        if self.store.single_writer and self._full != filters \
                and not self._due(collection, tenant_id):
            return []  # an idle consumer's poll takes no write lock away from the scanner
        def take() -> list[dict[str, Any]]:
            return self.store.queue.claim(n, lease_seconds, owner, collection, tenant_id)

        chosen = self._write(take, one_statement=True,
                             unsure=lambda: self._taken_unseen(owner) or self.store.transact(take))
        for row in chosen:
            self._owners[row["queue_id"]] = owner
        self._full = filters if len(chosen) == n else None
        return [QueueRow.from_db(r) for r in chosen]

    def _write(self, body: Callable[[], T], one_statement: bool = False,
               unsure: Callable[[], T] | None = None) -> T:
        """`body` as one write transaction, run again whole while the database is busy;
        a body that writes with one statement goes alone where the store allows it (on
        PostgreSQL: no BEGIN and COMMIT, one round trip). If the connection drops while it
        runs, `unsure` reads back what it did and finishes the work."""
        queue = self.store.queue
        if one_statement and queue.alone_ok and not self.store.conn.in_transaction:
            try:
                return queue.alone(body)
            except OutcomeUnknown:
                if unsure is None:
                    raise
                return unsure()
        return self.store.transact(body)

    def _taken_unseen(self, owner: str) -> list[dict[str, Any]]:
        """Rows in progress under `owner` that this client was never told of: what a claim
        cut off by a dropped connection took before it was cut."""
        return [r for r in self.store.queue.held_by(owner) if r["queue_id"] not in self._owners]

    def wait(self, timeout: float, collection: str | None = None,
             tenant_id: str | None = None) -> bool:
        """Wait up to `timeout` seconds until a row is due for claiming; whether one is.
        On PostgreSQL an idle consumer sleeps on LISTEN until a reconcile queues work;
        on SQLite it looks once a second."""
        if not timeout >= 0:
            raise UsageError(f"wait takes 0 or more seconds, not {timeout!r}", field="timeout")
        return self.store.wait_for_work(timeout, lambda: self._due(collection, tenant_id))

    def _due(self, collection: str | None, tenant_id: str | None) -> bool:
        now = iso_from_ns(self.store.clock_ns())
        return bool(self.store.queue.claimable(now, 1, collection, tenant_id, lock=False))

    def complete(self, queue_ids: str | Sequence[str], owner: str | None = None) -> None:
        """Delete rows this consumer holds: one id, or a list of ids finished in one
        transaction (one statement on PostgreSQL). Ids it no longer holds are left alone,
        the others deleted, then one LeaseLost names them all (its `queue_ids`)."""
        ids = list(dict.fromkeys(_ids(queue_ids)))
        owners = {q: owner or self._owners.get(q, self.owner) for q in ids}
        by_owner: dict[str, list[str]] = {}
        for q in ids:
            by_owner.setdefault(owners[q], []).append(q)

        def delete(cut: bool = False) -> dict[str, str]:
            gone: set[str] = set()
            for who, part in by_owner.items():
                gone |= self.store.queue.delete_claimed(part, who)
            left = [q for q in ids if q not in gone]
            if cut and left:  # after a delete cut off: a row no longer there, it deleted
                there = {r["queue_id"] for r in self._read(left)}
                left = [q for q in left if q in there]
            return self._lost(left, owners)

        self._finish(ids, self._write(delete, one_statement=len(by_owner) == 1,
                                      unsure=lambda: self.store.transact(lambda: delete(True))))

    def fail(self, queue_ids: str | Sequence[str], error: str, owner: str | None = None
             ) -> QueueRow | None | list[QueueRow | None]:
        """Record a failed attempt at rows this consumer holds: pending again after the
        backoff, or `failed` at max_retries. One id returns the row as it now stands (None
        if it coalesced away); a list, finished in one transaction, returns such a value
        for each id, in order. Ids it no longer holds are left alone, the others recorded,
        then one LeaseLost names them all (its `queue_ids`)."""
        one = isinstance(queue_ids, str)
        ids = list(dict.fromkeys(_ids(queue_ids)))
        owners = {q: owner or self._owners.get(q, self.owner) for q in ids}

        def record() -> tuple[dict[str, str | None], dict[str, str]]:
            held = self.store.queue.rows_to_change(ids)
            now_ns = self.store.clock_ns()
            result: dict[str, str | None] = {}
            lost = []
            for q in ids:
                row = held.get(q)
                if row is None or row["status"] != "in_progress" \
                        or row["lease_owner"] != owners[q]:
                    lost.append(q)
                else:
                    result[q] = self._record_failure(row, str(error), now_ns)
            return result, self._lost(lost, owners)

        result, lost = self.store.transact(record)
        after = {r["queue_id"]: QueueRow.from_db(r) for r in self._read(
            [s for s in result.values() if s])}
        self._finish(ids, lost)
        return after.get(result[ids[0]] or "") if one else \
            [after.get(result[q] or "") for q in ids]

    def _record_failure(self, row: dict[str, Any], error: str, now_ns: int) -> str | None:
        """One failed attempt at a row held (in the caller's transaction, at `now_ns`):
        `failed` at max_retries, else pending after the backoff; the surviving queue_id,
        if any."""
        count = row["retry_count"] + 1
        fields = {"retry_count": count, "error_message": error,
                  "lease_owner": None, "lease_expires_at": None}
        if count >= self.max_retries:
            self.store.queue.set_fields(row["queue_id"], {**fields, "status": "failed"})
            return row["queue_id"]
        delay = min(self.backoff_seconds * 2.0 ** min(count - 1, 64), MAX_BACKOFF_SECONDS)
        when = iso_from_ns(now_ns + int(delay * 1e9))
        return self._return_to_pending([row], fields, when)

    def _read(self, queue_ids: list[str]) -> list[dict[str, Any]]:
        return [r for i in range(0, len(queue_ids), 500)
                for r in self.store.queue.rows(queue_ids=queue_ids[i:i + 500])]

    def _finish(self, ids: list[str], lost: dict[str, str]) -> None:
        """Forget the claims of these rows (finished, or no longer this consumer's); then
        LeaseLost for those no longer held."""
        for q in ids:
            self._owners.pop(q, None)
        if len(lost) == 1:
            raise LeaseLost(next(iter(lost.values())), lost)
        if lost:
            raise LeaseLost(f"{len(lost)} of {len(ids)} queue rows were not this consumer's "
                            "(the others were finished): " + "; ".join(lost.values()), lost)

    def retry(self, queue_ids: str | Sequence[str] | None = None) -> int:
        """Return failed rows (one id, a list of ids, default: all) to pending, due now, with
        retry_count 0; each is coalesced with a pending row of its file, the failed row
        counting as the older. Returns how many failed rows were returned. Unknown or
        not-failed ids are refused and nothing changes."""
        return self.store.transact(lambda: self._retry(queue_ids))

    def _retry(self, queue_ids: str | Sequence[str] | None) -> int:
        """The transaction of `retry` (run again whole when the database is busy)."""
        if queue_ids is None:
            rows = self.store.queue.rows(status="failed")
        else:
            ids = list(dict.fromkeys(_ids(queue_ids)))
            rows = [r for i in range(0, len(ids), 500)
                    for r in self.store.queue.rows(queue_ids=ids[i:i + 500])]
            found = {r["queue_id"]: r["status"] for r in rows}
            for q in ids:
                if found.get(q) != "failed":
                    state = found.get(q)
                    raise UsageError(f"queue row {q} is {state or 'not in the queue'}; "
                                     "only failed rows can be retried", field="queue_id")
        by_file: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: (r["queued_timestamp"], r["queue_id"])):
            by_file.setdefault((r["file_absolute_path"], r["collection_name"]), []).append(r)
        now = iso_from_ns(self.store.clock_ns())
        fields = {"retry_count": 0, "lease_owner": None, "lease_expires_at": None}
        for group in by_file.values():
            self._return_to_pending(group, fields, now)
        return len(rows)

    def _return_to_pending(self, rows: list[dict[str, Any]], fields: dict[str, Any],
                           scheduled_at: str) -> str | None:
        """Make a file's rows (oldest first) pending, folded with its pending row by the
        coalescing table into the oldest row; returns the surviving queue_id, if any."""
        pending = self.store.queue.pending_row(rows[0]["file_absolute_path"],
                                               rows[0]["collection_name"])
        if pending is not None:
            scheduled_at = max(scheduled_at, pending["scheduled_at"])
            rows = rows + [pending]
        survivor, dropped = fold(rows)
        self.store.queue.remove(dropped)  # first: the survivor takes the file's pending slot
        if survivor is None:
            return None
        self.store.queue.set_fields(survivor["queue_id"], {
            **fields, "status": "pending", "scheduled_at": scheduled_at,
            **{k: survivor[k] for k in ("operation", "priority", "tenant_id", "branch",
                                        "watch_id", "metadata")}})
        return survivor["queue_id"]

    def _lost(self, queue_ids: list[str], owners: dict[str, str]) -> dict[str, str]:
        """Why each of these rows is no longer this consumer's (`owners`: the owner each id
        was to be finished as), by id."""
        if not queue_ids:
            return {}
        found = {r["queue_id"]: r for r in self._read(queue_ids)}
        why = {}
        for q in queue_ids:
            row, owner = found.get(q), owners[q]
            if row is None:
                why[q] = (f"queue row {q} is not in the queue (completed or purged since it "
                          "was claimed, or never queued)")
            elif row["status"] == "in_progress":
                why[q] = (f"queue row {q} is held by {row['lease_owner']}, not {owner}: lost "
                          "to another consumer after its lease expired, or never claimed by "
                          "this one")
            else:
                why[q] = (f"queue row {q} is {row['status']}, not in progress as {owner}: its "
                          "lease expired and it was handed back")
        return why

    # -- looking and cleaning --------------------------------------------------------

    def rows(self, status: str | None = None, limit: int | None = None) -> list[QueueRow]:
        """Rows in claim order, optionally of one status, at most `limit`."""
        return [QueueRow.from_db(r) for r in queue_info.rows(self.store, status, limit)]

    def purge(self, status: str) -> int:
        """Delete every `done` or `failed` row; returns how many."""
        queue_info.check_status(status, PURGEABLE_STATUSES)
        return self.store.transact(lambda: self.store.queue.purge(status))

    def stats(self) -> dict[str, Any]:
        """Rows by status and operation; due and later pending rows; expired leases; the
        oldest pending row's queue time."""
        return queue_info.stats(self.store)


def fold(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """Coalesce one file's rows, oldest first, by the coalescing table of
    docs/consuming.md: the surviving row (which keeps the oldest id and queue time) and the
    ids of the rows it absorbed or that cancelled out."""
    survivor: dict[str, Any] | None = None
    dropped: list[str] = []
    for row in rows:
        if survivor is None:
            survivor = dict(row)
            continue
        result, meta = merged(survivor["operation"], _decode(survivor["metadata"]) or {},
                              row["operation"], _decode(row["metadata"]) or {})
        dropped.append(row["queue_id"])
        if result is None:
            dropped.append(survivor["queue_id"])
            survivor = None
            continue
        survivor.update(operation=result, priority=max(survivor["priority"], row["priority"]),
                        tenant_id=row["tenant_id"], branch=row["branch"],
                        watch_id=row["watch_id"],
                        metadata=json.dumps(meta, separators=(",", ":")) if meta
                        else row["metadata"])
    return survivor, dropped


def _ids(queue_ids: str | Sequence[str]) -> list[str]:
    """Queue ids given as one id (a string is one id, never a sequence of characters) or
    as a list of them."""
    if isinstance(queue_ids, str):
        return [queue_ids]
    if isinstance(queue_ids, (list, tuple, set, frozenset)) \
            and all(isinstance(q, str) for q in queue_ids):
        return list(queue_ids)
    raise UsageError(f"expected a queue id or a list of them, not {queue_ids!r}",
                     field="queue_id")


def _decode(text: str | None) -> dict[str, Any] | None:
    """A row's metadata as a dict; None where there is none, or it is no JSON object."""
    if not text:
        return None
    try:
        value, end = _json_raw(text)  # as wqscan writes it: compact, nothing around it
    except ValueError:
        end = -1
    if end != len(text):  # whitespace around it (another writer), or no JSON at all
        try:
            value = _json_object(text)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


_json_object = (_decoder := json.JSONDecoder()).decode
_json_raw = _decoder.raw_decode
