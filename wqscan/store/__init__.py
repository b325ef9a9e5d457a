"""The store: every table wqscan reads and writes, behind one interface (base.Store) over
one of two engines (contract.Engine), the embedded SQLite file (sqlite.py, the default)
and PostgreSQL (postgres.py), picked by engines.py from what `--db` names; the queue
layout found is one object (layouts.py). All SQL lives in this package."""
from __future__ import annotations

from .base import Store
from .layouts import LAYOUTS, WQM, WQSCAN, Layout
from .schema import SCHEMA_VERSION
from .sqlite import CONNECTION_CACHE_KIB, PAGE_SIZE
from .target import DEFAULT_PG_SCHEMA, Target

__all__ = ["Store", "Target", "DEFAULT_PG_SCHEMA", "SCHEMA_VERSION", "LAYOUTS", "WQSCAN", "WQM",
           "Layout", "CONNECTION_CACHE_KIB", "PAGE_SIZE"]
