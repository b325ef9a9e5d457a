"""The store interface on both engines: what a command sees is the same whichever store
holds the tables; PostgreSQL's own rules (a schema of wqscan's own, the server's clock).
Runs in both CI passes: its scans use the pure-Python scanner in the second."""
from __future__ import annotations

import os

import pytest
from helpers.db import Db

from wqscan.errors import NotADatabaseError
from wqscan.store import Store, Target
from wqscan.watches import add_watch


def test_commands_on_both_stores(database: Db, tmp_path, capfd) -> None:
    """init, add, reconcile, queue list and status work alike on either store, and status
    names the store."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for i in range(3):
        f = tree / "d" / f"f{i}.txt"
        f.write_text(str(i))
        os.utime(f, ns=(10**18, 10**18))
    from wqscan.cli import main

    assert main([*database.argv, "add", str(tree), "--collection", "c"]) == 0
    assert main([*database.argv, "reconcile"]) == 0
    rows = database.queue()
    assert sorted(r["file_absolute_path"] for r in rows) == [
        str(tree / "d" / f"f{i}.txt") for i in range(3)]
    assert {r["operation"] for r in rows} == {"ingest"}
    capfd.readouterr()
    assert main([*database.argv, "status", "--json"]) == 0
    import json

    doc = json.loads(capfd.readouterr().out)
    assert doc["store"].startswith("postgresql " if database.kind == "pg" else "sqlite ")


def test_pg_refuses_a_schema_of_another(pg_server: str, pg_schema: str) -> None:
    """A schema holding tables wqscan did not make is refused, and left as it was."""
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(f'CREATE TABLE "{pg_schema}".accounts (id int)')
    with pytest.raises(NotADatabaseError, match="tables wqscan did not create"):
        Store.open(Target(pg_server, pg_schema))
    with psycopg.connect(pg_server, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,))]
    assert tables == ["accounts"]


def test_pg_missing_schema_is_not_an_empty_queue(pg_server: str, pg_schema: str) -> None:
    """Without create, a schema with nothing of wqscan's is refused, not created."""
    with pytest.raises(NotADatabaseError, match="holds no wqscan tables"):
        Store.open(Target(pg_server, pg_schema), create=False)
    assert Store.peek(Target(pg_server, pg_schema)) == "empty"


def test_pg_clock_is_the_servers(pg_server: str, pg_schema: str) -> None:
    """Leases and claims are judged by the server's clock: it is close to the host's here,
    and read from the server (a query), not from time.time."""
    import time

    with Store.open(Target(pg_server, pg_schema)) as s:
        before = time.time_ns()
        now = s.clock_ns()
        after = time.time_ns()
        assert before - 10**9 < now < after + 10**9
        assert s.conn.changes() == 1  # one row came back from the server


def test_rows_are_stamped_by_the_servers_clock(pg_server: str, pg_schema: str,
                                              tmp_path) -> None:
    """A host whose clock runs a day behind the server's (libfaketime) queues rows stamped
    with the server's time: where several hosts queue rows, their times are comparable."""
    import shutil
    import subprocess

    from helpers.cli import child_env, wqscan_argv

    from wqscan.clock import parse_iso

    if shutil.which("faketime") is None:
        pytest.skip("no faketime (Debian's faketime package) to set a host clock apart")
    tree = _tree_with(tmp_path, ["a.txt", "b.txt"])
    db = Db("pg", Target(pg_server, pg_schema))
    for args in (("add", str(tree), "--collection", "c"), ("reconcile",)):
        r = subprocess.run(["faketime", "-f", "-1d", *wqscan_argv(db, *args)],
                           env=child_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    with db.open() as s:
        now = s.clock_ns()
        rows = s.queue.rows("pending", None)
    assert len(rows) == 2
    for row in rows:
        for column in ("queued_timestamp", "scheduled_at"):
            assert 0 <= now - parse_iso(row[column]) < 600 * 10**9, (column, row[column])


def _tree_with(tmp_path, names: list[str]):
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    for name in names:
        f = tree / name
        f.write_text(name)
        os.utime(f, ns=(10**18, 10**18))
    return tree


def test_reconcile_that_queues_work_notifies(pg_server: str, pg_schema: str, tmp_path) -> None:
    """A reconcile that queues rows sends a NOTIFY on the schema's channel, the one idle
    consumers LISTEN on; a reconcile that queues nothing sends none."""
    import psycopg

    target = Target(pg_server, pg_schema)
    tree = _tree_with(tmp_path, ["a.txt"])
    with Store.open(target) as s:
        add_watch(s, str(tree), "c", settle=0)
        channel = s.engine.channel
    from wqscan.cli import main

    with psycopg.connect(pg_server, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')
        assert main([*target.argv(), "reconcile", "-q"]) == 0
        got = [n.channel for n in listener.notifies(timeout=10, stop_after=1)]
        assert got == [channel]
        assert main([*target.argv(), "reconcile", "-q"]) == 0  # nothing new
        assert list(listener.notifies(timeout=1, stop_after=1)) == []


def test_waiting_consumer_gets_the_row_a_reconcile_queues(pg_server: str, pg_schema: str,
                                                          tmp_path) -> None:
    """`queue claim --wait` in another process, with nothing due, returns the row a later
    reconcile queues."""
    import json
    import subprocess
    import sys

    target = Target(pg_server, pg_schema)
    tree = _tree_with(tmp_path, [])
    with Store.open(target) as s:
        add_watch(s, str(tree), "c", settle=0)
    claim = subprocess.Popen([sys.executable, "-m", "wqscan", *target.argv(), "queue", "claim",
                              "1", "--wait", "60", "--json"], stdout=subprocess.PIPE, text=True)
    _until_waiting(pg_server, claim)
    _tree_with(tmp_path, ["late.txt"])
    from wqscan.cli import main

    assert main([*target.argv(), "reconcile", "-q"]) == 0
    out, _ = claim.communicate(timeout=90)
    assert claim.returncode == 0
    rows = json.loads(out)
    assert [r["file_absolute_path"] for r in rows] == [str(tree / "late.txt")]


def _until_waiting(url: str, proc) -> None:
    """Wait until `proc`'s session sits idle after looking for due rows (as it does once
    before it listens, and then between notifications)."""
    import time

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(600):
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'wqscan' AND state = 'idle' AND query LIKE %s",
                            ("SELECT * FROM ingestion_queue AS q%",)).fetchone()[0]:
                return
            assert proc.poll() is None, "the waiting consumer ended before it waited"
            time.sleep(0.05)
    raise AssertionError("the consumer never looked for due rows")


@pytest.mark.parametrize("how", ["--db", "WQSCAN_DB", "database:"])
def test_a_url_names_postgresql_everywhere(pg_server: str, pg_schema: str, tmp_path,
                                           monkeypatch, capfd, how: str) -> None:
    """--db, $WQSCAN_DB and the YAML's `database:` take the URL as it is (a file name in
    the YAML is relative to the file; a URL is not); the schema from $WQSCAN_PG_SCHEMA."""
    from wqscan.cli import main

    monkeypatch.delenv("WQSCAN_CONFIG", raising=False)
    monkeypatch.setenv("WQSCAN_PG_SCHEMA", pg_schema)
    argv: list[str] = []
    if how == "--db":
        argv = ["--db", pg_server]
    elif how == "WQSCAN_DB":
        monkeypatch.setenv("WQSCAN_DB", pg_server)
    else:
        monkeypatch.delenv("WQSCAN_DB", raising=False)
        cfg = tmp_path / "wqscan.yaml"
        cfg.write_text(f"database: '{pg_server}'\n")
        argv = ["--config", str(cfg)]
    assert main([*argv, "init", "--json"]) == 0
    out = capfd.readouterr().out
    assert f"(schema {pg_schema})" in out
    assert Store.peek(Target(pg_server, pg_schema)) == "wqscan"


def test_a_dropped_connection_is_made_anew(pg_server: str, pg_schema: str, tmp_path) -> None:
    """The server ends the store's session (a restart, a failover): a read outside a
    transaction, and a transaction's first statement, go again on a new connection; a
    drop later in a transaction fails it with one line (ConnectionLost) and writes
    nothing; the next one runs on a new connection."""
    import psycopg

    from wqscan.errors import ConnectionLost

    def drop(store: Store) -> None:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)",
                                 (store.conn.raw.info.backend_pid,)).fetchone()[0]

    tree = _tree_with(tmp_path, ["a.txt"])
    with Store.open(Target(pg_server, pg_schema)) as s:
        add_watch(s, str(tree), "c", settle=0)
        first = s.conn.raw.info.backend_pid
        drop(s)
        assert [w["watch_id"] for w in s.watch_rows()] == ["tree"]
        assert s.conn.raw.info.backend_pid != first
        drop(s)
        with s.write():  # dropped before the transaction began: it runs on a new one
            s.add_stats("tree", {"scans_ok": 1})
        with pytest.raises(ConnectionLost) as e:
            with s.write():
                s.add_stats("tree", {"scans_ok": 1})
                drop(s)
                s.add_stats("tree", {"scans_failed": 1})
        assert "\n" not in str(e.value) and s.path in str(e.value)
        with s.write():
            s.add_stats("tree", {"scans_ok": 1})
        row = s.stats_row("tree")
        assert (row["scans_ok"], row["scans_failed"]) == (2, 0)


def test_settings_dropped_from_the_options_are_set_by_a_statement(
        pg_server: str, pg_schema: str, tmp_path, monkeypatch) -> None:
    """The schema and lock timeout go in the connection's options; a pooler in front of
    the server may drop those (as one told to ignore them does): the store notices at
    open and sets them with a statement, so its tables are still found in its schema."""
    from wqscan.store import pg_conn

    tree = _tree_with(tmp_path, ["a.txt"])
    with Store.open(Target(pg_server, pg_schema)) as s:
        add_watch(s, str(tree), "c", settle=0)
    monkeypatch.setattr(pg_conn, "_options", lambda target: "")
    with Store.open(Target(pg_server, pg_schema), create=False) as s:
        assert [w["watch_id"] for w in s.watch_rows()] == ["tree"]
        row = s.conn.execute("SELECT current_setting('search_path'), "
                             "current_setting('lock_timeout')").fetchone()
        assert row == (f'"{pg_schema}"', "5s")


@pytest.mark.parametrize("options", ["kept", "dropped by a pooler"])
def test_a_consumers_connection_keeps_generic_plans_and_a_scanners_does_not(
        pg_server: str, pg_schema: str, tmp_path, monkeypatch, options: str) -> None:
    """A consumer sends one claim statement of the same shape over and over: its connection
    has the server keep one generic plan (`plan_cache_mode`) rather than plan each claim;
    other connections keep the server's default. Set through the options, or by a statement
    when a pooler dropped them."""
    from wqscan import QueueClient
    from wqscan.store import pg_conn

    Store.open(Target(pg_server, pg_schema)).close()
    if options != "kept":
        monkeypatch.setattr(pg_conn, "_options", lambda target: "")
    with Store.open(Target(pg_server, pg_schema), create=False) as s:
        assert s.conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)
    with QueueClient(Target(pg_server, pg_schema)) as client:
        row = client.store.conn.execute("SELECT current_setting('plan_cache_mode'), "
                                        "current_setting('search_path')").fetchone()
        assert row == ("force_generic_plan", f'"{pg_schema}"')
        assert client.claim(5) == []
