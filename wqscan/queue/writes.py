"""Writing operations into `ingestion_queue`, coalesced with the pending row of each file."""
from __future__ import annotations

import json
import os
import time
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Iterable, NamedTuple

from ..clock import now_iso
from ..model import Watch
from ..scan.records import Change
from ..store import Store
from ..store.rows import Merge, Row, json_object

# (pending, new) -> result; None removes the row; pairs not listed give the new operation.
_COALESCE: dict[tuple[str, str], str | None] = {
    ("ingest", "update"): "ingest",
    ("ingest", "delete"): None,
    ("update", "update"): "update",
    ("update", "delete"): "delete",
    ("delete", "ingest"): "update",
}
# metadata keys wqscan writes; a watch's own metadata cannot override them
_OWN_KEYS = frozenset({"watch_id", "relative_path", "size", "mtime_ns", "content_hash",
                       "previous_hash", "detected_at", "source", "moved_from"})

_ID_POOL = 4096
_make_row = tuple.__new__


class _Ids:
    """Queue ids that sort by time (UUID version 7, RFC 9562): a millisecond timestamp, then
    a counter seeded at random for each draw, so that the ids of one process only grow and a
    first scan's inserts land at the end of the primary key's B-tree rather than on a random
    page (docs/performance.md). Unique across hosts: 73 random bits per draw."""

    def __init__(self) -> None:
        self.last = 0  # the largest id drawn, as a number

    def draw(self, n: int) -> list[str]:
        """n new ids in increasing order."""
        ms = time.time_ns() // 1_000_000
        top = (ms << 80) | (7 << 76) | (int.from_bytes(os.urandom(2), "big") & 0xFFF) << 64
        start = top | (2 << 62) | (int.from_bytes(os.urandom(8), "big") >> 3)
        if start <= self.last:  # the same millisecond, or a clock set back: count on
            start = self.last + 1
        self.last = start + n - 1
        low = start & 0xFFFF_FFFF_FFFF  # the last 12 hex digits: all that changes, mostly
        if low + n > 0x1_0000_0000_0000:  # ... unless they carry
            return [_text(start + i) for i in range(n)]
        head = _text(start)[:-12]
        return [f"{head}{v:012x}" for v in range(low, low + n)]


def _text(v: int) -> str:
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_queue_ids = _Ids().draw


class RowMaker:
    """Builds the queue rows of one watch's changes, with the metadata docs/consuming.md lists; the
    parts shared by every row of a batch are rendered once."""

    def __init__(self, watch: Watch, detected: str | None = None, expected: int = _ID_POOL
                 ) -> None:
        self.watch = watch
        self.expected = max(1, min(expected, _ID_POOL))  # ids drawn at first: rows to come
        self.now = detected or now_iso()
        extra = {k: v for k, v in watch.metadata.items() if k not in _OWN_KEYS}
        self.head = (json.dumps(extra, separators=(",", ":"))[:-1] + ",") if extra else "{"
        self.head += f'"watch_id":{_quote(watch.watch_id)},"relative_path":'
        self.tail = f',"detected_at":"{self.now}","source":"wqscan"}}'
        self.prefix = watch.path.rstrip("/") + "/"
        self.ids: list[str] = []

    def metadata(self, c: Change, moved_from: str | None = None) -> str:
        text = (f'{self.head}{_quote(c.path)},"size":{c.size},"mtime_ns":{c.mtime_ns},'
                f'"content_hash":"{c.hash.hex()}"')
        if c.op == "update" and c.previous_hash is not None:
            text += f',"previous_hash":"{c.previous_hash.hex()}"'
        if moved_from is not None:
            text += f',"moved_from":{_quote(moved_from)}'
        return text + self.tail

    def row(self, c: Change, tenant: str, branch: str, priority: int,
            moved_from: str | None = None) -> Row:
        # tuple.__new__ directly: a NamedTuple's own __new__ is one more Python call per row
        return _make_row(Row, (self._ids(1).pop(), self.prefix + c.path, self.watch.collection,
                               tenant, branch, c.op, priority, self.watch.watch_id,
                               self.metadata(c, moved_from), self.now, self.now))

    def ingests(self, changes: list[Change], tenant: str, branch: str,
                priorities: Iterable[int]) -> list[Row]:
        """The rows `row` gives for ingests that pair with nothing (a first scan's files),
        with their priorities in order, rendered in one loop: the Python of a call or two
        per row is a first scan's cost."""
        ids = self._ids(len(changes))
        taken = ids[:-len(changes) - 1:-1]
        del ids[-len(changes):]
        head, tail, prefix, now = self.head, self.tail, self.prefix, self.now
        collection, watch_id = self.watch.collection, self.watch.watch_id
        return [_make_row(Row, (i, prefix + c.path, collection, tenant, branch, "ingest",
                                p, watch_id,
                                f'{head}{_quote(c.path)},"size":{c.size},"mtime_ns":'
                                f'{c.mtime_ns},"content_hash":"{c.hash.hex()}"{tail}',
                                now, now))
                for i, c, p in zip(taken, changes, priorities)]

    def _ids(self, n: int) -> list[str]:
        """The pool of ids, holding at least n; popped from the end, in increasing order."""
        if len(self.ids) < n:  # ids drawn later are larger: they go after those left
            self.ids[:0] = new_queue_ids(max(n - len(self.ids), self.expected))[::-1]
            self.expected = _ID_POOL
        return self.ids


def coalesce(pending: str, new: str) -> str | None:
    """The operation a pending row becomes when `new` arrives; None: the row goes away."""
    return _COALESCE.get((pending, new), new)


def merged_metadata(pending_op: str, pending_meta: dict[str, Any], result: str,
                    new_meta: dict[str, Any]) -> dict[str, Any]:
    """The new row's metadata, with `previous_hash` kept as the hash the consumer last saw.

    A pending delete that absorbed an update keeps that update's `previous_hash`, so a
    file deleted and re-created still carries the hash the consumer holds.
    """
    meta = dict(new_meta)
    seen = pending_meta.get("previous_hash") if pending_op in ("update", "delete") else None
    if pending_op == "delete" and seen is None:
        seen = pending_meta.get("content_hash")
    if result == "update" and seen is not None:
        meta["previous_hash"] = seen
    elif result == "delete" and pending_op == "update" and seen is not None:
        meta["previous_hash"] = seen
    elif result != "update":
        meta.pop("previous_hash", None)
    return meta


def merged(pending_op: str, pending_meta: dict[str, Any], new_op: str,
           new_meta: dict[str, Any], seen_is_consumers: bool = True
           ) -> tuple[str | None, dict[str, Any]]:
    """What a waiting row becomes when `new_op` arrives: its operation (None: the row goes
    away) and metadata. Where `previous_hash` is what the consumer last saw
    (`seen_is_consumers`), an update that would bring the file back to that content (`git
    checkout B`, then back to A, before it caught up) leaves nothing to do."""
    result = coalesce(pending_op, new_op)
    if result is None:
        return None, {}
    meta = merged_metadata(pending_op, pending_meta, result, new_meta)
    seen = meta.get("previous_hash")
    if seen_is_consumers and result == "update" and seen is not None \
            and seen == meta.get("content_hash"):
        return None, meta
    return result, meta


class Enqueued(NamedTuple):
    """What writing operations did: rows inserted, merged or removed (`changed`), and of
    those the waiting rows an operation cancelled (`cancelled`: an ingest a delete undid,
    a change back to what the consumer has)."""

    changed: int = 0
    cancelled: int = 0

    def __add__(self, other: "Enqueued") -> "Enqueued":  # type: ignore[override]
        return Enqueued(self.changed + other.changed, self.cancelled + other.cancelled)


def enqueue(store: Store, rows: list[Row]) -> Enqueued:
    """Write rows inside the caller's transaction.

    Rows for files without a waiting row are inserted; the others are merged into the
    waiting row by the coalescing table. Rows in any other status are never touched.
    """
    done = Enqueued()
    batch: list[Row] = []
    paths: set[str] = set()
    for row in rows:
        if row.file_absolute_path in paths:  # a second operation for one file: the first
            done += _enqueue_batch(store, batch)  # must land first
            batch, paths = [], set()
        batch.append(row)
        paths.add(row.file_absolute_path)
    return done + _enqueue_batch(store, batch)


def _enqueue_batch(store: Store, batch: list[Row]) -> Enqueued:
    if not batch:
        return Enqueued()
    queue, layout = store.queue, store.layout
    inserted = queue.insert(batch)
    if inserted is None:
        return Enqueued(len(batch))
    conflicts = [row for row in batch if row.queue_id not in inserted]
    waiting = queue.pending([row.file_absolute_path for row in conflicts],
                            conflicts[0].collection_name)
    written = len(inserted)
    merges, removed, again = [], [], []
    for row in conflicts:
        old = waiting.get(row.file_absolute_path)
        if old is None:  # the waiting row went away meanwhile (claimed): insert after all
            again.append(row)
            continue
        result, meta = merged(old.operation, json_object(old.metadata), row.operation,
                              json_object(row.metadata), layout.seen_is_consumers)
        if result is None:
            removed.append(old.key)
        elif result != old.operation or layout.rewrites_unchanged:
            merges.append(Merge(old.key, result, max(old.priority, row.priority),
                                row.tenant_id, row.branch, row.collection_name, row.watch_id,
                                json.dumps(meta, separators=(",", ":"))))
        else:
            continue  # the row already says what to do, and its consumer may be reading it
        written += 1
    queue.remove(removed)
    queue.merge(merges)
    if again:
        went = queue.insert(again)
        written += len(again) if went is None else len(went)
    return Enqueued(written, len(removed))


def annotate_move(store: Store, collection: str, path: str, moved_from: str) -> None:
    """Add `moved_from` to the row of a move's arrival at `path`, written in an earlier
    transaction of the scan, if it is still waiting: an ingest, or the update it became by
    meeting a waiting delete (as when both halves are written together)."""
    waiting = store.queue.pending_one(path, collection)
    if waiting is None or waiting.operation not in ("ingest", "update"):
        return
    meta = json_object(waiting.metadata)
    meta["moved_from"] = moved_from
    store.queue.set_metadata(waiting.key, json.dumps(meta, separators=(",", ":")))

