"""PostgreSQL as another program sees a test's schema: a psycopg connection of its own."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg
    from helpers.db import Db


def pg_connect(database: "Db") -> "psycopg.Connection":
    """A psycopg connection of its own to the schema of `database` (autocommit)."""
    import psycopg
    from psycopg import sql

    conn = psycopg.connect(database.target.db, autocommit=True, connect_timeout=10)
    conn.execute(sql.SQL("SET search_path TO {}").format(
        sql.Identifier(database.target.pg_schema)))
    return conn
