"""`QueueClient.wait` answers for the rows its filters would claim: a row due in another
collection or tenant, scheduled later, or leased to someone else does not end the wait.

Real databases, each test on an SQLite file and on a PostgreSQL schema (fixture `dbstore`);
nothing sleeps: a wait that must find nothing gets a short timeout and returns False."""
from __future__ import annotations

import pytest
from helpers.db import iso, seed

from wqscan.queue.consumer import QueueClient

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
