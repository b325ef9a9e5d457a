"""The watch record: one row of `watch_folders`, parsed and validated.

Rows may come from other tools with only the seed columns, so every column
beyond those has a default here as well as in the schema.
"""
from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from .errors import ConfigError

DEFAULT_IGNORES = (".git", ".hg", ".svn", "node_modules/", "__pycache__/", ".DS_Store",
                   "*.swp", "*~", ".#*")
CHECK_STAT_MODES = ("auto", "full", "minimal")
DEFAULT_PRIORITY = 5
DELETE_PRIORITY = 8
QUEUE_STATUSES = ("pending", "in_progress", "done", "failed")
PURGEABLE_STATUSES = ("done", "failed")
MAX_RETRIES = 3  # the failure that marks a queue row failed
PG_SCHEMES = ("postgresql://", "postgres://")  # a database named so is PostgreSQL's
DEFAULT_TIMEOUT = 600.0  # seconds: a scan that runs longer is abandoned


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
               "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
               "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """A number of bytes, with an optional unit as dd writes them: K, M, G, T (and KiB...)
    are powers of 1024, KB, MB, GB, TB powers of 1000 (`10MB`, `1.5G`, `4096`)."""
    number = text.strip().lower()
    unit = number.lstrip("0123456789._")
    number = number[:len(number) - len(unit)]
    try:
        value = float(number) * _SIZE_UNITS[unit.strip()]
    except (KeyError, ValueError):
        raise ValueError(f"not a size: {text!r} (bytes, or a number with K, M, G, T, KB, MB, "
                         "GB, TB)") from None
    return int(value)


class Watch(NamedTuple):
    """A watched tree and how to scan it (a NamedTuple, for start-up time; see records.py)."""

    watch_id: str
    path: str
    collection: str
    patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORES
    auto_ingest: bool = True
    recursive: bool = True
    recursive_depth: int | None = None
    debounce_seconds: float = 2.0
    poll_interval_seconds: float = 60.0
    enabled: bool = True
    metadata: Mapping[str, Any] = MappingProxyType({})  # read-only: shared by every default
    priority_rules: tuple[tuple[str, int], ...] = ()
    max_file_size: int | None = None
    use_gitignore: bool = True
    follow_symlinks: bool = False
    check_stat: str = "auto"
    threads: int | None = None  # directories listed at once; None: by filesystem type
    scan_timeout_seconds: float | None = None  # `run` abandons a scan after this long
    config_file: str | None = None  # the YAML file that defines this watch, if one does
    created_at: str | None = None
    updated_at: str | None = None
    last_scan: str | None = None

    @property
    def max_depth(self) -> int | None:
        """Depth limit as find's -maxdepth (root children = 1); non-recursive means 1."""
        if not self.recursive:
            return 1 if self.recursive_depth is None else min(1, self.recursive_depth)
        return self.recursive_depth

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Watch":
        """Parse a `watch_folders` row; a malformed value names the watch and the column."""
        wid = row.get("watch_id") or "?"

        def js(col: str, default: Any, kind: type) -> Any:
            raw = row.get(col)
            if raw is None or raw == "":
                return default
            try:
                value = json.loads(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"watch {wid}: column {col} is not valid JSON: '{raw}'") from None
            if not isinstance(value, kind):
                raise ConfigError(f"watch {wid}: column {col} must hold a JSON {kind.__name__}")
            return value

        def num(col: str, default: Any, kind: type) -> Any:
            raw = row.get(col)
            if raw is None:
                return default
            try:
                return kind(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"watch {wid}: column {col} must be a number, not '{raw}'") \
                    from None

        patterns = js("patterns", [], list)
        ignores = js("ignore_patterns", [], list)
        rules = js("priority_rules", [], list)
        for p in (*patterns, *ignores):
            if not isinstance(p, str):
                raise ConfigError(f"watch {wid}: patterns must be strings, not {p!r}")
        try:
            priority_rules = tuple((str(g), int(n)) for g, n in rules)
        except (TypeError, ValueError):
            raise ConfigError(f"watch {wid}: priority_rules must be [glob, number] pairs") from None
        check_stat = row.get("check_stat") or "auto"
        if check_stat not in CHECK_STAT_MODES:
            raise ConfigError(f"watch {wid}: check_stat must be one of "
                              f"{', '.join(CHECK_STAT_MODES)}, not '{check_stat}'")
        for col in ("path", "collection"):
            if not row.get(col):
                raise ConfigError(f"watch {wid}: column {col} is empty")
        return cls(
            watch_id=str(row["watch_id"]),
            path=str(row["path"]),
            collection=str(row["collection"]),
            patterns=tuple(patterns),
            ignore_patterns=tuple(ignores),
            auto_ingest=bool(num("auto_ingest", 1, int)),
            recursive=bool(num("recursive", 1, int)),
            recursive_depth=num("recursive_depth", None, int),
            debounce_seconds=num("debounce_seconds", 2.0, float),
            poll_interval_seconds=num("poll_interval_seconds", 60.0, float),
            enabled=bool(num("enabled", 1, int)),
            metadata=js("metadata", {}, dict),
            priority_rules=priority_rules,
            max_file_size=num("max_file_size", None, int),
            use_gitignore=bool(num("use_gitignore", 1, int)),
            follow_symlinks=bool(num("follow_symlinks", 0, int)),
            check_stat=check_stat,
            threads=num("threads", None, int),
            scan_timeout_seconds=num("scan_timeout_seconds", None, float),
            config_file=row.get("config_file"),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
            last_scan=row.get("last_scan"),
        )

    def to_row(self) -> dict[str, Any]:
        """The `watch_folders` columns of this watch (without the bookkeeping times)."""
        return {
            "watch_id": self.watch_id,
            "path": self.path,
            "collection": self.collection,
            "patterns": json.dumps(list(self.patterns)),
            "ignore_patterns": json.dumps(list(self.ignore_patterns)),
            "auto_ingest": int(self.auto_ingest),
            "recursive": int(self.recursive),
            "recursive_depth": self.recursive_depth,
            "debounce_seconds": self.debounce_seconds,
            "poll_interval_seconds": self.poll_interval_seconds,
            "enabled": int(self.enabled),
            "metadata": json.dumps(dict(self.metadata)),
            "priority_rules": json.dumps([list(r) for r in self.priority_rules]),
            "max_file_size": self.max_file_size,
            "use_gitignore": int(self.use_gitignore),
            "follow_symlinks": int(self.follow_symlinks),
            "check_stat": self.check_stat,
            "threads": self.threads,
            "scan_timeout_seconds": self.scan_timeout_seconds,
            "config_file": self.config_file,
        }

    def to_json(self) -> dict[str, Any]:
        """Settings as a JSON-friendly dict (for `list --json` and `show --json`)."""
        out = {k: v for k, v in self.to_row().items()}
        for k in ("patterns", "ignore_patterns", "metadata", "priority_rules"):
            out[k] = json.loads(out[k])
        for k in ("auto_ingest", "recursive", "enabled", "use_gitignore", "follow_symlinks"):
            out[k] = bool(out[k])
        out.update(created_at=self.created_at, updated_at=self.updated_at,
                   last_scan=self.last_scan)
        return out
