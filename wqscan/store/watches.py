"""Rows of `watch_folders`; the settings its table has no column for live in
`wq_watch_settings` (a JSON object per watch), so another program's table is never altered.

Callers see every setting in wqscan's terms (docs/usage.md): `recursive_depth` as find's
-maxdepth (None: unlimited) and times as ISO-8601 with milliseconds. The
workspace-qdrant-mcp layout's table holds that project's terms: `recursive_depth` -1 for
unlimited and N for N levels below the root (wqscan's depth minus one), times as
`YYYY-MM-DD HH:MM:SS`.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .rows import json_object
from .schema import WATCH_SETTINGS

if TYPE_CHECKING:
    from .contract import Tables as Store

_TIMES = ("created_at", "updated_at", "last_scan")


class WatchRows:
    """The watch part of `Store`."""

    def watch_rows(self: "Store") -> list[dict[str, Any]]:
        return self._watches("SELECT * FROM watch_folders ORDER BY watch_id", ())

    def watch_row(self: "Store", watch_id: str) -> dict[str, Any] | None:
        rows = self._watches("SELECT * FROM watch_folders WHERE watch_id = ?", (watch_id,))
        return rows[0] if rows else None

    def watch_ids(self: "Store") -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT watch_id FROM watch_folders")}

    def insert_watch(self: "Store", row: dict[str, Any]) -> None:
        """Insert a watch given in wqscan's terms (inside the caller's transaction)."""
        folder, extra = self._split(row)
        for name in self.layout.required_watch_columns:
            if folder.get(name) is None:
                raise UsageError(f"cannot add a watch to {self.path}: its watch_folders "
                                 f"column {name} is NOT NULL without a default, and wqscan "
                                 "has no value for it")
        self.conn.execute(f"INSERT INTO watch_folders ({', '.join(folder)}) VALUES "
                          f"({', '.join('?' for _ in folder)})", tuple(folder.values()))
        if extra:
            self.conn.execute("INSERT INTO wq_watch_settings (watch_id, settings) VALUES (?, ?)",
                              (row["watch_id"], json.dumps(extra)))

    def update_watch(self: "Store", watch_id: str, fields: dict[str, Any]) -> None:
        """Overwrite settings of a watch, given in wqscan's terms."""
        folder, extra = self._split(fields)
        if folder:
            sets = ", ".join(f"{c} = ?" for c in folder)
            self.conn.execute(f"UPDATE watch_folders SET {sets} WHERE watch_id = ?",
                              (*folder.values(), watch_id))
        if extra:
            old = self.conn.execute("SELECT settings FROM wq_watch_settings WHERE watch_id = ?",
                                    (watch_id,)).fetchall()
            merged = {**json_object(old[0][0] if old else None), **extra}
            self.conn.execute("INSERT INTO wq_watch_settings (watch_id, settings) VALUES (?, ?) "
                              "ON CONFLICT (watch_id) DO UPDATE SET settings = excluded.settings",
                              (watch_id, json.dumps(merged)))

    def delete_watch(self: "Store", watch_id: str) -> None:
        """Remove a watch with its snapshot, labels, directory cache, statistics, hook runs
        and settings (queue rows stay)."""
        for table in ("watch_folders", "wq_snapshot", "wq_labels", "wq_dircache", "wq_watch_stats",
                      "wq_watch_settings", "wq_hook_runs"):
            self.conn.execute(f"DELETE FROM {table} WHERE watch_id = ?", (watch_id,))

    def _watches(self: "Store", sql: str, args: tuple) -> list[dict[str, Any]]:
        rows = self._rows(sql, args)
        extra: dict[str, str] = {}
        if rows and not WATCH_SETTINGS <= self.layout.watch_columns and self.own_tables():
            extra = dict(self.conn.execute("SELECT watch_id, settings FROM wq_watch_settings"))
        out = []
        for row in rows:
            row = {**json_object(extra.get(row["watch_id"])), **row}
            row["recursive_depth"] = self.layout.depth_in(row.get("recursive_depth"))
            out.append(row)
        return out

    def _split(self: "Store", fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Settings in wqscan's terms -> (columns of watch_folders, the rest)."""
        columns = self.layout.watch_columns
        folder, extra = {}, {}
        for name, value in fields.items():
            if name not in WATCH_SETTINGS:
                raise ValueError(f"not a watch setting: {name}")
            if name in columns:
                if name == "recursive_depth":
                    value = self.layout.depth_out(value)
                elif name in _TIMES and value is not None:
                    value = self.stamp(value)
            (folder if name in columns else extra)[name] = value
        return folder, extra

