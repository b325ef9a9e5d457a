"""Human text output: escaping names, tables, a watch shown by option name, sizes, and the
progress line of a scan on a terminal."""
from __future__ import annotations

import sys
from typing import Any

from ..settings import SETTINGS

# (label, key of `show`'s document, how to render it): the settings by option name, the
# stat fields in effect beside the setting that chooses them, and what `show` tells after
_BESIDE = {"check_stat": (("check stat in use", "check_stat_effective", "text"),
                          ("filesystem", "filesystem", "text"),
                          ("directory cache", "directory_cache", "text"))}
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("id", "watch_id", "text"), ("path", "path", "text"),
    *(row for s in SETTINGS if s.label
      for row in ((s.label, str(s.column), s.show), *_BESIDE.get(s.name, ()))),
    ("config file", "config_file", "text"), ("layout", "layout", "text"),
    ("created", "created_at", "text"), ("updated", "updated_at", "text"),
    ("files in snapshot", "snapshot_files", "text"),
)
_STATS: tuple[tuple[str, str, str], ...] = (
    ("last scan", "last_scan_start", "text"), ("result", "last_result", "text"),
    ("reason", "last_reason", "text"), ("duration", "last_scan_duration", "dur"),
    ("files", "last_files", "text"), ("directories", "last_dirs", "text"),
    ("filtered", "last_filtered", "text"), ("bytes hashed", "last_bytes_hashed", "text"),
    ("ingest", "last_ingest", "text"), ("update", "last_update", "text"),
    ("delete", "last_delete", "text"), ("deferred", "last_deferred", "text"),
    ("warnings", "last_errors", "text"), ("scanner", "last_backend", "text"),
    ("scans ok", "scans_ok", "text"), ("scans failed", "scans_failed", "text"),
    ("failures in a row", "consecutive_failures", "text"),
    ("circuit open until", "circuit_open_until", "text"),
    ("changes found", "events_received", "text"), ("operations written", "events_processed",
                                                   "text"),
    ("entries filtered", "events_filtered", "text"), ("queue errors", "queue_errors", "text"),
)


def printable(text: str) -> str:
    r"""Text for a line of output, unambiguous: a backslash shows as `\\`, a control
    character as Python writes it in a string (`\n`, `\x1b`), another unprintable one by
    its code point (`\u0080`, `\u200b`), and a byte of a name that is not UTF-8 (decoded
    with surrogateescape) as `\xNN`. So one entry stays one line, none reaches a terminal
    raw, and two names never print alike."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return repr(c)[1:-1]  # \n, \t, \x1b
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"  # never \xNN


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned lines, the first being the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def watch_lines(doc: dict[str, Any]) -> list[str]:
    """`show`'s document as `label: value` lines: the settings by option name, then the
    statistics of the last scan and the counters."""
    stats = doc.get("stats") or {}
    lines = [f"{label + ':':20}{_render(doc.get(key), how)}" for label, key, how in _SETTINGS]
    if not stats:
        return lines + [f"{'last scan:':20}never"]
    return lines + [f"{label + ':':20}{_render(stats.get(key), how)}"
                    for label, key, how in _STATS]


def _render(value: Any, how: str) -> str:
    if how == "yes":
        return "yes" if value else "no"
    if value is None or value == "":
        return {"depth": "unlimited", "bytes": "no limit", "threads": "auto (16 on network and "
                "FUSE mounts, one per core (at most 8) otherwise)", "timeout": "600 s (the default)"
                }.get(how, "-")
    if how in ("secs", "timeout"):
        return f"{value:g} s"
    if how == "dur":
        return f"{value:.2f} s"
    if how == "list":
        return ", ".join(printable(str(v)) for v in value) or "-"
    if how == "rules":
        return ", ".join(f"{printable(g)}={n}" for g, n in value) or "-"
    if how == "json":
        import json

        return printable(json.dumps(value, ensure_ascii=False)) if value else "-"
    return printable(str(value))


def _size(n: float) -> str:
    """Bytes for a person: 512 B, 3.4 MB, 1.5 GB."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000:
            break
    return f"{n:.1f} {unit}"


class ProgressLine:
    """One line on a terminal's stderr, rewritten in place while a long scan runs."""

    def __init__(self) -> None:
        import time

        self.clock = time.monotonic
        self.start = self.clock()
        self.shown = 0.0
        self.dirty = False

    def update(self, watch_id: str, files: int, dirs: int, ops: int, hashed: int) -> None:
        now = self.clock()
        if now - self.shown < 0.1:
            return
        self.shown = now
        rate = files / max(now - self.start, 1e-3)
        sys.stderr.write(f"\r\x1b[K{watch_id}: {files} files, {dirs} dirs, {ops} operations, "
                         f"{_size(hashed)} hashed, {rate:.0f} files/s")
        sys.stderr.flush()
        self.dirty = True

    def clear(self) -> None:
        if self.dirty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
