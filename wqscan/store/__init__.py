"""The store: every table wqscan reads and writes, behind one interface (base.Store) with
two engines, the embedded SQLite file (sqlite.py, the default) and PostgreSQL
(postgres.py), chosen by what `--db` names. All SQL lives in this package."""
from __future__ import annotations

from .base import DEFAULT_PG_SCHEMA, Store, Target
from .schema import LAYOUTS, SCHEMA_VERSION, WQM, WQSCAN, Layout
from .sqlite import CACHE_KIB, PAGE_SIZE

__all__ = ["Store", "Target", "DEFAULT_PG_SCHEMA", "SCHEMA_VERSION", "LAYOUTS", "WQSCAN", "WQM",
           "Layout", "CACHE_KIB", "PAGE_SIZE"]
