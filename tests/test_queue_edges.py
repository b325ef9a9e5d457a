"""QueueClient at the edges of its rules: `wait` answers for the rows its filters would
claim (a row due in another collection or tenant, scheduled later, or leased to someone
else does not end the wait), and a claim of n takes n in all, from due rows and expired
leases together.

Real databases, each test on an SQLite file and on a PostgreSQL schema (fixture `dbstore`);
nothing sleeps: a wait that must find nothing gets a short timeout and returns False."""
from __future__ import annotations

import pytest
from helpers.db import SEED_INSERT, iso, seed

from wqscan.errors import UsageError
from wqscan.queue.consumer import QueueClient
from wqscan.store import Store

pytestmark = pytest.mark.scanner_free

SHORT = 0.2  # seconds a wait that finds nothing lasts


@pytest.fixture
def client(dbstore):
    c = QueueClient(dbstore.target, owner="waiter")
    yield c
    c.close()


def test_wait_sees_only_the_rows_its_filters_claim(dbstore, client) -> None:
    seed(dbstore, "/d/a.txt", collection="docs", tenant="t1")
    assert client.wait(SHORT) is True
    assert client.wait(SHORT, collection="docs") is True
    assert client.wait(SHORT, tenant_id="t1") is True
    assert client.wait(SHORT, collection="docs", tenant_id="t1") is True
    assert client.wait(SHORT, collection="code") is False
    assert client.wait(SHORT, tenant_id="t2") is False
    assert client.wait(SHORT, collection="docs", tenant_id="t2") is False
    assert client.wait(SHORT, collection="code", tenant_id="t1") is False


def test_wait_ignores_rows_not_yet_due_or_leased(dbstore, client) -> None:
    seed(dbstore, "/d/later.txt", scheduled_at=iso(3600))
    assert client.wait(SHORT) is False
    seed(dbstore, "/d/now.txt")
    other = QueueClient(dbstore.target, owner="other")
    try:
        assert [r.file_absolute_path for r in other.claim(5, lease_seconds=600)] == ["/d/now.txt"]
        assert client.wait(SHORT) is False  # the only due row is leased to `other`
    finally:
        other.close()


def test_wait_sees_a_due_row_that_another_transaction_is_changing(dbstore, client) -> None:
    """A due row that another transaction is changing (a producer merging into it, say) is
    still due: the look locks nothing and skips no locked row."""
    queue_id = seed(dbstore, "/d/a.txt")
    with dbstore.write():
        dbstore.queue.set_fields(queue_id, {"priority": 7})
        assert client.wait(0) is True


@pytest.mark.parametrize("kw", [{"collection": "docs"}, {"tenant_id": "t2"}])
def test_a_filtered_claim_with_nothing_due_leaves_the_write_lock_alone(dbstore, client,
                                                                       kw) -> None:
    """A claim whose collection or tenant has nothing due returns at once, even while a
    scan holds the database's write lock and rows of another collection or tenant are due:
    an idle consumer's poll never waits for the scanner (on SQLite, never takes its lock)."""
    seed(dbstore, "/d/a.txt", collection="code", tenant="t1")
    with Store.open(dbstore.target) as scanner, scanner.write():
        scanner.queue.set_fields(seed(scanner, "/d/b.txt", collection="code", tenant="t1"),
                                 {"priority": 7})
        assert client.claim(5, **kw) == []


def test_a_claim_after_one_that_took_less_than_asked_leaves_the_write_lock_alone(
        dbstore, client) -> None:
    """A consumer goes straight for the write lock only after a claim that took all it
    asked for with the same filters (more is likely due); otherwise it looks first, so its
    next claim with nothing due returns at once while a scan holds the lock."""
    seed(dbstore, "/d/a.txt", collection="code")
    seed(dbstore, "/d/b.txt", collection="code")
    assert len(client.claim(1, collection="code")) == 1  # all it asked for
    assert len(client.claim(5)) == 1  # less
    with Store.open(dbstore.target) as scanner, scanner.write():
        assert client.claim(5) == []
    seed(dbstore, "/d/c.txt", collection="code")
    seed(dbstore, "/d/d.txt", collection="code")
    assert len(client.claim(1, collection="code")) == 1  # all it asked for, with a filter
    with Store.open(dbstore.target) as scanner, scanner.write():
        assert client.claim(1, collection="docs") == []  # other filters: it looks first


def test_a_claim_of_n_takes_n_from_pending_rows_and_expired_leases_together(dbstore,
                                                                           client) -> None:
    expired = seed(dbstore, "/d/expired.txt", priority=9, status="in_progress",
                   lease_owner="gone", lease_expires_at=iso(-60))
    pending = seed(dbstore, "/d/pending.txt", priority=5)
    assert [r.queue_id for r in client.claim(1)] == [expired]
    assert [r.queue_id for r in client.claim(1)] == [pending]
    assert client.claim(1) == []


def test_wait_takes_zero_or_more_seconds(dbstore, client) -> None:
    assert client.wait(0) is False  # a look, no wait
    seed(dbstore, "/d/a.txt")
    assert client.wait(0) is True
    for bad in (-1, -0.001, float("nan")):
        with pytest.raises(UsageError) as e:
            client.wait(bad)
        assert (str(e.value), e.value.field) == (f"wait takes 0 or more seconds, not {bad!r}",
                                                 "timeout")


def test_retry_of_more_ids_than_one_statement_holds(dbstore, client) -> None:
    """1,200 failed rows retried by their ids in one call (SQLite reads them 500 at a time):
    every one is pending again."""
    dbstore.conn.executemany(SEED_INSERT, [(f"/d/{i:04}", "c", "default", "main", "ingest", 5,
                                            None) for i in range(1200)])
    dbstore.conn.execute("UPDATE ingestion_queue SET status = 'failed', retry_count = 3")
    failed = [r["queue_id"] for r in dbstore.queue.rows(limit=None)]
    assert client.retry(failed) == 1200
    assert {(r["status"], r["retry_count"]) for r in dbstore.queue.rows(limit=None)} == \
        {("pending", 0)}


def test_fail_and_complete_of_more_ids_than_one_statement_holds(dbstore, client) -> None:
    """1,200 ids in one call (SQLite reads and deletes them 500 at a time): every one is
    recorded, then every one completed."""
    dbstore.conn.executemany(SEED_INSERT, [(f"/d/{i:04}", "c", "default", "main", "ingest", 5,
                                            None) for i in range(1200)])
    taken = [r.queue_id for r in client.claim(1200)]
    assert len(taken) == 1200
    assert all(r.status == "pending" for r in client.fail(taken, "boom"))
    assert {r["retry_count"] for r in dbstore.queue.rows(limit=None)} == {1}
    dbstore.conn.execute("UPDATE ingestion_queue SET scheduled_at = ?", (iso(-1),))
    again = [r.queue_id for r in client.claim(1200)]
    client.complete(again)
    assert dbstore.queue.count(None, None) == 0
