"""The consumer side of `ingestion_queue` through `wqscan.QueueClient`: claim order
and filters, leases and their expiry, one file at a time, fail with backoff and coalescing,
retry, purge, stats, rows written by a foreign seed INSERT, and argument validation.

Real databases, each test on an SQLite file and on a PostgreSQL schema (fixture `dbstore`),
and (where rows come from scans) real trees; time never passes by sleeping:
leases expire by a claim with a tiny lease or by rewriting `lease_expires_at`, backoffs by
rewriting `scheduled_at`."""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
from helpers.db import from_now, iso, queue_dump, scan, seed, set_cols, watch
from helpers.trees import OLD_NS, h, write

import wqscan
from wqscan.clock import iso_from_ns, parse_iso
from wqscan.errors import EXIT_FAILED, EXIT_USAGE, LeaseLost, UsageError, WqscanError
from wqscan.queue.consumer import QueueClient, QueueRow

pytestmark = pytest.mark.scanner_free

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
T1 = OLD_NS + 1_000_000_000  # later fixed mtimes, still far older than any settle window
T2 = OLD_NS + 2_000_000_000
TOL = 5.0  # seconds of slack when comparing computed times with the clock
TINY = 1e-6  # a lease that expires at the current millisecond: the next claim sees it expired


# -- helpers -------------------------------------------------------------------------------

def row(dbstore, queue_id: str) -> dict | None:
    """One row straight from the table (metadata decoded), or None."""
    for d in dbstore.queue.rows(queue_ids=[queue_id]):
        d["metadata"] = json.loads(d["metadata"]) if d["metadata"] else None
        return d
    return None


def all_rows(dbstore) -> list[dict]:
    ids = [r[0] for r in dbstore.conn.execute(
        "SELECT queue_id FROM ingestion_queue ORDER BY queued_timestamp, queue_id")]
    return [row(dbstore, q) for q in ids]


def expire(dbstore, queue_id: str) -> None:
    set_cols(dbstore, queue_id, lease_expires_at=iso(-60))


def make_due(dbstore, queue_id: str) -> None:
    set_cols(dbstore, queue_id, scheduled_at=iso(-1))


def ids(rows) -> list[str]:
    return [r.queue_id for r in rows]


@pytest.fixture
def clients(dbstore):
    """Factory of QueueClients, each on its own connection to the test database."""
    made: list[QueueClient] = []

    def make(owner: str | None = None, **kw) -> QueueClient:
        c = QueueClient(dbstore.target, owner=owner, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def real(root: Path, rel: str) -> str:
    return os.path.realpath(str(root)) + "/" + rel


# -- construction and validation -------------------------------------------------------------

def test_queueclient_is_exported_and_takes_a_path_or_a_store(dbstore):
    assert wqscan.QueueClient is QueueClient
    qid = seed(dbstore, "/d/a.txt")
    by_store = QueueClient(dbstore, owner="s")
    assert by_store.store is dbstore
    assert ids(by_store.claim(5)) == [qid]
    by_store.complete(qid)
    assert all_rows(dbstore) == []
    with QueueClient(dbstore, owner="t") as borrowed:
        assert borrowed.rows() == []
    assert all_rows(dbstore) == []  # the caller's Store is still open after the client closes
    with QueueClient(dbstore.target) as by_path:
        assert by_path.store is not dbstore and by_path.store.path == dbstore.path
        assert by_path.max_retries == 3 and by_path.backoff_seconds == 60.0
        assert by_path.rows() == []


def test_default_owners_differ_between_clients(dbstore, clients):
    a, b = clients(), clients()
    assert a.owner and b.owner and a.owner != b.owner
    qid = seed(dbstore, "/d/a.txt")
    assert a.claim(1)[0].lease_owner == a.owner
    assert row(dbstore, qid)["lease_owner"] == a.owner


@pytest.mark.parametrize("kw", [{"max_retries": 0}, {"max_retries": -1}, {"max_retries": 2.5},
                                {"max_retries": "3"}, {"max_retries": True},
                                {"backoff_seconds": -1.0},
                                {"backoff_seconds": math.nan}])
def test_client_rejects_bad_settings(dbstore, kw):
    [(name, value)] = kw.items()
    with pytest.raises(UsageError) as e:
        QueueClient(dbstore.target, **kw)
    assert e.value.exit_code == EXIT_USAGE
    assert e.value.field == name
    assert str(e.value).startswith(f"{name} must be ") and str(e.value).endswith(f"{value!r}")


def test_client_of_a_database_that_is_not_there_creates_none(tmp_path):
    """A consumer pointed at a database that does not exist (a mistyped path) fails, naming
    it, and leaves no new database behind."""
    db = tmp_path / "mistyped.db"
    with pytest.raises(WqscanError, match=re.escape(f"database {db} does not exist")):
        QueueClient(str(db))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n, lease, field", [
    (0, 300, "n"), (-1, 300, "n"), (True, 300, "n"), (False, 300, "n"), (1.5, 300, "n"),
    ("2", 300, "n"), (None, 300, "n"), (100_001, 300, "n"),
    (1, 0, "lease_seconds"), (1, -5, "lease_seconds"), (1, 1e8, "lease_seconds"),
    (1, 10**7 + 0.001, "lease_seconds"), (1, math.nan, "lease_seconds")])
def test_claim_rejects_bad_arguments_and_changes_nothing(dbstore, clients, n, lease, field):
    seed(dbstore, "/d/a.txt")
    before = queue_dump(dbstore)
    with pytest.raises(UsageError) as e:
        clients("a").claim(n, lease_seconds=lease)
    assert e.value.field == field
    if field == "lease_seconds":
        assert str(e.value) == f"lease_seconds must be above 0 and at most 10000000, " \
            f"not {lease!r}"
    else:
        assert str(e.value) == f"claim takes a whole number of rows from 1 to 100000, not {n!r}"
    assert queue_dump(dbstore) == before


def test_claim_takes_a_lease_of_at_most_ten_million_seconds(dbstore, clients):
    qid = seed(dbstore, "/d/a.txt")
    assert ids(clients("a").claim(1, lease_seconds=10**7)) == [qid]


def test_claim_asks_for_at_most_a_hundred_thousand_rows(dbstore, clients):
    qid = seed(dbstore, "/d/a.txt")
    assert ids(clients("a").claim(100_000)) == [qid]


def test_rows_purge_reject_bad_status_and_limit(dbstore, clients):
    c = clients("a")
    seed(dbstore, "/d/a.txt", status="failed")
    before = queue_dump(dbstore)
    for call in (lambda: c.rows(status="bogus"), lambda: c.rows(status="PENDING"),
                 lambda: c.rows(limit=-1), lambda: c.rows(limit=1.5),
                 lambda: c.rows(limit=True),
                 lambda: c.purge("pending"), lambda: c.purge("in_progress"),
                 lambda: c.purge("bogus"), lambda: c.purge("")):
        with pytest.raises(UsageError):
            call()
    assert queue_dump(dbstore) == before


# -- claim: order, filters, lease ------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2, 10])
def test_claim_order_is_priority_then_scheduled_at_then_queued_timestamp(dbstore, clients,
                                                                         batch):
    early, late = iso(-3600), iso(-60)
    q_old, q_new = "2020-01-01T00:00:00.000Z", "2021-01-01T00:00:00.000Z"
    expect = [
        seed(dbstore, "/d/p9", "update", 9, scheduled_at=late, queued_timestamp=q_new),
        seed(dbstore, "/d/p7-early", "delete", 7, scheduled_at=early, queued_timestamp=q_new),
        seed(dbstore, "/d/p7-late-oldq", "ingest", 7, scheduled_at=late, queued_timestamp=q_old),
        seed(dbstore, "/d/p7-late-newq", "ingest", 7, scheduled_at=late, queued_timestamp=q_new),
        seed(dbstore, "/d/p0", "ingest", 0, scheduled_at=early, queued_timestamp=q_old),
    ]
    # inserted in an order that differs from the expected one; claimed `batch` at a time
    c, got = clients("a"), []
    while part := c.claim(batch):
        assert len(part) == min(batch, 5 - len(got))
        got += part
    assert ids(got) == expect
    assert [r.file_absolute_path for r in got] == ["/d/p9", "/d/p7-early", "/d/p7-late-oldq",
                                                  "/d/p7-late-newq", "/d/p0"]
    assert [r.priority for r in got] == [9, 7, 7, 7, 0]


def test_claim_takes_at_most_n_in_claim_order(dbstore, clients):
    qs = [seed(dbstore, f"/d/{i}", priority=p, queued_timestamp=f"2020-01-0{i + 1}T00:00:00.000Z")
          for i, p in enumerate([1, 6, 3, 6, 2])]
    a, b = clients("a"), clients("b")
    assert ids(a.claim(2)) == [qs[1], qs[3]]
    assert ids(b.claim(1)) == [qs[2]]
    assert ids(b.claim(5)) == [qs[4], qs[0]]
    assert b.claim(5) == []
    assert {r["queue_id"]: r["lease_owner"] for r in all_rows(dbstore)} == {
        qs[0]: "b", qs[1]: "a", qs[2]: "b", qs[3]: "a", qs[4]: "b"}


def test_claim_skips_rows_scheduled_in_the_future(dbstore, clients):
    now_row = seed(dbstore, "/d/now")
    later = seed(dbstore, "/d/later", priority=10, scheduled_at=iso(3600))
    c = clients("a")
    assert ids(c.claim(10)) == [now_row]
    assert c.claim(10) == []
    assert row(dbstore, later)["status"] == "pending"
    make_due(dbstore, later)
    assert ids(c.claim(10)) == [later]


def test_claim_filters_by_collection_and_tenant(dbstore, clients):
    def at(i: int) -> str:
        return f"2020-01-01T00:00:00.00{i}Z"

    a1 = seed(dbstore, "/d/1", collection="A", tenant="t1", queued_timestamp=at(1))
    a2 = seed(dbstore, "/d/2", collection="A", tenant="t2", queued_timestamp=at(2))
    b1 = seed(dbstore, "/d/3", collection="B", tenant="t1", queued_timestamp=at(3))
    b2 = seed(dbstore, "/d/4", collection="B", tenant="t2", queued_timestamp=at(4))
    c = clients("a")
    assert c.claim(10, collection="nope") == []
    assert c.claim(10, tenant_id="nope") == []
    assert ids(c.claim(10, collection="A", tenant_id="t2")) == [a2]
    assert ids(c.claim(10, collection="B")) == [b1, b2]
    assert ids(c.claim(10, tenant_id="t1")) == [a1]
    assert c.claim(10) == []
    # the filters also apply to rows whose lease expired
    for q in (a1, a2, b1, b2):
        expire(dbstore, q)
    assert ids(c.claim(10, collection="A")) == [a1, a2]
    assert ids(c.claim(10, tenant_id="t2")) == [b2]


def test_a_finished_claim_is_forgotten(dbstore, clients):
    """A consumer forgets the name it claimed a row under once it finished with the row:
    when another consumer claims the row again under that same name (a job's name, say),
    the first one's `complete` of the id acts under its own name, so it is refused and the
    row stays the second one's."""
    qid = seed(dbstore, "/d/a.txt")
    first, second = clients("first", backoff_seconds=0), clients("second")
    assert ids(first.claim(1, owner="job")) == [qid]
    assert first.fail(qid, "try again").status == "pending"
    assert ids(second.claim(1, owner="job")) == [qid]
    with pytest.raises(LeaseLost):
        first.complete(qid)
    assert (row(dbstore, qid)["status"], row(dbstore, qid)["lease_owner"]) == \
        ("in_progress", "job")
    second.complete(qid, owner="job")
    assert row(dbstore, qid) is None


def test_claim_marks_rows_in_progress_under_a_lease(dbstore, clients):
    qid = seed(dbstore, "/d/a.txt", "update", 6, tenant="t", branch="dev", retry_from="x",
               metadata={"k": 1})
    queued = row(dbstore, qid)["queued_timestamp"]
    c = clients("me")
    before = time.time_ns()
    [r] = c.claim(1, lease_seconds=120)
    assert isinstance(r, QueueRow)
    assert r == QueueRow(
        queue_id=qid, file_absolute_path="/d/a.txt", collection_name="c", tenant_id="t",
        branch="dev", operation="update", priority=6, status="in_progress",
        queued_timestamp=queued, scheduled_at=r.scheduled_at, retry_count=0, retry_from="x",
        error_message=None, lease_owner="me", lease_expires_at=r.lease_expires_at,
        watch_id=None, metadata={"k": 1})
    assert ISO_MS_Z.match(r.lease_expires_at)
    assert abs((parse_iso(r.lease_expires_at) - before) / 1e9 - 120) < TOL
    stored = row(dbstore, qid)
    assert (stored["status"], stored["lease_owner"], stored["lease_expires_at"]) == \
        ("in_progress", "me", r.lease_expires_at)
    assert r.to_json()["metadata"] == {"k": 1} and r.to_json()["queue_id"] == qid
    # an explicit owner names the lease instead of the client's own
    q2 = seed(dbstore, "/d/b.txt")
    before = time.time_ns()
    [r2] = c.claim(1, owner="other")
    after = time.time_ns()
    assert r2.queue_id == q2 and row(dbstore, q2)["lease_owner"] == "other"
    # the default lease is 300 s from the claim (its time stored to the millisecond)
    assert before - 1_000_000 < parse_iso(r2.lease_expires_at) - 300 * 10**9 <= after


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "3", '"text"', "", '{"a": 1} x',
                                  '{"a": 1}{}', ' {"a": 1', "{} []"],
                         ids=["not-json", "list", "number", "string", "empty", "trailing",
                              "two-objects", "cut-short", "object-then-list"])
def test_metadata_another_tool_wrote_that_is_no_object_reads_as_none(dbstore, clients, text):
    """Metadata is a JSON object or nothing: a row whose metadata another tool wrote as
    anything else is claimed with metadata None, not as that value."""
    qid = seed(dbstore, "/d/a.txt", metadata=text)
    [r] = clients("w").claim(1)
    assert (r.queue_id, r.metadata, r.to_json()["metadata"]) == (qid, None, None)


@pytest.mark.parametrize("text", ['{"a":1}', ' {"a": [1, 2]}\n', '\t{\n  "a": "x"\n}  '],
                         ids=["compact", "spaced", "pretty"])
def test_metadata_another_tool_wrote_with_whitespace_reads_as_that_object(dbstore, clients,
                                                                          text):
    seed(dbstore, "/d/a.txt", metadata=text)
    [r] = clients("w").claim(1)
    assert r.metadata == json.loads(text)


def test_seed_insert_rows_are_claimable_like_any_other(dbstore, clients):
    qid = seed(dbstore, "/srv/docs/a.md", "delete", 8, collection="docs", tenant="acme",
               branch="feature", retry_from="2020-01-01")
    r = row(dbstore, qid)
    assert UUID4.match(qid)
    assert (r["status"], r["retry_count"], r["watch_id"], r["metadata"]) == \
        ("pending", 0, None, None)
    assert ISO_MS_Z.match(r["queued_timestamp"]) and ISO_MS_Z.match(r["scheduled_at"])
    assert abs(from_now(r["queued_timestamp"])) < TOL
    c = clients("w")
    [got] = c.claim(3, collection="docs", tenant_id="acme")
    assert (got.queue_id, got.operation, got.priority, got.branch, got.retry_from,
            got.metadata, got.watch_id) == (qid, "delete", 8, "feature", "2020-01-01", None, None)
    # the seed INSERT fails only while the file has a pending row; in progress it is fine
    q2 = seed(dbstore, "/srv/docs/a.md", "ingest", 5, collection="docs")
    assert row(dbstore, q2)["status"] == "pending"
    c.complete(qid)
    assert ids(c.claim(3)) == [q2]


def test_two_clients_never_claim_the_same_row(dbstore, clients):
    qs = {seed(dbstore, f"/d/{i}") for i in range(7)}
    a, b, c = clients("a"), clients("b"), clients("c")
    got_a, got_b, got_c = a.claim(3), b.claim(3), c.claim(3)
    assert (len(got_a), len(got_b), len(got_c)) == (3, 3, 1)
    assert set(ids(got_a)) | set(ids(got_b)) | set(ids(got_c)) == qs
    assert a.claim(3) == [] and b.claim(3) == []


# -- leases ----------------------------------------------------------------------------------

def test_expired_lease_is_reclaimed_by_another_client_keeping_its_id(dbstore, clients):
    q1, q2 = seed(dbstore, "/d/1", priority=7), seed(dbstore, "/d/2")
    queued = {q: row(dbstore, q)["queued_timestamp"] for q in (q1, q2)}
    a, b = clients("a"), clients("b")
    assert ids(a.claim(5, lease_seconds=TINY)) == [q1, q2]
    got = b.claim(5)
    assert ids(got) == [q1, q2]
    assert [r.lease_owner for r in got] == ["b", "b"]
    for q in (q1, q2):
        r = row(dbstore, q)
        assert (r["status"], r["lease_owner"], r["retry_count"], r["queued_timestamp"]) == \
            ("in_progress", "b", 0, queued[q])
        assert abs(from_now(r["lease_expires_at"]) - 300) < TOL
    assert len(all_rows(dbstore)) == 2


def test_rewound_lease_is_reclaimed_and_live_lease_is_not(dbstore, clients):
    q1, q2 = seed(dbstore, "/d/1"), seed(dbstore, "/d/2")
    a, b = clients("a"), clients("b")
    assert len(a.claim(5)) == 2
    assert b.claim(5) == []
    expire(dbstore, q2)
    assert ids(b.claim(5)) == [q2]
    assert (row(dbstore, q1)["lease_owner"], row(dbstore, q2)["lease_owner"]) == ("a", "b")


def test_in_progress_row_without_lease_is_claimable(dbstore, clients):
    """A foreign consumer that marked a row in progress without a lease left it to anyone."""
    qid = seed(dbstore, "/d/1", status="in_progress", lease_owner="old-tool")
    assert row(dbstore, qid)["lease_expires_at"] is None
    got = clients("a").claim(5)
    assert ids(got) == [qid] and got[0].lease_owner == "a"


def taken_over(dbstore, clients) -> tuple[str, QueueClient, QueueClient, list[tuple]]:
    """A row claimed by `a` under a lease that expires at once, then claimed by `b`: (its
    queue_id, a, b, the whole queue then)."""
    qid = seed(dbstore, "/d/1")
    a, b = clients("a"), clients("b")
    a.claim(1, lease_seconds=TINY)
    b.claim(1)
    return qid, a, b, queue_dump(dbstore)


def test_complete_after_lost_lease_raises_and_leaves_the_others_row(dbstore, clients):
    """complete by a consumer whose lease was taken over raises LeaseLost (exit 1, naming
    the row and its owner) and changes nothing; once the row is gone it still raises."""
    qid, a, b, held = taken_over(dbstore, clients)
    with pytest.raises(LeaseLost) as e:
        a.complete(qid)
    assert e.value.exit_code == EXIT_FAILED
    assert qid in str(e.value) and "b" in str(e.value)
    assert (e.value.queue_ids, str(e.value)) == ([qid], e.value.lost[qid])  # just its reason
    assert queue_dump(dbstore) == held
    b.complete(qid)
    assert all_rows(dbstore) == []
    with pytest.raises(LeaseLost):  # gone now
        a.complete(qid)


def test_fail_after_lost_lease_raises_and_leaves_the_others_row(dbstore, clients):
    """fail by a consumer whose lease was taken over raises LeaseLost and leaves the new
    owner's row as it is (no retry counted, no error recorded)."""
    qid, a, b, held = taken_over(dbstore, clients)
    with pytest.raises(LeaseLost):
        a.fail(qid, "boom")
    assert queue_dump(dbstore) == held
    r = row(dbstore, qid)
    assert (r["status"], r["lease_owner"], r["retry_count"], r["error_message"]) == \
        ("in_progress", "b", 0, None)


def test_complete_and_fail_after_own_lease_expired_but_not_reclaimed(dbstore, clients):
    q1, q2 = seed(dbstore, "/d/1"), seed(dbstore, "/d/2")
    a = clients("a")
    a.claim(2, lease_seconds=TINY)
    expire(dbstore, q1)
    expire(dbstore, q2)
    a.complete(q1)
    r = a.fail(q2, "late")
    assert (r.status, r.retry_count, r.error_message, r.lease_owner) == \
        ("pending", 1, "late", None)
    assert [x["queue_id"] for x in all_rows(dbstore)] == [q2]


def test_complete_of_rows_not_held_raises_lease_lost(dbstore, clients):
    pending = seed(dbstore, "/d/p", priority=6)
    failed = seed(dbstore, "/d/f", status="failed", retry_count=3)
    other = seed(dbstore, "/d/o")
    a, b = clients("a"), clients("b")
    assert ids(b.claim(5)) == [pending, other]
    set_cols(dbstore, pending, status="pending", lease_owner=None, lease_expires_at=None)
    before = queue_dump(dbstore)
    for q in (pending, failed, other, "no-such-id"):
        with pytest.raises(LeaseLost):
            a.complete(q)
        with pytest.raises(LeaseLost):
            a.fail(q, "x")
    assert queue_dump(dbstore) == before


def test_complete_with_an_explicit_owner(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    clients("a").claim(1, owner="worker-7")
    b = clients("b")
    with pytest.raises(LeaseLost):
        b.complete(qid)
    b.complete(qid, owner="worker-7")
    assert all_rows(dbstore) == []


def test_client_completes_under_the_owner_it_claimed_as(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    a = clients("a")
    a.claim(1, owner="alias")
    a.complete(qid)  # remembers the claim's owner
    assert all_rows(dbstore) == []


def test_complete_of_a_row_this_client_never_claimed_acts_under_its_owner(dbstore, clients):
    """A client started again under the owner that claimed a row (a restarted worker)
    completes it."""
    qid = seed(dbstore, "/d/1")
    clients("w").claim(1)
    clients("w").complete(qid)
    assert all_rows(dbstore) == []


def test_fail_acts_under_the_claims_owner_or_the_clients(dbstore, clients):
    """fail, like complete, records a row under the owner it was claimed as; a row this
    client never claimed, under the client's own owner."""
    q1, q2 = seed(dbstore, "/d/1", priority=9), seed(dbstore, "/d/2")
    a = clients("a")
    assert ids(a.claim(1, owner="alias")) == [q1]
    assert a.fail(q1, "x").status == "pending"  # remembers the claim's owner
    assert ids(clients("w").claim(1)) == [q2]
    with pytest.raises(LeaseLost):
        a.fail(q2, "y")
    assert clients("w").fail(q2, "y").status == "pending"  # another client, the same owner
    assert [r["retry_count"] for r in all_rows(dbstore)] == [1, 1]


# -- batch acknowledgement -------------------------------------------------------------------

def _mixed_batch(dbstore, clients) -> tuple[QueueClient, QueueClient, dict[str, str]]:
    """Four rows claimed by `a`: two still its own, one taken over by `b` after the lease
    expired, one completed by `b` since; plus an id never queued. (a, b, ids by role)."""
    q = {k: seed(dbstore, f"/d/{k}", priority=p)
         for k, p in (("mine1", 9), ("mine2", 8), ("taken", 7), ("gone", 6))}
    a, b = clients("a"), clients("b")
    assert ids(a.claim(4)) == [q["mine1"], q["mine2"], q["taken"], q["gone"]]
    for k in ("taken", "gone"):
        expire(dbstore, q[k])
    assert sorted(ids(b.claim(5))) == sorted([q["taken"], q["gone"]])
    b.complete(q["gone"])
    q["never"] = "no-such-id"
    return a, b, q


def test_complete_of_a_row_handed_back_says_so(dbstore, clients):
    """A row whose lease expired and that went back to pending (the consumer failed it under
    another name, say) is no longer this consumer's: complete says why, word for word."""
    qid = seed(dbstore, "/d/a.txt")
    a = clients("a", backoff_seconds=0)
    assert ids(a.claim(1)) == [qid]
    set_cols(dbstore, qid, status="pending", lease_owner=None, lease_expires_at=None)
    with pytest.raises(LeaseLost) as e:
        a.complete(qid)
    assert str(e.value) == f"queue row {qid} is pending, not in progress as a: its lease " \
        "expired and it was handed back"
    assert row(dbstore, qid)["status"] == "pending"


def test_complete_of_a_list_finishes_the_held_and_reports_the_lost_together(dbstore,
                                                                           clients):
    """complete([...]) deletes the rows still held and leaves the others as they are, then
    raises one LeaseLost naming every id no longer held, each with its reason, in the
    order given (an id completed by another and one never queued both say so)."""
    a, b, q = _mixed_batch(dbstore, clients)
    taken = row(dbstore, q["taken"])
    order = [q["never"], q["mine1"], q["taken"], q["mine2"], q["gone"], q["mine1"]]
    with pytest.raises(LeaseLost) as e:
        a.complete(order)
    assert e.value.queue_ids == [q["never"], q["taken"], q["gone"]]
    assert e.value.exit_code == EXIT_FAILED
    assert e.value.lost[q["taken"]] == f"queue row {q['taken']} is held by b, not a: lost to " \
        "another consumer after its lease expired, or never claimed by this one"
    for gone in ("gone", "never"):
        assert e.value.lost[q[gone]] == f"queue row {q[gone]} is not in the queue (completed " \
            "or purged since it was claimed, or never queued)"
    assert str(e.value) == "3 of 5 queue rows were not this consumer's (the others were " \
        "finished): " + "; ".join(e.value.lost[i] for i in e.value.queue_ids)
    assert all_rows(dbstore) == [taken]  # mine1 and mine2 gone, b's row as it was
    b.complete([q["taken"]])
    assert all_rows(dbstore) == []


def test_complete_of_a_list_all_held_or_empty_raises_nothing(dbstore, clients):
    qs = [seed(dbstore, f"/d/{i}") for i in range(3)]
    a = clients("a")
    assert sorted(ids(a.claim(3))) == sorted(qs)
    a.complete([])
    a.complete(tuple(qs))
    assert all_rows(dbstore) == []
    assert a.fail([], "x") == []


def test_complete_of_a_list_uses_each_rows_claim_owner(dbstore, clients):
    """Rows claimed under two owners by one client are completed together, each as the
    owner it was claimed as; an explicit owner applies to every id."""
    q1, q2, q3 = (seed(dbstore, f"/d/{i}", priority=9 - i) for i in range(3))
    a = clients("a")
    a.claim(1, owner="w1")
    a.claim(1, owner="w2")
    a.complete([q1, q2])
    assert ids(a.claim(1, owner="w3")) == [q3]
    with pytest.raises(LeaseLost):
        clients("b").complete([q3])
    clients("b").complete([q3], owner="w3")
    assert all_rows(dbstore) == []


def test_fail_of_a_list_returns_each_rows_state_and_reports_the_lost(dbstore, tree, clients):
    """fail([...]) records every held row (backoff, failed at max_retries, coalesced away
    with the file's pending row) and returns a value per id, in order; a lost id among
    them raises one LeaseLost after the others are recorded."""
    a = clients("a")
    held = _claim_only(a, tree.path)  # an ingest: a pending delete cancels it out
    tree.change(None)
    again = seed(dbstore, "/d/again", priority=9)
    last = seed(dbstore, "/d/last", priority=8, retry_count=2)
    assert ids(a.claim(2)) == [again, last]
    got = a.fail([again, held.queue_id, last], "boom")
    assert [r.queue_id if r else None for r in got] == [again, None, last]
    assert [(r.status, r.retry_count, r.error_message) for r in (got[0], got[2])] == \
        [("pending", 1, "boom"), ("failed", 3, "boom")]
    assert abs(from_now(got[0].scheduled_at) - 60) < TOL
    assert row(dbstore, held.queue_id) is None and a.claim(5) == []
    make_due(dbstore, again)
    assert ids(a.claim(1)) == [again]
    with pytest.raises(LeaseLost) as e:
        a.fail([again, last, "no-such-id"], "twice")
    assert e.value.queue_ids == [last, "no-such-id"]
    assert (row(dbstore, again)["retry_count"], row(dbstore, last)["error_message"]) == \
        (2, "boom")


# -- one file at a time ----------------------------------------------------------------------

def test_pending_row_of_a_file_in_progress_waits_for_complete(dbstore, clients):
    first = seed(dbstore, "/d/f", "ingest")
    a, b = clients("a"), clients("b")
    assert ids(a.claim(5)) == [first]
    second = seed(dbstore, "/d/f", "update", 9)
    other = seed(dbstore, "/d/g")
    assert ids(b.claim(5)) == [other]
    assert b.claim(5) == []
    assert row(dbstore, second)["status"] == "pending"
    a.complete(first)
    assert ids(b.claim(5)) == [second]


def test_a_file_is_a_path_in_one_collection(dbstore, clients):
    """The same path in another collection is another file: not held back."""
    held = seed(dbstore, "/d/f", collection="A")
    a, b = clients("a"), clients("b")
    assert ids(a.claim(5)) == [held]
    same = seed(dbstore, "/d/f", "update", collection="A")
    other = seed(dbstore, "/d/f", "update", collection="B")
    assert ids(b.claim(5)) == [other]
    assert row(dbstore, same)["status"] == "pending"


def test_pending_row_waits_also_while_the_in_progress_row_is_expired(dbstore, clients):
    first = seed(dbstore, "/d/f", "ingest")
    a, b = clients("a"), clients("b")
    a.claim(5, lease_seconds=TINY)
    second = seed(dbstore, "/d/f", "delete", 8)
    # the expired row is handed on; the newer pending row is not
    got = b.claim(5)
    assert ids(got) == [first] and got[0].lease_owner == "b"
    assert row(dbstore, second)["status"] == "pending"
    b.complete(first)
    assert ids(a.claim(5)) == [second]


def test_one_claim_takes_one_row_per_file(dbstore, clients):
    """Two in-progress rows of one file without a lease (left by a foreign consumer): one
    claim takes only the older one."""
    older = seed(dbstore, "/d/f", "ingest", status="in_progress",
                 queued_timestamp="2020-01-01T00:00:00.000Z")
    newer = seed(dbstore, "/d/f", "update", status="in_progress",
                 queued_timestamp="2020-01-02T00:00:00.000Z")
    got = clients("a").claim(10)
    assert ids(got) == [older]
    assert row(dbstore, newer)["lease_owner"] is None


def test_second_client_does_not_take_another_row_of_a_file_held_by_the_first(dbstore, clients):
    """One file is worked on by one consumer at a time, in queue order: while `a` holds the
    older of two leaseless in-progress rows of a file, `b` must not take the newer one."""
    older = seed(dbstore, "/d/f", "ingest", status="in_progress",
                 queued_timestamp="2020-01-01T00:00:00.000Z")
    newer = seed(dbstore, "/d/f", "update", status="in_progress",
                 queued_timestamp="2020-01-02T00:00:00.000Z")
    a, b = clients("a"), clients("b")
    assert ids(a.claim(10)) == [older]
    assert b.claim(10) == []
    assert row(dbstore, newer)["lease_owner"] is None
    a.complete(older)
    assert ids(b.claim(10)) == [newer]


def test_scan_while_a_file_is_in_progress_queues_a_new_row(dbstore, root, clients):
    f = write(root / "a.txt", b"v1")
    wid = watch(dbstore, root)
    scan(dbstore, wid)
    path = real(root, "a.txt")
    a, b = clients("a"), clients("b")
    [first] = a.claim(5)
    assert (first.operation, first.file_absolute_path, first.metadata["content_hash"]) == \
        ("ingest", path, h(b"v1"))
    held = row(dbstore, first.queue_id)
    write(f, b"v2 changed", T1)
    scan(dbstore, wid)
    rows = all_rows(dbstore)
    assert len(rows) == 2
    assert row(dbstore, first.queue_id) == held  # the scanner never touches it
    [new] = [r for r in rows if r["queue_id"] != first.queue_id]
    assert (new["status"], new["operation"], new["file_absolute_path"]) == \
        ("pending", "update", path)
    assert new["metadata"]["previous_hash"] == h(b"v1")
    assert new["metadata"]["content_hash"] == h(b"v2 changed")
    assert b.claim(5) == []
    a.complete(first.queue_id)
    assert [r["queue_id"] for r in all_rows(dbstore)] == [new["queue_id"]]
    got = b.claim(5)
    assert ids(got) == [new["queue_id"]] and got[0].operation == "update"
    b.complete(new["queue_id"])
    assert all_rows(dbstore) == []


# -- fail and backoff ------------------------------------------------------------------------

def test_fail_backs_off_60_then_120_then_fails_at_the_third(dbstore, clients):
    qid = seed(dbstore, "/d/1", "update", 6)
    queued = row(dbstore, qid)["queued_timestamp"]
    c = clients("a")
    for attempt, delay in ((1, 60), (2, 120)):
        assert ids(c.claim(5)) == [qid]
        r = c.fail(qid, f"error {attempt}")
        assert (r.queue_id, r.status, r.retry_count, r.error_message, r.lease_owner,
                r.lease_expires_at, r.operation, r.priority, r.queued_timestamp) == \
            (qid, "pending", attempt, f"error {attempt}", None, None, "update", 6, queued)
        assert abs(from_now(r.scheduled_at) - delay) < TOL
        assert row(dbstore, qid)["scheduled_at"] == r.scheduled_at
        assert c.claim(5) == []  # not due before the backoff passed
        make_due(dbstore, qid)
    assert ids(c.claim(5)) == [qid]
    r = c.fail(qid, "error 3")
    assert (r.status, r.retry_count, r.error_message, r.lease_owner, r.lease_expires_at) == \
        ("failed", 3, "error 3", None, None)
    stored = row(dbstore, qid)
    assert (stored["status"], stored["retry_count"], stored["error_message"]) == \
        ("failed", 3, "error 3")
    make_due(dbstore, qid)
    assert c.claim(5) == []  # failed rows are never claimed


def test_max_retries_one_fails_at_the_first_failure(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    c = clients("a", max_retries=1)
    c.claim(1)
    r = c.fail(qid, "no")
    assert (r.status, r.retry_count, r.error_message) == ("failed", 1, "no")


def test_max_retries_five_doubles_the_backoff_four_times(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    c = clients("a", max_retries=5)
    for attempt, delay in ((1, 60), (2, 120), (3, 240), (4, 480)):
        assert ids(c.claim(1)) == [qid]
        r = c.fail(qid, f"e{attempt}")
        assert (r.status, r.retry_count) == ("pending", attempt)
        assert abs(from_now(r.scheduled_at) - delay) < TOL
        make_due(dbstore, qid)
    c.claim(1)
    r = c.fail(qid, "e5")
    assert (r.status, r.retry_count, r.error_message) == ("failed", 5, "e5")


def test_backoff_seconds_is_configurable_and_capped_at_a_day(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    c = clients("a", max_retries=10, backoff_seconds=10.0)
    c.claim(1)
    assert abs(from_now(c.fail(qid, "x").scheduled_at) - 10) < TOL
    make_due(dbstore, qid)
    c.claim(1)
    assert abs(from_now(c.fail(qid, "x").scheduled_at) - 20) < TOL
    make_due(dbstore, qid)
    c.claim(1)
    assert abs(from_now(c.fail(qid, "x").scheduled_at) - 40) < TOL
    day = clients("d", max_retries=10, backoff_seconds=50_000.0)
    make_due(dbstore, qid)
    day.claim(1)
    r = day.fail(qid, "x")  # 50000 x 2^3 would be 400000 s
    assert r.retry_count == 4
    assert abs(from_now(r.scheduled_at) - 86400) < TOL


def test_backoff_cap_holds_for_a_very_high_retry_count(dbstore, clients):
    """A row that failed very often (a client with max_retries meaning "keep trying") is
    rescheduled a day later, as the cap says, instead of crashing on 60 x 2^1100."""
    qid = seed(dbstore, "/d/1", retry_count=1100)
    c = clients("a", max_retries=10 ** 6)
    c.claim(1)
    r = c.fail(qid, "still broken")
    assert (r.status, r.retry_count) == ("pending", 1101)
    assert abs(from_now(r.scheduled_at) - 86400) < TOL


def test_zero_backoff_makes_the_row_due_at_once(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    c = clients("a", backoff_seconds=0.0)
    c.claim(1)
    r = c.fail(qid, "x")
    assert abs(from_now(r.scheduled_at)) < TOL
    assert ids(c.claim(1)) == [qid]


def test_fail_to_failed_leaves_the_files_pending_row_alone(dbstore, clients):
    first = seed(dbstore, "/d/f", "ingest")
    c = clients("a", max_retries=1)
    c.claim(1)
    second = seed(dbstore, "/d/f", "update", metadata={"n": 2})
    before = row(dbstore, second)
    r = c.fail(first, "broken")
    assert (r.queue_id, r.status, r.operation) == (first, "failed", "ingest")
    assert row(dbstore, second) == before
    assert ids(c.claim(5)) == [second]


# -- fail coalesced with a newer pending row of the file (the coalescing table) --------------

@pytest.fixture
def tree(dbstore, root):
    """A watch over `root` with a.txt (v1) scanned (its ingest pending); `keep~`, ignored by
    default, keeps the root from ever being empty (the mass-delete guard)."""
    write(root / "keep~", b"ignored")
    f = write(root / "a.txt", b"v1")
    wid = watch(dbstore, root)
    scan(dbstore, wid)

    class Tree:
        path = real(root, "a.txt")

        @staticmethod
        def change(content: bytes | None, mtime_ns: int = T1) -> None:
            """Rewrite a.txt with `content` at `mtime_ns` (None: delete it), then rescan."""
            if content is None:
                f.unlink()
            else:
                write(f, content, mtime_ns)
            scan(dbstore, wid)

        @staticmethod
        def pending() -> dict:
            [r] = [r for r in all_rows(dbstore) if r["status"] == "pending"]
            return r

    Tree.wid = wid
    return Tree


def _claim_only(client, path: str) -> QueueRow:
    got = client.claim(10)
    assert [r.file_absolute_path for r in got] == [path]
    return got[0]


def test_fail_ingest_then_pending_update_stays_ingest(dbstore, tree, clients):
    a = clients("a")
    held = _claim_only(a, tree.path)
    assert held.operation == "ingest"
    tree.change(b"v2")
    newer = tree.pending()
    assert newer["operation"] == "update"
    r = a.fail(held.queue_id, "parse error")
    assert (r.queue_id, r.operation, r.status, r.retry_count, r.error_message, r.priority,
            r.queued_timestamp, r.lease_owner) == \
        (held.queue_id, "ingest", "pending", 1, "parse error", 5, held.queued_timestamp, None)
    assert r.metadata["content_hash"] == h(b"v2")
    assert r.metadata["size"] == 2 and r.metadata["mtime_ns"] == T1
    assert "previous_hash" not in r.metadata
    assert r.metadata["detected_at"] == newer["metadata"]["detected_at"]
    assert abs(from_now(r.scheduled_at) - 60) < TOL
    assert [x["queue_id"] for x in all_rows(dbstore)] == [held.queue_id]


def test_fail_ingest_then_pending_delete_cancels_out(dbstore, tree, clients):
    a = clients("a")
    held = _claim_only(a, tree.path)
    tree.change(None)
    assert tree.pending()["operation"] == "delete"
    assert a.fail(held.queue_id, "gone") is None
    assert all_rows(dbstore) == []
    assert a.claim(10) == []


def _acknowledged(dbstore, tree, client) -> None:
    """Complete the first ingest, so that the next change of a.txt is an update."""
    got = client.claim(10)
    assert [r.operation for r in got] == ["ingest"]
    client.complete(got[0].queue_id)


def _held_update(dbstore, tree, clients) -> tuple[QueueClient, QueueRow]:
    """Consumer `a` completed the first ingest of a.txt and holds the update to v2: (a, that
    row)."""
    a = clients("a")
    _acknowledged(dbstore, tree, a)
    tree.change(b"v2")
    return a, _claim_only(a, tree.path)


def test_fail_update_then_pending_update_keeps_previous_hash(dbstore, tree, clients):
    """A failed update met by a pending update becomes one update keeping the failed row's
    id and the previous_hash the consumer last saw."""
    a, held = _held_update(dbstore, tree, clients)
    assert (held.operation, held.metadata["previous_hash"]) == ("update", h(b"v1"))
    tree.change(b"v3!", T2)
    assert tree.pending()["metadata"]["previous_hash"] == h(b"v2")
    r = a.fail(held.queue_id, "timeout")
    assert (r.queue_id, r.operation, r.status, r.retry_count, r.priority) == \
        (held.queue_id, "update", "pending", 1, 5)
    assert r.metadata["content_hash"] == h(b"v3!")
    assert r.metadata["previous_hash"] == h(b"v1")  # what the consumer last saw
    assert len(all_rows(dbstore)) == 1


def test_fail_update_then_pending_delete_becomes_delete(dbstore, tree, clients):
    """A failed update met by a pending delete becomes a delete (priority 8) keeping the
    failed row's id and queue time, with the last known hash."""
    a, held = _held_update(dbstore, tree, clients)
    tree.change(None)
    newer = tree.pending()
    assert (newer["operation"], newer["priority"]) == ("delete", 8)
    r = a.fail(held.queue_id, "x")
    assert (r.queue_id, r.operation, r.status, r.priority, r.retry_count,
            r.queued_timestamp) == \
        (held.queue_id, "delete", "pending", 8, 1, held.queued_timestamp)
    assert r.metadata["content_hash"] == h(b"v2")  # the last known one
    assert r.metadata["previous_hash"] == h(b"v1")
    assert len(all_rows(dbstore)) == 1


def test_fail_delete_then_pending_ingest_becomes_update(dbstore, tree, clients):
    a = clients("a")
    _acknowledged(dbstore, tree, a)
    tree.change(None)
    held = _claim_only(a, tree.path)
    assert (held.operation, held.metadata["content_hash"]) == ("delete", h(b"v1"))
    tree.change(b"reborn")
    assert tree.pending()["operation"] == "ingest"
    r = a.fail(held.queue_id, "x")
    assert (r.queue_id, r.operation, r.status, r.priority, r.retry_count) == \
        (held.queue_id, "update", "pending", 8, 1)
    assert r.metadata["content_hash"] == h(b"reborn")
    assert r.metadata["previous_hash"] == h(b"v1")
    assert len(all_rows(dbstore)) == 1


@pytest.mark.parametrize("old, new", [("ingest", "ingest"), ("update", "ingest"),
                                      ("delete", "delete"), ("delete", "update")])
def test_fail_coalesces_any_other_pair_into_the_new_operation(dbstore, clients, old, new):
    """Pairs the scanner cannot produce, from foreign rows: the new operation wins; the
    failing row keeps its id and queue time and takes the new row's tenant, branch and
    metadata, with the higher priority."""
    held_id = seed(dbstore, "/d/f", old, 3, tenant="t-old", branch="b-old",
                   queued_timestamp="2020-01-01T00:00:00.000Z",
                   metadata={"content_hash": "aa" * 16, "gen": 1})
    a = clients("a")
    assert ids(a.claim(1)) == [held_id]
    newer = seed(dbstore, "/d/f", new, 9, tenant="t-new", branch="b-new",
                 metadata={"content_hash": "bb" * 16, "gen": 2})
    r = a.fail(held_id, "x")
    assert (r.queue_id, r.operation, r.priority, r.tenant_id, r.branch, r.status,
            r.queued_timestamp, r.retry_count) == \
        (held_id, new, 9, "t-new", "b-new", "pending", "2020-01-01T00:00:00.000Z", 1)
    assert r.metadata["gen"] == 2 and r.metadata["content_hash"] == "bb" * 16
    assert row(dbstore, newer) is None
    assert len(all_rows(dbstore)) == 1


def test_fail_coalesced_keeps_the_later_of_backoff_and_pending_schedule(dbstore, clients):
    held_id = seed(dbstore, "/d/f", "ingest")
    a = clients("a")
    a.claim(1)
    later = iso(7200)
    seed(dbstore, "/d/f", "update", scheduled_at=later)
    r = a.fail(held_id, "x")
    assert (r.queue_id, r.operation, r.scheduled_at) == (held_id, "ingest", later)
    # and the backoff when the pending row is due earlier
    b_id = seed(dbstore, "/d/g", "ingest")
    a.claim(1)
    seed(dbstore, "/d/g", "update", scheduled_at=iso(-30))
    r = a.fail(b_id, "x")
    assert abs(from_now(r.scheduled_at) - 60) < TOL


def test_fail_to_failed_is_not_coalesced(dbstore, clients):
    held_id = seed(dbstore, "/d/f", "ingest")
    a = clients("a", max_retries=1)
    a.claim(1)
    newer = seed(dbstore, "/d/f", "delete", 8)
    r = a.fail(held_id, "x")
    assert (r.status, r.operation) == ("failed", "ingest")
    assert row(dbstore, newer)["status"] == "pending"


# -- retry -----------------------------------------------------------------------------------

def _fail_to_failed(dbstore, clients, *paths: str) -> list[str]:
    c = clients("f", max_retries=1)
    out = []
    for p in paths:
        q = seed(dbstore, p, "update", 10)
        assert ids(c.claim(1)) == [q]
        assert c.fail(q, f"broken {p}").status == "failed"
        out.append(q)
    return out


def test_retry_all_returns_every_failed_row_to_pending(dbstore, clients):
    f1, f2 = _fail_to_failed(dbstore, clients, "/d/1", "/d/2")
    other = seed(dbstore, "/d/3")
    c = clients("a")
    assert c.retry() == 2
    for q in (f1, f2):
        r = row(dbstore, q)
        assert (r["status"], r["retry_count"], r["lease_owner"], r["lease_expires_at"]) == \
            ("pending", 0, None, None)
        assert abs(from_now(r["scheduled_at"])) < TOL
    assert row(dbstore, other)["status"] == "pending"
    assert set(ids(c.claim(10))) == {f1, f2, other}
    assert c.retry() == 0


def test_retry_by_id_returns_only_those(dbstore, clients):
    f1, f2, f3 = _fail_to_failed(dbstore, clients, "/d/1", "/d/2", "/d/3")
    c = clients("a")
    assert c.retry([f3, f1, f3]) == 2
    assert [row(dbstore, q)["status"] for q in (f1, f2, f3)] == ["pending", "failed", "pending"]
    assert c.retry([]) == 0
    assert row(dbstore, f2)["status"] == "failed"


def test_retry_takes_one_id_as_a_string(dbstore, clients):
    """`retry("ID")` returns that one row; a string is one id, not a list of characters
    (an id of another row is not taken for it); the other id-taking calls refuse anything
    but an id, naming the field, changing nothing."""
    f1, f2 = _fail_to_failed(dbstore, clients, "/d/1", "/d/2")
    c = clients("a")
    assert c.retry(f2) == 1
    assert [row(dbstore, q)["status"] for q in (f1, f2)] == ["failed", "pending"]
    assert c.retry((f1,)) == 1
    before = queue_dump(dbstore)
    for call in (lambda: c.retry(42), lambda: c.retry([f1, 7]), lambda: c.complete(42),
                 lambda: c.complete([f1, None]), lambda: c.fail(7, "e")):
        with pytest.raises(UsageError, match="expected a queue id") as e:
            call()
        assert e.value.field == "queue_id"
    assert queue_dump(dbstore) == before


@pytest.mark.parametrize("which", ["unknown", "pending", "in_progress", "mixed"])
def test_retry_refuses_ids_that_are_not_failed_and_changes_nothing(dbstore, clients, which):
    f1, f2 = _fail_to_failed(dbstore, clients, "/d/1", "/d/2")
    pending = seed(dbstore, "/d/p")
    held = seed(dbstore, "/d/h")
    set_cols(dbstore, held, status="in_progress", lease_owner="h", lease_expires_at=iso(300))
    bad = {"unknown": ["no-such-id"], "pending": [pending], "in_progress": [held],
           "mixed": [f1, "no-such-id", f2]}[which]
    culprit, state = {"unknown": ("no-such-id", "not in the queue"),
                      "pending": (pending, "pending"), "in_progress": (held, "in_progress"),
                      "mixed": ("no-such-id", "not in the queue")}[which]
    before = queue_dump(dbstore)
    with pytest.raises(UsageError) as e:
        clients("a").retry(bad)
    assert e.value.exit_code == EXIT_USAGE
    assert (str(e.value), e.value.field) == (
        f"queue row {culprit} is {state}; only failed rows can be retried", "queue_id")
    assert queue_dump(dbstore) == before


def test_retry_coalesces_a_failed_row_with_the_files_pending_row(dbstore, tree, clients):
    a = clients("a", max_retries=1)
    held = _claim_only(a, tree.path)
    assert a.fail(held.queue_id, "x").status == "failed"
    tree.change(b"v2")
    newer = tree.pending()
    assert newer["operation"] == "update"
    assert a.retry() == 1
    [r] = all_rows(dbstore)
    assert (r["queue_id"], r["operation"], r["status"], r["retry_count"],
            r["queued_timestamp"], r["priority"]) == \
        (held.queue_id, "ingest", "pending", 0, held.queued_timestamp, 5)
    assert r["metadata"]["content_hash"] == h(b"v2")
    assert "previous_hash" not in r["metadata"]
    assert abs(from_now(r["scheduled_at"])) < TOL


def test_retry_keeps_a_later_pending_schedule(dbstore, clients):
    [f] = _fail_to_failed(dbstore, clients, "/d/1")
    later = iso(3600)
    seed(dbstore, "/d/1", "update", scheduled_at=later)
    assert clients("a").retry([f]) == 1
    [r] = all_rows(dbstore)
    assert (r["queue_id"], r["status"], r["scheduled_at"]) == (f, "pending", later)


def test_retry_folds_a_files_failed_rows_oldest_first_then_the_pending_row(dbstore, tree,
                                                                          clients):
    """ingest (failed), then delete (failed), then ingest (pending): folded in queue order
    ingest+delete cancel and the pending ingest stays; folding the pending row first would
    leave nothing."""
    a = clients("a", max_retries=1)
    first = _claim_only(a, tree.path)
    a.fail(first.queue_id, "x")
    tree.change(None)
    second = _claim_only(a, tree.path)
    assert second.operation == "delete"
    a.fail(second.queue_id, "y")
    tree.change(b"again")
    third = tree.pending()
    assert third["operation"] == "ingest"
    assert a.retry() == 2
    [r] = all_rows(dbstore)
    assert (r["queue_id"], r["operation"], r["status"], r["retry_count"]) == \
        (third["queue_id"], "ingest", "pending", 0)
    assert r["metadata"]["content_hash"] == h(b"again")


def test_retry_folds_on_past_rows_that_cancel_out(dbstore, clients):
    """Four failed rows of one file, without metadata: ingest, delete, ingest again and
    update. The first two cancel out, and folding goes on: the last two come back as the
    file's one pending ingest, still without metadata."""
    q = [seed(dbstore, "/d/f", op, queued_timestamp=f"2020-0{i + 1}-01T00:00:00.000Z",
              status="failed", retry_count=3)
         for i, op in enumerate(("ingest", "delete", "ingest", "update"))]
    assert clients("a").retry() == 4
    [r] = all_rows(dbstore)
    assert (r["queue_id"], r["operation"], r["status"], r["retry_count"], r["metadata"]) == \
        (q[2], "ingest", "pending", 0, None)


def test_retry_folds_failed_rows_by_queue_time_not_by_id(dbstore, clients):
    """Two failed foreign rows of one file, the older given last: update (older) and
    delete (newer) fold into one delete that keeps the older row's id and queue time and
    takes the newer one's tenant, branch and watch."""
    older = seed(dbstore, "/d/f", "update", tenant="t1", branch="b1",
                 queued_timestamp="2020-01-01T00:00:00.000Z", status="failed", retry_count=3,
                 metadata={"previous_hash": "11" * 16}, watch_id="w1")
    newer = seed(dbstore, "/d/f", "delete", 8, tenant="t2", branch="b2",
                 queued_timestamp="2020-02-01T00:00:00.000Z", status="failed", retry_count=3,
                 metadata={"content_hash": "22" * 16}, watch_id="w2")
    assert clients("a").retry([newer, older]) == 2
    [r] = all_rows(dbstore)
    assert (r["queue_id"], r["operation"], r["priority"], r["status"], r["retry_count"],
            r["queued_timestamp"], r["tenant_id"], r["branch"], r["watch_id"]) == \
        (older, "delete", 8, "pending", 0, "2020-01-01T00:00:00.000Z", "t2", "b2", "w2")
    assert r["metadata"] == {"content_hash": "22" * 16, "previous_hash": "11" * 16}
    assert dbstore.queue.rows()[0]["metadata"] == \
        f'{{"content_hash":"{"22" * 16}","previous_hash":"{"11" * 16}"}}'  # compact, as queued


# -- purge, stats, rows ------------------------------------------------------------------------

def test_purge_deletes_done_or_failed_rows_and_counts_them(dbstore, clients):
    keep = [seed(dbstore, "/d/p"), seed(dbstore, "/d/i", status="in_progress", lease_owner="x",
                                     lease_expires_at=iso(300))]
    for i in range(3):
        seed(dbstore, f"/d/done{i}", status="done")
    _fail_to_failed(dbstore, clients, "/d/f1", "/d/f2")
    c = clients("a")
    assert c.purge("done") == 3
    assert c.purge("done") == 0
    assert c.purge("failed") == 2
    assert sorted(r["queue_id"] for r in all_rows(dbstore)) == sorted(keep)


def test_stats_counts_by_status_operation_and_time(dbstore, clients):
    assert clients("z").stats() == {
        "total": 0, "by_status": {"pending": 0, "in_progress": 0, "done": 0, "failed": 0},
        "by_operation": {"pending": {}, "in_progress": {}, "done": {}, "failed": {}},
        "due": 0, "scheduled_later": 0, "expired_leases": 0, "oldest_pending": None}
    seed(dbstore, "/d/1", "ingest", queued_timestamp="2020-03-01T00:00:00.000Z")
    seed(dbstore, "/d/2", "delete", queued_timestamp="2020-02-01T00:00:00.000Z")
    seed(dbstore, "/d/3", "update", queued_timestamp="2020-04-01T00:00:00.000Z",
         scheduled_at=iso(3600))
    seed(dbstore, "/d/4", "ingest", status="in_progress", lease_owner="x",
         lease_expires_at=iso(300), queued_timestamp="2019-01-01T00:00:00.000Z")
    seed(dbstore, "/d/5", "update", status="in_progress", lease_owner="x",
         lease_expires_at=iso(-300))
    seed(dbstore, "/d/6", "ingest", status="in_progress")  # no lease
    seed(dbstore, "/d/7", "delete", status="failed", retry_count=3)
    seed(dbstore, "/d/8", "ingest", status="done")
    seed(dbstore, "/d/9", "ingest", status="done")
    assert clients("a").stats() == {
        "total": 9,
        "by_status": {"pending": 3, "in_progress": 3, "done": 2, "failed": 1},
        "by_operation": {"pending": {"delete": 1, "ingest": 1, "update": 1},
                         "in_progress": {"ingest": 2, "update": 1},
                         "done": {"ingest": 2}, "failed": {"delete": 1}},
        "due": 2, "scheduled_later": 1, "expired_leases": 2,
        "oldest_pending": "2020-02-01T00:00:00.000Z"}


def test_rows_lists_in_claim_order_by_status_and_limit(dbstore, clients):
    a = seed(dbstore, "/d/a", priority=2)
    b = seed(dbstore, "/d/b", priority=9, status="failed")
    c = seed(dbstore, "/d/c", priority=5, scheduled_at=iso(60))
    d = seed(dbstore, "/d/d", priority=5, scheduled_at=iso(-60))
    cl = clients("x")
    assert ids(cl.rows()) == [b, d, c, a]
    assert ids(cl.rows(status="pending")) == [d, c, a]
    assert ids(cl.rows(status="pending", limit=2)) == [d, c]
    assert ids(cl.rows(status="failed")) == [b]
    assert cl.rows(status="done") == []
    assert cl.rows(limit=0) == []
    assert all(isinstance(r, QueueRow) for r in cl.rows())
    assert ids(cl.claim(10)) == [d, a]  # c is not due, b is failed
    assert ids(cl.rows(status="in_progress")) == [d, a]


def test_timestamps_use_the_table_format(dbstore, clients):
    qid = seed(dbstore, "/d/1")
    c = clients("a")
    [r] = c.claim(1)
    for ts in (r.queued_timestamp, r.scheduled_at, r.lease_expires_at):
        assert ISO_MS_Z.match(ts), ts
    r = c.fail(qid, "x")
    assert ISO_MS_Z.match(r.scheduled_at)
    assert iso_from_ns(parse_iso(r.scheduled_at)) == r.scheduled_at


def test_two_sqlite_libraries_warning_is_where_a_consumer_reads():
    """docs/consuming.md's consumer section and QueueClient's docstring warn against opening
    the queue's file with Python's sqlite3 in the same process, and give the safe pattern."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "consuming.md").read_text()
    section = doc.split("## Consuming the queue", 1)[1].split("\n## ", 1)[0]
    for text in (section, QueueClient.__doc__):
        flat = " ".join(text.split())
        assert "sqlite3" in flat and "another process" in flat, flat[:200]
        assert "POSIX" in flat and "locks" in flat
