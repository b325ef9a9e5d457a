"""A hot queue table in PostgreSQL: its storage and autovacuum parameters, set on a new
schema and on one made before them, and `queue stats` showing its dead rows and the
transaction that keeps them (docs/scaling-out.md)."""
from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any, Iterator

import pytest

from wqscan.store import Store, Target
from wqscan.store.pg_schema import QUEUE_STORAGE


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _options(url: str, schema: str) -> set[str]:
    with _connect(url) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
                           (f'"{schema}".ingestion_queue',)).fetchone()
    return set(row[0] or ())


WANTED = {f"{k}={v}" for k, v in QUEUE_STORAGE.items()}


def test_queue_table_parameters_new_and_existing_schema(pg_server: str, pg_schema: str
                                                        ) -> None:
    """A new schema's queue table gets the parameters; one that lacks them (made by an
    earlier wqscan) gets them when next opened, its rows kept."""
    Store.open(Target(pg_server, pg_schema)).close()
    assert _options(pg_server, pg_schema) >= WANTED
    with _connect(pg_server) as conn:
        conn.execute(f'ALTER TABLE "{pg_schema}".ingestion_queue RESET '
                     f"({', '.join(QUEUE_STORAGE)})")
        conn.execute(f'INSERT INTO "{pg_schema}".ingestion_queue (file_absolute_path, '
                     "collection_name, operation) VALUES ('/a', 'c', 'ingest')")
    assert not _options(pg_server, pg_schema) & WANTED
    with Store.open(Target(pg_server, pg_schema), create=False) as store:
        assert store.queue.count("pending", None) == 1
    assert _options(pg_server, pg_schema) >= WANTED


def test_an_operators_own_values_are_kept(pg_server: str, pg_schema: str) -> None:
    """Values an operator set on the queue table in place of wqscan's stay as they are
    when wqscan opens the schema again."""
    Store.open(Target(pg_server, pg_schema)).close()
    with _connect(pg_server) as conn:
        conn.execute(f'ALTER TABLE "{pg_schema}".ingestion_queue RESET '
                     f"({', '.join(QUEUE_STORAGE)})")
        conn.execute(f'ALTER TABLE "{pg_schema}".ingestion_queue SET '
                     "(autovacuum_vacuum_scale_factor = 0.05)")
    Store.open(Target(pg_server, pg_schema), create=False).close()
    assert _options(pg_server, pg_schema) == {"autovacuum_vacuum_scale_factor=0.05"}


@pytest.fixture
def dml_role(pg_server: str, pg_schema: str) -> Iterator[str]:
    """The URL of a role that may read and write the schema's tables but owns none."""
    role = f"r_{secrets.token_hex(4)}"
    Store.open(Target(pg_server, pg_schema)).close()
    with _connect(pg_server) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO {role}')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA '
                     f'"{pg_schema}" TO {role}')
        conn.execute(f'ALTER TABLE "{pg_schema}".ingestion_queue RESET (fillfactor)')
    scheme, rest = pg_server.split("://", 1)
    if "@" in rest.split("/", 1)[0]:  # the URL names a user: the role takes its place
        rest = rest.split("@", 1)[1]
    try:
        yield f"{scheme}://{role}@{rest}"
    finally:
        with _connect(pg_server) as conn:
            conn.execute(f'DROP OWNED BY {role}')
            conn.execute(f"DROP ROLE {role}")


def test_a_role_that_does_not_own_the_table_opens_it(dml_role: str, pg_schema: str) -> None:
    """A consumer's role without ownership opens the schema as it did (the parameters are
    the owner's to set), and the table is left as it was."""
    with Store.open(Target(dml_role, pg_schema), create=False) as store:
        assert store.queue.count("pending", None) == 0
    assert "fillfactor=80" not in _options(dml_role, pg_schema)


def _stats(url: str, schema: str, capfd, json_out: bool) -> Any:
    from wqscan.cli import main

    capfd.readouterr()
    argv = ["--db", url, "--pg-schema", schema, "queue", "stats"]
    assert main(argv + ["--json"] * json_out) == 0
    out = capfd.readouterr().out
    return json.loads(out) if json_out else out


def test_queue_stats_shows_dead_rows_and_the_oldest_reader(pg_server: str, pg_schema: str,
                                                           capfd) -> None:
    """Rows deleted while a reader holds an older snapshot are dead rows in `queue stats`,
    and that reader is the oldest transaction, in the JSON and in the text."""
    Store.open(Target(pg_server, pg_schema)).close()
    with _connect(pg_server) as writer, _connect(pg_server) as reader:
        if writer.info.server_version < 150000:
            pytest.skip("the statistics are flushed on demand from PostgreSQL 15 on")
        doc = _stats(pg_server, pg_schema, capfd, True)["storage"]
        assert (doc["dead_rows"], doc["oldest_transaction"]) == (0, None)
        table = f'"{pg_schema}".ingestion_queue'
        writer.execute(f"INSERT INTO {table} (file_absolute_path, collection_name, operation) "
                       "SELECT '/f' || i, 'c', 'ingest' FROM generate_series(1, 300) AS i")
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        writer.execute(f"DELETE FROM {table}")
        writer.execute("SELECT pg_stat_force_next_flush()")
        doc = _stats(pg_server, pg_schema, capfd, True)["storage"]
        oldest = doc["oldest_transaction"]
        assert doc["dead_rows"] >= 300
        assert (oldest["pid"], oldest["state"]) == (reader.info.backend_pid,
                                                    "idle in transaction")
        assert oldest["xid_age"] >= 1 and oldest["seconds"] >= 0
        text = _stats(pg_server, pg_schema, capfd, False).splitlines()
        assert text[-2].startswith("table:       0 live rows, ") and " dead; " in text[-2]
        assert text[-1].startswith(f"oldest xact: pid {reader.info.backend_pid} (")
        reader.execute("COMMIT")
        assert _stats(pg_server, pg_schema, capfd, True)["storage"]["oldest_transaction"] \
            is None


@pytest.fixture
def quick_autovacuum(pg_server: str) -> Iterator[None]:
    """The server's autovacuum wakes every second for this test, and is set back after it:
    a setting of the whole server, so only on the throwaway cluster."""
    if os.environ.get("WQSCAN_TEST_PG"):
        pytest.skip("changes a setting of the whole server: only on the throwaway cluster")
    with _connect(pg_server) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone()[0]:
            pytest.skip("setting autovacuum_naptime needs a superuser")
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = 1")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with _connect(pg_server) as conn:
            conn.execute("ALTER SYSTEM RESET autovacuum_naptime")
            conn.execute("SELECT pg_reload_conf()")


def test_an_autovacuum_worker_is_not_the_oldest_transaction(
        pg_server: str, pg_schema: str, quick_autovacuum: None, capfd) -> None:
    """An autovacuum worker holds a snapshot while it works on the queue table; with no
    client session holding one, `queue stats` names no oldest transaction."""
    Store.open(Target(pg_server, pg_schema)).close()
    table = f'"{pg_schema}".ingestion_queue'
    with _connect(pg_server) as conn:
        conn.execute(f"INSERT INTO {table} (file_absolute_path, collection_name, operation) "
                     "SELECT '/f' || i || repeat('x', 200), 'c', 'ingest' "
                     "FROM generate_series(1, 20000) AS i")
        conn.execute(f"DELETE FROM {table}")
        # Vacuum at once, and crawl (a 100 ms nap after every page) so it is caught working.
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_vacuum_threshold = 0, "
                     "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_limit = 1, "
                     "autovacuum_vacuum_cost_delay = 100)")
        deadline = time.monotonic() + 60
        while not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
                "backend_type = 'autovacuum worker' AND backend_xmin IS NOT NULL "
                "AND query LIKE %s", (f"%{pg_schema}.ingestion_queue%",)).fetchone():
            assert time.monotonic() < deadline, "no autovacuum worker came within 60 s"
            time.sleep(0.05)
        assert _stats(pg_server, pg_schema, capfd, True)["storage"]["oldest_transaction"] \
            is None
        assert conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
            "backend_type = 'autovacuum worker'").fetchone(), "the worker ended too soon"
