"""Which database a command uses: a file path or a PostgreSQL URL, and how to name it."""
from __future__ import annotations

from typing import NamedTuple

from ..model import PG_SCHEMES

DEFAULT_PG_SCHEMA = "wqscan"


class Target(NamedTuple):
    """Which database a command uses: a file path or a PostgreSQL URL, the schema wqscan's
    tables live in there, whether a file on a network filesystem is accepted, and whether
    the connection serves a queue consumer (on PostgreSQL its prepared statements keep
    one generic plan: docs/scaling-out.md)."""

    db: str
    pg_schema: str = DEFAULT_PG_SCHEMA
    allow_network_db: bool = False
    consumer: bool = False

    @property
    def is_pg(self) -> bool:
        return self.db.startswith(PG_SCHEMES)

    @property
    def engine(self) -> str:
        return "postgresql" if self.is_pg else "sqlite"

    @property
    def name(self) -> str:
        """The database in messages: the file, or the URL without its password and the
        schema."""
        if not self.is_pg:
            return self.db
        from urllib.parse import urlsplit, urlunsplit  # costs an SQLite run's start-up time

        parts = urlsplit(self.db)
        url = self.db
        if parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        return f"{url} (schema {self.pg_schema})"

    def argv(self) -> list[str]:
        """The global options that name this database to another wqscan process."""
        out = ["--db", self.db]
        if self.is_pg and self.pg_schema != DEFAULT_PG_SCHEMA:
            out += ["--pg-schema", self.pg_schema]
        if self.allow_network_db:
            out.append("--allow-network-db")
        return out
