"""wqscan: keep an ingestion queue (an SQLite file, or PostgreSQL) in step with directory
trees by polling.

The Python API mirrors the command line: `wqscan.store.Store` opens a database,
`wqscan.watches` registers trees, `wqscan.reconcile.reconcile` scans them, and
`wqscan.QueueClient` consumes the queue.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # imported on first use: the command line starts without loading the consumer side
    if name == "QueueClient":
        from .queue.consumer import QueueClient

        return QueueClient
    raise AttributeError(f"module 'wqscan' has no attribute {name!r}")
