"""Rows of `wq_watch_stats`: persistent counters, the last scan and the circuit breaker of
each watch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dialect import POSTGRES
from .schema import HOOK_RUN_FIELDS, STATS_COUNTERS, STATS_LAST

if TYPE_CHECKING:
    from .contract import Tables

_COLUMNS = frozenset((*STATS_COUNTERS, *STATS_LAST))
_ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"  # a timestamptz as every table's times


def _iso(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', {_ISO}) AS {column}"


# The queue table's rows by the server's statistics (they lag a transaction by up to a
# second), and its vacuums.
_QUEUE_TABLE = ("SELECT n_live_tup AS live_rows, n_dead_tup AS dead_rows, "
                f"{_iso('last_vacuum')}, {_iso('last_autovacuum')}, autovacuum_count "
                "FROM pg_catalog.pg_stat_user_tables WHERE relid = to_regclass('ingestion_queue')")
# The client session of this database that holds the oldest snapshot or transaction id:
# vacuum keeps every row dead after it began, here and in every table. The server's own
# workers (autovacuum above all, which holds a snapshot while it works) are not a reader
# an operator can end.
_OLDEST = ("SELECT pid, application_name, state, greatest(age(backend_xmin), "
           "age(backend_xid)) AS xid_age, round(extract(epoch FROM clock_timestamp() - "
           f"xact_start)::numeric, 3)::float AS seconds, {_iso('xact_start')} "
           "FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
           "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
           "AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) "
           "ORDER BY 4 DESC, xact_start LIMIT 1")


class StatsRows:
    """The statistics part of `Store`."""

    def stats_row(self: "Tables", watch_id: str) -> dict[str, Any] | None:
        if not self.own_tables():
            return None
        rows = self._rows("SELECT * FROM wq_watch_stats WHERE watch_id = ?", (watch_id,))
        return rows[0] if rows else None

    def add_stats(self: "Tables", watch_id: str, counters: dict[str, int]) -> None:
        """Add to the persistent counters of a watch."""
        _check(counters)
        self._stats_row_exists(watch_id)
        sets = ", ".join(f"{c} = {c} + ?" for c in counters)
        self.conn.execute(f"UPDATE wq_watch_stats SET {sets} WHERE watch_id = ?",
                          (*counters.values(), watch_id))

    def set_circuit(self: "Tables", watch_id: str, open_until: str | None) -> None:
        """Open the circuit breaker of a watch until a time, or close it (None)."""
        self._stats_row_exists(watch_id)
        self.conn.execute("UPDATE wq_watch_stats SET circuit_open_until = ? WHERE watch_id = ?",
                          (open_until, watch_id))

    def finish_scan(self: "Tables", watch_id: str, ok: bool, last: dict[str, Any],
                    when: str, streak: bool = True) -> None:
        """Record the outcome of a scan: last-scan fields, ok/failed counters, and on success
        the watch's last_scan and a closed circuit. A failure not the watch's fault (the
        store was unreachable: not `streak`) leaves the failures in a row as they are."""
        _check(last)
        self.add_stats(watch_id, {"scans_ok" if ok else "scans_failed": 1})
        sets = ", ".join(f"{c} = ?" for c in last)
        streak_sql = "0" if ok else "consecutive_failures + 1" if streak \
            else "consecutive_failures"
        self.conn.execute(f"UPDATE wq_watch_stats SET {sets}, consecutive_failures = {streak_sql} "
                          "WHERE watch_id = ?", (*last.values(), watch_id))
        if ok:
            self.update_watch(watch_id, {"last_scan": when})
            self.set_circuit(watch_id, None)

    def record_hook_run(self: "Tables", watch_id: str, run: dict[str, Any]) -> None:
        """A scan a git hook started: which hook, in which repository, when, how it ended,
        and the log of its output (HOOK_RUN_FIELDS), replacing the last one."""
        if set(run) != set(HOOK_RUN_FIELDS):
            raise ValueError(f"a hook run has the fields {HOOK_RUN_FIELDS}")
        self.conn.execute(f"INSERT INTO wq_hook_runs (watch_id, {', '.join(HOOK_RUN_FIELDS)}) "
                          f"VALUES (?{', ?' * len(HOOK_RUN_FIELDS)}) ON CONFLICT (watch_id) "
                          "DO UPDATE SET "
                          + ", ".join(f"{c} = excluded.{c}" for c in HOOK_RUN_FIELDS),
                          (watch_id, *(run[c] for c in HOOK_RUN_FIELDS)))

    def hook_runs(self: "Tables") -> dict[str, dict[str, Any]]:
        """The last hook run of every watch that had one, by watch id."""
        if not self.own_tables():
            return {}
        return {r.pop("watch_id"): r for r in self._rows("SELECT * FROM wq_hook_runs", ())}

    def queue_storage(self: "Tables") -> dict[str, Any] | None:
        """On PostgreSQL, the queue table's live and dead rows and its vacuums, and the
        oldest transaction of the database (None: no other); None on SQLite."""
        if self.engine.dialect is not POSTGRES:
            return None
        table = self._rows(_QUEUE_TABLE)
        oldest = self._rows(_OLDEST)
        return {**(table[0] if table else {}), "oldest_transaction": oldest[0] if oldest
                else None}

    def _stats_row_exists(self: "Tables", watch_id: str) -> None:
        self.conn.execute("INSERT INTO wq_watch_stats (watch_id) VALUES (?) "
                          "ON CONFLICT (watch_id) DO NOTHING", (watch_id,))


def _check(fields: dict[str, Any]) -> None:
    """Column names reach SQL only from this list."""
    unknown = set(fields) - _COLUMNS
    if unknown:
        raise ValueError(f"not statistics columns: {sorted(unknown)}")
