"""The tests' throwaway PostgreSQL server (pg_server, tests/pg_cluster.py) answers, and
pg_schema hands out distinct schemas and drops what a test left in one."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.scanner_free

# The schema test_pg_schema_holds_a_table filled, for the test after it to find gone.
_filled: list[str] = []


def test_pg_server_answers(pg_server: str) -> None:
    import psycopg

    with psycopg.connect(pg_server) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pg_schema_holds_a_table(pg_server: str, pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.t (x int)")
        conn.execute(f"INSERT INTO {pg_schema}.t VALUES (1)")
        assert conn.execute(f"SELECT x FROM {pg_schema}.t").fetchall() == [(1,)]
    _filled.append(pg_schema)


def test_pg_schema_is_new_and_the_last_one_dropped(pg_server: str, pg_schema: str) -> None:
    import psycopg

    if not _filled:
        pytest.skip("test_pg_schema_holds_a_table did not fill a schema before this test")
    assert pg_schema != _filled[-1]
    with psycopg.connect(pg_server) as conn:
        gone = conn.execute(
            "SELECT to_regclass(%s) IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM pg_namespace WHERE nspname = %s)",
            [f"{_filled[-1]}.t", _filled[-1]],
        ).fetchone()
    assert gone == (True,)
