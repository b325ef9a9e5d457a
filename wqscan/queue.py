"""Writing operations into `ingestion_queue`, coalesced with the pending row of each file."""
from __future__ import annotations

import json
import os
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Iterable

from .clock import now_iso
from .model import Watch
from .records import Change
from .store import Store

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

#: A queue row as inserted: (queue_id, file_absolute_path, collection_name, tenant_id, branch,
#: operation, priority, watch_id, metadata, queued_timestamp, scheduled_at)
Row = tuple[str, str, str, str, str, str, int, "str | None", str, str, str]


def new_queue_ids(n: int) -> list[str]:
    """n random UUIDs of version 4, as text (random bytes drawn once for all)."""
    pool = os.urandom(16 * n).hex()
    ids = []
    for i in range(0, 32 * n, 32):
        h = pool[i:i + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return ids


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_ID_POOL = 4096


class RowMaker:
    """Builds the queue rows of one watch's changes, with the metadata of SPEC §4; the
    parts shared by every row of a batch are rendered once."""

    def __init__(self, watch: Watch, detected: str | None = None) -> None:
        self.watch = watch
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
        if not self.ids:
            self.ids = new_queue_ids(_ID_POOL)
        return (self.ids.pop(), self.prefix + c.path, self.watch.collection, tenant, branch,
                c.op, priority, self.watch.watch_id, self.metadata(c, moved_from), self.now,
                self.now)


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


def enqueue(store: Store, rows: list[Row]) -> int:
    """Write rows inside the caller's transaction; returns how many rows changed.

    Rows for files without a pending row are inserted; the others are merged into the
    pending row by the coalescing table. Rows in any other status are never touched.
    """
    written = 0
    batch: list[Row] = []
    paths: set[str] = set()
    for row in rows:
        if row[1] in paths:  # a second operation for one file: the first must land first
            written += _enqueue_batch(store, batch)
            batch, paths = [], set()
        batch.append(row)
        paths.add(row[1])
    return written + _enqueue_batch(store, batch)


def _enqueue_batch(store: Store, batch: list[Row]) -> int:
    if not batch:
        return 0
    inserted = store.insert_ops(batch)
    if inserted is None:
        return len(batch)
    conflicts = [row for row in batch if row[0] not in inserted]
    pending = store.pending_ops([row[1] for row in conflicts], conflicts[0][2])
    merged, removed, again = [], [], []
    for row in conflicts:
        old = pending.get(row[1])
        if old is None:  # the pending row went away meanwhile (claimed): insert after all
            again.append(row)
            continue
        queue_id, old_op, old_priority, old_meta_text = old
        result = coalesce(old_op, row[5])
        if result is None:
            removed.append(queue_id)
            continue
        meta = merged_metadata(old_op, _loads(old_meta_text), result, _loads(row[8]))
        merged.append((result, max(old_priority, row[6]), row[3], row[4], row[7],
                       json.dumps(meta, separators=(",", ":")), queue_id))
    store.delete_ops(removed)
    store.merge_ops(merged)
    if again:
        store.insert_ops(again)
    return len(inserted) + len(conflicts)


def annotate_move(store: Store, collection: str, path: str, moved_from: str) -> None:
    """Add `moved_from` to the pending ingest of `path`, if it is still pending."""
    pending = store.pending_op(path, collection)
    if pending is None or pending[1] != "ingest":
        return
    meta = _loads(pending[3])
    meta["moved_from"] = moved_from
    store.set_op_metadata(pending[0], json.dumps(meta, separators=(",", ":")))


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
