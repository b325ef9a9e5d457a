"""Rows of `wq_leases`: which process scans a watch (its holder, in the `owner` column),
until when."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .contract import Tables


class LeaseRows:
    """The lease part of `Store`."""

    def lease(self: "Tables", watch_id: str) -> tuple[str, str, str] | None:
        """(holder, acquired_at, expires_at) of the lease on a watch, if any; inside a
        write, every other taker of that lease waits for its end."""
        if not self.own_tables():
            return None
        self.engine.lock_lease(watch_id)
        for row in self.conn.execute("SELECT owner, acquired_at, expires_at FROM wq_leases "
                                     "WHERE watch_id = ?", (watch_id,)):
            return row
        return None

    def put_lease(self: "Tables", watch_id: str, holder: str, now: str, expires: str) -> None:
        self.conn.execute("INSERT INTO wq_leases (watch_id, owner, acquired_at, expires_at) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (watch_id) DO UPDATE SET "
                          "owner = excluded.owner, acquired_at = excluded.acquired_at, "
                          "expires_at = excluded.expires_at", (watch_id, holder, now, expires))

    def renew_lease(self: "Tables", watch_id: str, holder: str, expires: str) -> None:
        self.conn.execute("UPDATE wq_leases SET expires_at = ? WHERE watch_id = ? AND owner = ?",
                          (expires, watch_id, holder))

    def drop_lease(self: "Tables", watch_id: str, holder: str) -> None:
        self.conn.execute("DELETE FROM wq_leases WHERE watch_id = ? AND owner = ?",
                          (watch_id, holder))
