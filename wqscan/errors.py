"""The one error hierarchy of wqscan and the exit code each error maps to."""
from __future__ import annotations

from typing import Any, Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 69  # EX_UNAVAILABLE: the store (a PostgreSQL server) did not answer
EXIT_HELD = 75  # EX_TEMPFAIL: another process holds a watch; try again later
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT
EXIT_TERMINATED = 143  # ... and by SIGTERM


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


class WriteAgain(WqscanError):
    """The store met, in a transaction `Store.transact` runs, what its faster way of
    writing cannot take: the transaction is rolled back and run again at once, written
    the careful way."""


class StoreUnreachable(WqscanError):
    """The store could not be reached through every retry: a PostgreSQL server down,
    restarting or cut off. No watch is at fault (no circuit breaker opens for it)."""

    exit_code = EXIT_UNREACHABLE


class ConnectionLost(StoreUnreachable):
    """The server dropped the connection inside a transaction that is known not to have
    committed: run it again on a new connection."""


class OutcomeUnknown(StoreUnreachable):
    """The server dropped the connection while a write that is a transaction of its own
    (no BEGIN and COMMIT) ran: it may have committed; the caller reads back what it did."""


class WatchHeld(WqscanError):
    """Another process holds the watch's lease."""

    exit_code = EXIT_HELD


class LeaseLost(WqscanError):
    """A consumer completed or failed queue rows it no longer holds: their leases passed to
    another consumer, or the rows are gone. `lost` maps each such queue_id to why."""

    def __init__(self, message: str, lost: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.lost = dict(lost or {})

    @property
    def queue_ids(self) -> list[str]:
        """The ids no longer this consumer's, in the order they were given."""
        return list(self.lost)


class Terminated(KeyboardInterrupt):
    """SIGTERM asked the command to stop: it unwinds as Ctrl-C does (the batch in flight
    rolled back, leases released), and exits EXIT_TERMINATED."""


def exit_code(error: BaseException | None = None, reports: Iterable[Any] = ()) -> int:
    """The exit code of a command: of the error that ended it, else of its scans' reports
    (a bad stored setting beats a failed watch, which beats a watch another process held).
    """
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED
        if isinstance(error, BrokenPipeError):  # the reader went away: nothing to report
            return EXIT_OK
        return error.exit_code if isinstance(error, WqscanError) else EXIT_FAILED
    reports = list(reports)
    if any(r.config_error for r in reports):
        return EXIT_USAGE
    if any(not r.ok and not r.held for r in reports):
        return EXIT_FAILED
    return EXIT_HELD if any(r.held for r in reports) else EXIT_OK
