"""Writing operations into `ingestion_queue`, coalesced with the pending row of each file."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from .gitinfo import Project
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


@dataclass(frozen=True, slots=True)
class Op:
    """One operation to queue for a file."""

    path: str  # absolute
    operation: str
    priority: int
    tenant_id: str
    branch: str
    metadata: dict[str, Any]


def make_op(watch: Watch, change: Change, project: Project, priority: int,
            detected: str) -> Op:
    """The queue operation for a change the scanner found, with the metadata of SPEC §4."""
    meta = dict(watch.metadata)
    meta.update(watch_id=watch.watch_id, relative_path=change.path, size=change.size,
                mtime_ns=change.mtime_ns, content_hash=change.hash.hex(), detected_at=detected,
                source="wqscan")
    if change.op == "update" and change.previous_hash is not None:
        meta["previous_hash"] = change.previous_hash.hex()
    return Op(os.path.join(watch.path, change.path), change.op, priority, project.tenant_id,
              project.branch, meta)


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


def enqueue(store: Store, collection: str, watch_id: str | None, ops: Iterable[Op]) -> int:
    """Write `ops` inside the caller's transaction; returns how many rows changed.

    A file with a pending row gets that row merged by the coalescing table; rows in
    any other status are never touched.
    """
    written = 0
    check = store.has_pending(collection)
    fresh: list[tuple[str, str, str, str, str, int, str | None, str]] = []
    fresh_paths: set[str] = set()
    for op in ops:
        if op.path in fresh_paths:  # a second operation for one file in one batch
            store.insert_ops(fresh)
            fresh.clear()
            fresh_paths.clear()
            check = True
        pending = store.pending_op(op.path, collection) if check else None
        if pending is None:
            fresh.append((op.path, collection, op.tenant_id, op.branch, op.operation,
                          op.priority, watch_id, json.dumps(op.metadata)))
            fresh_paths.add(op.path)
            written += 1
            continue
        queue_id, old_op, old_priority, old_meta_text = pending
        result = coalesce(old_op, op.operation)
        if result is None:
            store.delete_op(queue_id)
        else:
            old_meta = _loads(old_meta_text)
            meta = merged_metadata(old_op, old_meta, result, op.metadata)
            store.merge_op(queue_id, result, max(old_priority, op.priority), op.tenant_id,
                           op.branch, watch_id, json.dumps(meta))
        written += 1
    if fresh:
        store.insert_ops(fresh)
    return written


def annotate_move(store: Store, collection: str, path: str, moved_from: str) -> None:
    """Add `moved_from` to the pending ingest of `path`, if it is still pending."""
    pending = store.pending_op(path, collection)
    if pending is None or pending[1] != "ingest":
        return
    meta = _loads(pending[3])
    meta["moved_from"] = moved_from
    store.set_op_metadata(pending[0], json.dumps(meta))


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
