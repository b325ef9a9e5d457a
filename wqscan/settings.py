"""The watch settings, each declared once: its name (the `Watch` attribute, the keyword of
`add_watch` and `set_watch`), the `watch_folders` column it is stored in, its kind,
default and range, its command-line option, its YAML key and how `show` renders it.

The command line's `add` and `set`, the YAML loader, `show`, `list --json`, the watch
record and the store all derive from `SETTINGS`: a new setting is a row here plus the
code that uses it.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

DEFAULT_IGNORES = (".git", ".hg", ".svn", "node_modules/", "__pycache__/", ".DS_Store",
                   "*.swp", "*~", ".#*")
CHECK_STAT_MODES = ("auto", "full", "minimal")
MAX_SECONDS = 315_360_000  # ten years: intervals, settle times and timeouts
MAX_DEPTH = 100_000
MAX_FILE_SIZE = 2 ** 62
MAX_THREADS = 256
MAX_NESTING = 64  # of a metadata object


class Setting(NamedTuple):
    """One watch setting. `kind` says how a value is parsed, checked, stored and shown:
    text, choice, bool, int, seconds, size, globs (a list of patterns), rules (glob,
    priority pairs) or json (an object)."""

    name: str
    column: str | None  # None: folded into another setting's column (default_ignores)
    kind: str
    default: Any
    flag: str  # the option of `set` (and of `add`, unless add_flag says otherwise)
    help: str  # `set`'s help (and `add`'s, unless add_help says otherwise)
    label: str = ""  # `show`'s label; empty: not shown on a line of its own
    show: str = "text"  # how `show` renders the value (see cli/text.py)
    low: float | None = None
    high: float | None = None
    above_low: bool = False  # the value must be above `low`, not merely at least
    unset: str = ""  # the word `set` takes for "no value" (the default None)
    yaml: str = ""  # the YAML key, when it is not the name
    add_flag: str = ""  # `add`'s option when it differs ("-": none)
    add_help: str = ""
    clear_flag: str = ""  # `set`'s option that empties a list setting
    clear_help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()  # the values a choice setting takes

    @property
    def yaml_key(self) -> str:
        return self.yaml or self.name

    def check(self, value: Any) -> str | None:
        """What is wrong with a value of this setting, in the option's words; None: fine."""
        if value is None:
            return None
        if self.kind == "choice":
            ok = value in self.choices
            return None if ok else f"{self.flag} must be one of {', '.join(self.choices)}"
        if self.kind == "json":
            if not isinstance(value, dict):
                return f"{self.flag} must be a JSON object"
            if not plain_json(value):
                return (f"{self.flag} must hold plain JSON: no NaN or infinity, nested at most "
                        f"{MAX_NESTING} deep")
            return None
        if self.low is None:
            return None
        low_ok = value > self.low if self.above_low else value >= self.low
        if low_ok and (self.high is None or value <= self.high):
            return None
        years = " (10 years)" if self.high == MAX_SECONDS else ""
        if self.above_low:
            return f"{self.flag} must be above {self.low:g} and at most {self.high}{years}, " \
                   f"not {value}"
        return f"{self.flag} must be between {self.low:g} and {self.high}{years}, not {value}"


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


def plain_json(value: Any, depth: int = 0) -> bool:
    """JSON that every consumer can read back: finite numbers, bounded nesting."""
    if depth > MAX_NESTING:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v, depth + 1) for v in value)
    return True


_AUTO_THREADS = "16 on network and FUSE mounts, one per core (at most 8) otherwise"

SETTINGS: tuple[Setting, ...] = (
    Setting("collection", "collection", "text", None, "--collection",
            "another collection: deletes are queued into the old one and the next scan "
            "ingests every file into the new one", "collection",
            add_help="collection its files go to"),
    Setting("enabled", "enabled", "bool", True, "--enabled", "scheduled scans on (or off)",
            "enabled", "yes", add_flag="--disabled", add_help="add it disabled"),
    Setting("patterns", "patterns", "globs", (), "--pattern",
            "include pattern (repeatable): replaces the include list", "patterns", "list",
            add_help="include pattern, gitignore syntax (repeatable; default: every file)",
            clear_flag="--all-files", clear_help="no include pattern: every file",
            metavar="GLOB"),
    Setting("ignores", "ignore_patterns", "globs", (), "--ignore",
            "ignore pattern (repeatable): replaces those added to the defaults", "ignore",
            "list", yaml="ignore", add_help="ignore pattern added to the default list "
            "(repeatable)", clear_flag="--no-ignores",
            clear_help="none added to the default ignore list", metavar="GLOB"),
    Setting("default_ignores", None, "bool", True, "--default-ignores",
            "keep (or drop) the default ignore list", add_flag="--no-default-ignores",
            add_help="do not add the default ignore list"),
    Setting("recursive", "recursive", "bool", True, "--recursive",
            "walk subdirectories (or direct children only)", "recursive", "yes",
            add_flag="--no-recursive", add_help="direct children only"),
    Setting("max_depth", "recursive_depth", "int", None, "--max-depth", "as find's -maxdepth",
            "max depth", "depth", low=1, high=MAX_DEPTH, unset="unlimited",
            add_help="as find's -maxdepth: the root's children have depth 1", metavar="N"),
    Setting("interval", "poll_interval_seconds", "seconds", 60.0, "--interval",
            "poll interval", "interval", "secs", low=0, high=MAX_SECONDS, above_low=True,
            add_help="poll interval for the scheduler (default 60)", metavar="SECONDS"),
    Setting("settle", "debounce_seconds", "seconds", 2.0, "--settle",
            "defer files modified this recently", "settle", "secs", low=0, high=MAX_SECONDS,
            add_help="defer files modified this recently (default 2)", metavar="SECONDS"),
    Setting("priority_rules", "priority_rules", "rules", (), "--priority",
            "priority rule (repeatable): replaces the rules", "priority", "rules",
            yaml="priority", add_help="priority 0..10 for ingest/update of matching files; "
            "first match wins", clear_flag="--no-priority", clear_help="no priority rule",
            metavar="GLOB=N"),
    Setting("max_file_size", "max_file_size", "size", None, "--max-file-size",
            "larger files are out of scope (bytes, or 10MB, 1.5G, ...)", "max file size",
            "bytes", low=0, high=MAX_FILE_SIZE, unset="none", metavar="SIZE"),
    Setting("use_gitignore", "use_gitignore", "bool", True, "--gitignore",
            "honour .gitignore files (or not)", "gitignore", "yes", yaml="gitignore",
            add_flag="--no-gitignore", add_help="ignore .gitignore files"),
    Setting("follow_symlinks", "follow_symlinks", "bool", False, "--follow-symlinks",
            "follow symlinks that stay inside the root (or not)", "follow symlinks", "yes",
            add_help="follow symlinks that stay inside the root"),
    Setting("check_stat", "check_stat", "choice", "auto", "--check-stat", "stat fields compared",
            "check stat", add_help="stat fields compared (default auto: minimal on "
            "network/FUSE mounts)", choices=CHECK_STAT_MODES),
    Setting("threads", "threads", "int", None, "--threads", "directories listed at once",
            "threads", "threads", low=1, high=MAX_THREADS, unset="auto",
            add_help=f"directories listed at once (default: {_AUTO_THREADS})", metavar="N"),
    Setting("timeout", "scan_timeout_seconds", "seconds", None, "--timeout",
            "the scheduler abandons a scan running longer", "timeout", "timeout", low=0,
            high=MAX_SECONDS, above_low=True, unset="default",
            add_help="the scheduler abandons a scan running longer (default 600)",
            metavar="SECONDS"),
    Setting("auto_ingest", "auto_ingest", "bool", True, "--auto-ingest",
            "write queue rows (or keep only the snapshot current)", "auto ingest", "yes",
            add_flag="-"),
    Setting("metadata", "metadata", "json", None, "--metadata",
            "JSON object merged into queue metadata", "metadata", "json", metavar="JSON"),
)
BY_NAME = {s.name: s for s in SETTINGS}
#: The settings a watch record holds (default_ignores only shapes `ignores`).
STORED = tuple(s for s in SETTINGS if s.column is not None)
