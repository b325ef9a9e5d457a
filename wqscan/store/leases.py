"""Rows of `wq_leases`: which process scans a watch, until when."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Store


class LeaseRows:
    """The lease part of `Store`."""

    def lease(self: "Store", watch_id: str) -> tuple[str, str, str] | None:
        """(owner, acquired_at, expires_at) of the lease on a watch, if any."""
        if not self.own_tables():
            return None
        for row in self.conn.execute("SELECT owner, acquired_at, expires_at FROM wq_leases "
                                     "WHERE watch_id = ?", (watch_id,)):
            return row
        return None

    def put_lease(self: "Store", watch_id: str, owner: str, now: str, expires: str) -> None:
        self.conn.execute("INSERT INTO wq_leases (watch_id, owner, acquired_at, expires_at) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (watch_id) DO UPDATE SET "
                          "owner = excluded.owner, acquired_at = excluded.acquired_at, "
                          "expires_at = excluded.expires_at", (watch_id, owner, now, expires))

    def renew_lease(self: "Store", watch_id: str, owner: str, expires: str) -> None:
        self.conn.execute("UPDATE wq_leases SET expires_at = ? WHERE watch_id = ? AND owner = ?",
                          (expires, watch_id, owner))

    def drop_lease(self: "Store", watch_id: str, owner: str) -> None:
        self.conn.execute("DELETE FROM wq_leases WHERE watch_id = ? AND owner = ?",
                          (watch_id, owner))
