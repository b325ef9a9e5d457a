"""The watch record: one row of `watch_folders`, parsed and validated.

Rows may come from other tools with only the seed columns, so every column
beyond those has a default here as well as in the schema.
"""
from __future__ import annotations

import json
from collections import namedtuple
from types import MappingProxyType
from typing import Any, Mapping

from .errors import ConfigError
from .settings import DEFAULT_IGNORES, STORED, Setting

DEFAULT_PRIORITY = 5
DELETE_PRIORITY = 8
QUEUE_STATUSES = ("pending", "in_progress", "done", "failed")
PURGEABLE_STATUSES = ("done", "failed")
MAX_RETRIES = 3  # the failure that marks a queue row failed
PG_SCHEMES = ("postgresql://", "postgres://")  # a database named so is PostgreSQL's
DEFAULT_TIMEOUT = 600.0  # seconds: a scan that runs longer is abandoned
_BOOKKEEPING = ("config_file", "created_at", "updated_at", "last_scan")
_EMPTY: dict[str, Any] = {"globs": (), "rules": (), "json": MappingProxyType({})}

# The record's fields: the watch's identity, its settings (SETTINGS, in order) and the
# bookkeeping columns; a namedtuple, for start-up time (see scan/records.py). Every field
# after the collection (the first setting) has a default: the ignore list's is the default
# list, a list or object setting's is empty.
_DEFAULTS = [DEFAULT_IGNORES if s.name == "ignores" else _EMPTY.get(s.kind, s.default)
             for s in STORED if s.name != "collection"]
_Fields = namedtuple("_Fields", ("watch_id", "path", *(s.name for s in STORED), *_BOOKKEEPING),
                     defaults=(*_DEFAULTS, *(None for _ in _BOOKKEEPING)))


class Watch(_Fields):
    """A watched tree and how to scan it: `watch_id`, `path`, one attribute per setting of
    SETTINGS (by its name: `settle`, `interval`, ...) and the bookkeeping columns."""

    __slots__ = ()

    @property
    def depth_limit(self) -> int | None:
        """Depth limit as find's -maxdepth (root children = 1); non-recursive means 1."""
        if not self.recursive:
            return 1 if self.max_depth is None else min(1, self.max_depth)
        return self.max_depth

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Watch":
        """Parse a `watch_folders` row; a malformed value names the watch and the column."""
        wid = row.get("watch_id") or "?"
        for col in ("path", "collection"):
            if not row.get(col):
                raise ConfigError(f"watch {wid}: column {col} is empty")
        values = {s.name: _decoded(wid, s, row.get(s.column)) for s in STORED}
        return cls(watch_id=str(row["watch_id"]), path=str(row["path"]), **values,
                   **{k: row.get(k) for k in _BOOKKEEPING})

    def to_row(self) -> dict[str, Any]:
        """The `watch_folders` columns of this watch (without the bookkeeping times)."""
        row = {"watch_id": self.watch_id, "path": self.path}
        for s in STORED:
            value = getattr(self, s.name)
            if s.kind == "bool":
                value = int(value)
            elif s.kind in _JSON_KINDS:
                value = json.dumps(_plain(value))
            row[s.column] = value
        return {**row, "config_file": self.config_file}

    def to_json(self) -> dict[str, Any]:
        """Settings as a JSON-friendly dict, by column (for `list --json` and `show --json`)."""
        out: dict[str, Any] = {"watch_id": self.watch_id, "path": self.path}
        for s in STORED:
            value = getattr(self, s.name)
            out[s.column] = _plain(value) if s.kind in _JSON_KINDS else value  # type: ignore
        return {**out, **{k: getattr(self, k) for k in _BOOKKEEPING}}


_JSON_KINDS = ("globs", "rules", "json")  # stored as JSON text


def _plain(value: Any) -> Any:
    """Tuples as lists and read-only mappings as dicts, as json.dumps writes them."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _decoded(wid: str, s: Setting, raw: Any) -> Any:
    """A column's value as the watch record holds it."""
    if s.kind in _JSON_KINDS:
        kind = dict if s.kind == "json" else list
        value = _json(wid, s.column, raw, kind)
        if value is None:
            return _EMPTY[s.kind] if s.name != "ignores" else ()
        if s.kind == "globs":
            for p in value:
                if not isinstance(p, str):
                    raise ConfigError(f"watch {wid}: patterns must be strings, not {p!r}")
            return tuple(value)
        if s.kind == "rules":
            try:
                return tuple((str(g), int(n)) for g, n in value)
            except (TypeError, ValueError):
                raise ConfigError(f"watch {wid}: priority_rules must be [glob, number] "
                                  "pairs") from None
        return value
    if s.kind in ("text", "choice"):
        value = raw or s.default
        if s.kind == "choice" and value not in s.choices:
            raise ConfigError(f"watch {wid}: {s.column} must be one of "
                              f"{', '.join(s.choices)}, not '{value}'")
        return str(value)
    if raw is None:
        return s.default
    try:
        value = (float if s.kind == "seconds" else int)(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"watch {wid}: column {s.column} must be a number, not '{raw}'") \
            from None
    return bool(value) if s.kind == "bool" else value


def _json(wid: str, col: str | None, raw: Any, kind: type) -> Any:
    """A JSON column's value (None when empty), of the kind it must hold."""
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"watch {wid}: column {col} is not valid JSON: '{raw}'") from None
    if not isinstance(value, kind):
        raise ConfigError(f"watch {wid}: column {col} must hold a JSON {kind.__name__}")
    return value
