"""Which engine serves a target: PostgreSQL for a postgresql:// URL (loading psycopg only
then), the embedded SQLite file otherwise."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .target import Target

if TYPE_CHECKING:
    from .contract import Engine


def engine_for(target: Target) -> type[Engine]:
    """The Engine class of the database a target names."""
    if target.is_pg:
        from .postgres import PgEngine

        return PgEngine
    from .sqlite import SqliteEngine

    return SqliteEngine
