"""A PostgreSQL server that goes away is ridden out (docs/scaling-out.md, docs/operations.md):
a COMMIT whose answer was lost is read back rather than guessed, a consumer's call raises
one error naming the store after its retries, `queue claim --wait` waits through a
restart, and `run` keeps its schedule through an outage without opening circuit breakers.
Real clusters of the tests' own (halted and started again), real processes."""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
from helpers.cli import child_env, wqscan, wqscan_argv
from helpers.db import Db, seed, set_cols, watch
from helpers.pg_proxy import CuttingProxy
from helpers.procs import wait_until
from helpers.trees import write
from pg_cluster import Cluster, restartable

from wqscan.errors import EXIT_UNREACHABLE, LeaseLost, StoreUnreachable
from wqscan.store import Store, Target, pg_conn

pytestmark = [pytest.mark.usefixtures("no_ambient_config"), pytest.mark.scanner_free]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = restartable()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def db(cluster: Cluster, request) -> Iterator[Db]:
    """A schema of its own on the module's cluster, which the test may halt: started
    again (if need be) when the test ends."""
    import psycopg

    schema = f"o_{request.node.name[5:30].lower()}"
    yield Db("pg", Target(cluster.url, re.sub(r"[^a-z0-9_]", "_", schema)))
    if not (cluster.data / "postmaster.pid").exists():
        cluster.start()
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{re.sub(r"[^a-z0-9_]", "_", schema)}" CASCADE')


def _halted(cluster: Cluster) -> None:
    """The server stopped, unless it is already."""
    if (cluster.data / "postmaster.pid").exists():
        cluster.halt()


def _sessions(cluster: Cluster, last_query: str = "%") -> int:
    """How many wqscan sessions the server has (whose last statement is LIKE that)."""
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                            "= 'wqscan' AND query LIKE %s", (last_query,)).fetchone()[0]


@pytest.mark.parametrize("cut, runs", [("answer", 1), ("request", 2)])
def test_a_commit_cut_off_is_read_back_not_guessed(db: Db, cluster: Cluster, cut: str,
                                                   runs: int, tmp_path: Path) -> None:
    """The connection is cut at COMMIT, after the server answered it (committed, the answer
    lost) or before the server got it (aborted): the store asks the server what became of
    the transaction on a new connection; the first is not run again, the second is, and
    either way the write is there exactly once."""
    with db.open() as store:
        wid = watch(store, tmp_path)
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with Store.open(Target(proxy.url, db.target.pg_schema)) as store:
            ran = []

            def body() -> None:
                ran.append(1)
                store.add_stats(wid, {"scans_ok": 1})

            first = store.conn.raw.info.backend_pid
            proxy.cut = cut
            store.transact(body)
            assert proxy.done == cut and store.conn.raw.info.backend_pid != first
            assert len(ran) == runs
    finally:
        proxy.close()
    with db.open() as store:
        assert store.stats_row(wid)["scans_ok"] == 1


def test_a_consumer_call_raises_one_error_naming_the_store(db: Db, cluster: Cluster,
                                                           monkeypatch, capsys) -> None:
    """With the server down past the retries, a QueueClient call raises StoreUnreachable
    (one line naming the store, after trying again), and `queue claim` exits 69 with that
    line; the same client works again once the server is back."""
    from wqscan.cli import main
    from wqscan import QueueClient

    monkeypatch.setattr(pg_conn, "RECONNECT_RETRIES", (0.05, 0.1))
    with db.open():
        pass
    with QueueClient(db.target) as client:
        assert client.claim(1) == []
        cluster.halt()
        with pytest.raises(StoreUnreachable) as e:
            client.claim(1)
        assert "\n" not in str(e.value) and db.target.name in str(e.value)
        assert "tried 3 times" in str(e.value)
        assert main([*db.argv, "queue", "claim", "1"]) == EXIT_UNREACHABLE
        err = capsys.readouterr().err
        assert err.startswith("wqscan: error: cannot reach ") and err.count("\n") == 1
        cluster.start()
        assert client.claim(1) == []


@pytest.mark.parametrize("change", [("wqscan@", "nobody_here@"), ("?host=", "?sslmode=bogus&host="),
                                    ("/postgres?", "/no_such_db?")])
def test_a_server_that_answers_no_is_not_tried_again(db: Db, monkeypatch, change) -> None:
    """An unknown role or database, or a bad URL, is a usage error at once (exit 2), not
    an outage to wait out."""
    from wqscan.errors import NotADatabaseError

    monkeypatch.setattr(pg_conn, "RECONNECT_RETRIES", (0.01,))
    with pytest.raises(NotADatabaseError, match="cannot connect to "):
        Store.open(Target(db.target.db.replace(*change), db.target.pg_schema))


def test_a_scan_that_cannot_reach_the_store_exits_69(db: Db, cluster: Cluster, monkeypatch,
                                                     capsys, tmp_path: Path) -> None:
    """A scan whose server goes away for good in the middle raises StoreUnreachable
    rather than reporting its watch as failed (it could not record that anyway), and
    `reconcile` on a server that is down exits 69 with one line: what `run` tells from a
    watch's own failure."""
    from wqscan.cli import main
    from wqscan.reconcile import reconcile

    monkeypatch.setattr(pg_conn, "RECONNECT_RETRIES", (0.05,))
    root = tmp_path / "tree"
    write(root / "a.txt", "a")
    (root / "out").symlink_to(tmp_path)  # a warning mid-walk, the lease held
    with db.open() as store:
        watch(store, root, follow_symlinks=True)
        with pytest.raises(StoreUnreachable):  # halted at that warning
            reconcile(store, on_warning=lambda *warning: _halted(cluster))
    assert main([*db.argv, "reconcile"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith("wqscan: error: cannot reach ") and err.count("\n") == 1


def test_claim_wait_waits_through_a_restart(db: Db, cluster: Cluster, tmp_path: Path) -> None:
    """`queue claim 1 --wait 60` asleep on LISTEN when the server stops keeps waiting; the
    server back and a file queued, it claims that file's row and exits 0."""
    root = tmp_path / "tree"
    write(root / "a.txt", "a")
    with db.open() as store:
        watch(store, root)
    claim = subprocess.Popen(wqscan_argv(db, "queue", "claim", "1", "--wait", "60"),
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert wait_until(lambda: _sessions(cluster) == 1, 30)  # the consumer is waiting
        cluster.halt()
        assert wait_until(lambda: claim.poll() is not None, 1.5) is False  # still waiting
        cluster.start()
        assert wqscan(db, "-q", "reconcile").returncode == 0
        out, err = claim.communicate(timeout=60)
    finally:
        if claim.poll() is None:
            claim.kill()
            claim.communicate()
    assert claim.returncode == 0, err
    assert out.split("\t")[1:] == ["ingest", f"{root.resolve()}/a.txt\n"]



def test_wait_outlasts_the_retries(db: Db, cluster: Cluster, monkeypatch,
                                   tmp_path: Path) -> None:
    """QueueClient.wait goes on waiting while the server stays down past the reconnect
    retries (each look fails with StoreUnreachable), and returns True once the server is
    back and a row is queued."""
    import threading

    from wqscan import QueueClient

    monkeypatch.setattr(pg_conn, "RECONNECT_RETRIES", (0.05,))
    root = tmp_path / "tree"
    write(root / "a.txt", "a")
    with db.open() as store:
        watch(store, root)
    with QueueClient(db.target) as client:
        got: list = []
        waiting = threading.Thread(target=lambda: got.append(_outcome(client.wait, 60)))
        waiting.start()
        try:
            assert wait_until(lambda: _sessions(cluster) == 1, 30)
            cluster.halt()
            assert not wait_until(lambda: got, 2.5)  # it looked (and failed): still waits
        finally:
            cluster.start()
        assert wqscan(db, "-q", "reconcile").returncode == 0
        waiting.join(60)
    assert got == [True]


def _outcome(call, *args):
    """What `call(*args)` returned, or the error it raised."""
    try:
        return call(*args)
    except Exception as e:
        return e


def test_run_rides_out_an_outage(db: Db, cluster: Cluster, tmp_path: Path) -> None:
    """`wqscan run` over a watch one failure short of opening its circuit breaker: the
    server stops for a few seconds; run keeps going, logs the loss once and the return
    once, counts the scans due meanwhile as failed without opening the breaker (which
    would rest the watch for a minute), and queues a file created after the restart."""
    from wqscan.clock import iso_from_ns

    root = tmp_path / "tree"
    write(root / "a.txt", "a")
    with db.open() as store:
        wid = watch(store, root, interval=2)
        for _ in range(4):  # FAILURES_TO_OPEN - 1, the last attempt just now
            with store.write():
                store.finish_scan(wid, False, {"last_scan_start": iso_from_ns(time.time_ns()),
                                               "last_result": "failed"}, "")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen(wqscan_argv(db, "run"), env=child_env(), stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        # the scheduler's loop is reading the watches' statistics
        assert wait_until(lambda: _sessions(cluster, "%wq_watch_stats%") >= 1, 30)
        cluster.halt()
        assert wait_until(lambda: "store unreachable" in log.read_text(), 30), log.read_text()
        assert wait_until(lambda: run.poll() is not None, 3) is False  # rides it out
        cluster.start()
        write(root / "b.txt", "b")
        assert wait_until(lambda: any(r["file_absolute_path"].endswith("/b.txt")
                                      for r in db.queue()), 30), log.read_text()
        assert run.poll() is None, log.read_text()
    finally:
        run.terminate()
        run.wait(timeout=30)
    text = log.read_text()
    assert text.count("store unreachable") == 1 and text.count("reachable again") == 1, text
    missed = int(re.search(r"reachable again after \d+ s; (\d+) scan", text).group(1))
    assert missed >= 1, text
    with db.open() as store:
        stats = store.stats_row(wid)
    assert stats["circuit_open_until"] is None
    assert stats["scans_failed"] == 4 + missed and stats["consecutive_failures"] == 0


def _claimed_client(db: Db, proxy: CuttingProxy, files: int) -> Any:
    """`files` pending rows, and a QueueClient through the proxy."""
    from wqscan import QueueClient

    with db.open() as store:
        for i in range(files):
            seed(store, f"/cut/{i}.txt")
    return QueueClient(Target(proxy.url, db.target.pg_schema))


@pytest.mark.parametrize("cut", ["answer", "request"])
def test_a_batch_completion_cut_off_is_read_back(db: Db, cluster: Cluster, cut: str) -> None:
    """A batch completion (one statement sent alone) whose connection is cut after the
    server answered it, or before the server got it: the rows it held are read back on a
    new connection and finished once, and no row is reported lost."""
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with _claimed_client(db, proxy, 3) as client:
            rows = client.claim(3)
            assert len(rows) == 3
            proxy.marker, proxy.cut = b"DELETE ", cut
            client.complete([r.queue_id for r in rows])
            assert proxy.done == cut
    finally:
        proxy.close()
    with db.open() as store:
        assert store.queue.count(None, None) == 0


@pytest.mark.parametrize("cut", ["answer", "request"])
def test_a_batch_completion_cut_off_still_names_the_row_it_lost(db: Db, cluster: Cluster,
                                                               cut: str) -> None:
    """As above, with one of the rows taken over by another consumer first: the read-back
    tells the rows the cut statement deleted from the one still there under another owner,
    and the LeaseLost names that one alone, which stays as it was."""
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with _claimed_client(db, proxy, 3) as client:
            rows = client.claim(3)
            taken = rows[1].queue_id
            with db.open() as store:
                set_cols(store, taken, lease_owner="another-consumer")
            proxy.marker, proxy.cut = b"DELETE ", cut
            with pytest.raises(LeaseLost) as lost:
                client.complete([r.queue_id for r in rows])
            assert proxy.done == cut
            assert lost.value.queue_ids == [taken]
    finally:
        proxy.close()
    with db.open() as store:
        assert [(r["queue_id"], r["lease_owner"]) for r in store.queue.rows()] == [
            (taken, "another-consumer")]


def test_a_batch_completion_under_one_owner_is_one_statement(db: Db, cluster: Cluster) -> None:
    """Rows claimed under one owner are completed by one statement sent alone (no BEGIN or
    COMMIT: one round trip); rows claimed under two owners, in one transaction."""
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with _claimed_client(db, proxy, 4) as client:
            one = [r.queue_id for r in client.claim(2)]
            two = [r.queue_id for r in client.claim(1, owner="w1") + client.claim(1, owner="w2")]
            for batch, alone in ((one, True), (two, False)):
                start = len(proxy.requests)
                client.complete(batch)
                sent = b"".join(proxy.requests[start:])
                assert sent.count(b"DELETE ") == (1 if alone else 2)
                assert (b"BEGIN" in sent, b"COMMIT" in sent) == (not alone, not alone)
    finally:
        proxy.close()
    with db.open() as store:
        assert store.queue.count(None, None) == 0


def test_a_claim_is_one_statement_sent_alone(db: Db, cluster: Cluster) -> None:
    """A claim goes as one statement without BEGIN or COMMIT: one round trip."""
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with _claimed_client(db, proxy, 2) as client:
            start = len(proxy.requests)
            rows = client.claim(2)
            sent = b"".join(proxy.requests[start:])
            assert (sent.count(b"UPDATE ingestion_queue"), b"BEGIN" in sent, b"COMMIT" in sent) == (
                1, False, False)
            client.complete([r.queue_id for r in rows])
    finally:
        proxy.close()


@pytest.mark.parametrize("cut", ["answer", "request"])
def test_a_claim_cut_off_returns_what_it_took(db: Db, cluster: Cluster, cut: str) -> None:
    """A claim (one statement sent alone) whose connection is cut after the server answered
    it, or before the server got it: the client returns the rows held under its name (read
    back, or claimed again), none of them left stranded under a lease nobody knows of."""
    proxy = CuttingProxy(str(cluster.dir))
    try:
        with _claimed_client(db, proxy, 3) as client:
            proxy.marker, proxy.cut = b"UPDATE ", cut
            rows = client.claim(2)
            assert proxy.done == cut
            assert len(rows) == 2
            client.complete([r.queue_id for r in rows])
    finally:
        proxy.close()
    with db.open() as store:
        assert [r["status"] for r in store.queue.rows()] == ["pending"]
