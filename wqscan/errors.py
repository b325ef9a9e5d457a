"""The one error hierarchy of wqscan and the exit code each error maps to."""
from __future__ import annotations
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HELD = 75


class WqscanError(Exception):
    """Base of every error wqscan reports; `exit_code` is what the CLI returns, `field`
    the option at fault when there is one."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UsageError(WqscanError):
    """A bad argument: unknown id, bad path, bad pattern, bad option value."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A bad stored setting or configuration file."""


class NotADatabaseError(UsageError):
    """The database path holds something that is not a wqscan/SQLite database."""


class WatchFailed(WqscanError):
    """A watch failed as a whole: root unavailable, guard tripped, busy database."""


class DatabaseBusy(WatchFailed):
    """The database stayed locked by another writer through every retry."""


class DatabaseUnwritable(WatchFailed):
    """SQLite could not write the database: disk full, read-only, I/O error."""


class WatchHeld(WqscanError):
    """Another process holds the watch's lease."""

    exit_code = EXIT_HELD


class LeaseLost(WqscanError):
    """A consumer completed or failed a queue row it no longer holds: its lease passed to
    another consumer, or the row is gone."""
