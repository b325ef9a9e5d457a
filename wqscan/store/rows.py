"""Records passed to and from `ingestion_queue`, in the same shape for both layouts."""
from __future__ import annotations

import json
from typing import Any, NamedTuple


class Row(NamedTuple):
    """A queue row to insert (its fields in the order of the wqscan layout's INSERT)."""

    queue_id: str  # unique within a batch; the wqscan layout's key
    file_absolute_path: str
    collection_name: str
    tenant_id: str
    branch: str
    operation: str
    priority: int
    watch_id: str | None
    metadata: str
    queued_timestamp: str  # ISO-8601 UTC with ms; the layout stores it in its own format
    scheduled_at: str


class Pending(NamedTuple):
    """The row a file has waiting: its key (queue_id, or the path in the one-row-per-path
    layout), operation, priority and metadata text."""

    key: str
    operation: str
    priority: int
    metadata: str | None


class Merge(NamedTuple):
    """What a waiting row becomes when a new operation is coalesced into it."""

    key: str
    operation: str
    priority: int
    tenant_id: str
    branch: str
    collection_name: str
    watch_id: str | None
    metadata: str


def json_object(text: str | None) -> dict[str, Any]:
    """The JSON object a column holds (metadata, settings); {} for anything else."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
