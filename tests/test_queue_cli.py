"""`wqscan queue ...`: the consumer side of the queue from the shell (docs/consuming.md), run as a
real `python -m wqscan` process against a real database: list, stats, claim, complete,
fail, retry, purge, their --json documents, exit codes, and usage errors (exit 2, one line,
the queue untouched). Each test on an SQLite file and on a PostgreSQL schema."""
from __future__ import annotations

import getpass
import json
import re
import socket
import subprocess

import pytest
from helpers.cli import wqscan, wqscan_argv
from helpers.db import SEED_INSERT, Db, from_now, iso, queue_dump, seed

from wqscan.queue.consumer import QueueClient

pytestmark = pytest.mark.scanner_free

COLUMNS = ["queue_id", "file_absolute_path", "collection_name", "tenant_id", "branch",
           "operation", "priority", "status", "queued_timestamp", "scheduled_at",
           "retry_count", "retry_from", "error_message", "lease_owner", "lease_expires_at",
           "watch_id", "metadata"]
ISO_MS_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TOL = 5.0


def shell_owner() -> str:
    """The owner every shell command uses by default: USER@HOST."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def wq(db: Db, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m wqscan --db DB queue ARGS` as a process."""
    return wqscan(db, "queue", *args, timeout=60)


def ok(db: Db, *args: str) -> str:
    p = wq(db, *args)
    assert (p.returncode, p.stderr) == (0, ""), (args, p.stdout, p.stderr)
    return p.stdout


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("wqscan: error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def table(dbstore) -> dict[str, dict]:
    """Every row by queue_id, as the table holds it."""
    return {r["queue_id"]: r for r in dbstore.queue.rows()}


@pytest.fixture
def db(database: Db, dbstore) -> Db:
    """The test's database (an SQLite file, a PostgreSQL schema), open as `dbstore`."""
    return database


# -- list and stats --------------------------------------------------------------------------

def test_list_json_text_status_and_limit(dbstore, db):
    a = seed(dbstore, "/d/a", "ingest", 2, metadata={"relative_path": "a", "size": 1})
    b = seed(dbstore, "/d/b", "delete", 9, status="failed", retry_count=3, error_message="boom")
    c = seed(dbstore, "/d/c", "update", 5, tenant="t", branch="dev")
    doc = json.loads(ok(db, "list", "--json"))
    assert [r["queue_id"] for r in doc] == [b, c, a]
    assert all(list(r) == COLUMNS for r in doc)
    assert doc[2]["metadata"] == {"relative_path": "a", "size": 1}
    assert (doc[0]["status"], doc[0]["retry_count"], doc[0]["error_message"],
            doc[0]["operation"], doc[0]["priority"]) == ("failed", 3, "boom", "delete", 9)
    assert (doc[1]["tenant_id"], doc[1]["branch"], doc[1]["metadata"]) == ("t", "dev", None)
    assert [r["queue_id"] for r in json.loads(ok(db, "list", "--status", "pending",
                                                 "--json"))] == [c, a]
    limited = wq(db, "list", "--limit", "1", "--json")
    assert [r["queue_id"] for r in json.loads(limited.stdout)] == [b]
    assert limited.stderr == "wqscan: 1 rows shown, 2 more left out (--limit N, or --limit 0 " \
        "for all)\n"
    assert json.loads(ok(db, "list", "--status", "done", "--json")) == []
    lines = ok(db, "list").splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OPERATION", "PRIORITY", "RETRIES",
                                "SCHEDULED", "OWNER", "COLLECTION", "PATH", "ERROR"]
    assert [ln.split() for ln in lines[1:]] == [
        [b, "failed", "delete", "9", "3", table(dbstore)[b]["scheduled_at"], "-", "c", "/d/b",
         "boom"],
        [c, "pending", "update", "5", "0", table(dbstore)[c]["scheduled_at"], "-", "c", "/d/c",
         "-"],
        [a, "pending", "ingest", "2", "0", table(dbstore)[a]["scheduled_at"], "-", "c", "/d/a",
         "-"]]
    assert ok(db, "list", "--status", "in_progress") == ""


def test_list_shows_50_rows_unless_told_otherwise(dbstore, db):
    """50 rows by default, and a last line on stderr saying how many were left out (in
    text and --json alike), so that a listing compared with `git diff` does not mislead;
    nothing is said when every row is shown."""
    dbstore.conn.executemany(SEED_INSERT, [(f"/d/{i:03}", "c", "default", "main", "ingest", 5,
                                          None) for i in range(55)])
    cut = "wqscan: 50 rows shown, 5 more left out (--limit N, or --limit 0 for all)\n"
    p = wq(db, "list", "--json")
    assert (len(json.loads(p.stdout)), p.stderr) == (50, cut)
    p = wq(db, "list")
    assert (len(p.stdout.splitlines()), p.stderr) == (51, cut)
    assert len(json.loads(ok(db, "list", "--limit", "0", "--json"))) == 55
    assert len(json.loads(ok(db, "list", "--limit", "55", "--json"))) == 55
    p = wq(db, "list", "--limit", "7", "--json", "--collection", "c")
    assert (len(json.loads(p.stdout)), p.stderr) == (7, cut.replace("50", "7").replace(
        "5 more", "48 more"))
    p = wq(db, "list", "--limit", "9", "--json", "--collection", "c", "--status", "pending")
    assert (len(json.loads(p.stdout)), p.stderr) == (9, cut.replace("50", "9").replace(
        "5 more", "46 more"))


def _table_health(db: Db, doc: dict) -> dict:
    """The queue table's health, which `queue stats` adds on PostgreSQL alone (what it
    holds: tests/test_pg_health.py); taken out of `doc`."""
    storage = doc.pop("storage", None)
    assert (storage is None) == (db.kind == "sqlite")
    return storage


def test_stats_json_and_text(dbstore, db):
    empty = json.loads(ok(db, "stats", "--json"))
    _table_health(db, empty)
    assert empty == {
        "total": 0, "by_status": {"pending": 0, "in_progress": 0, "done": 0, "failed": 0},
        "by_operation": {"pending": {}, "in_progress": {}, "done": {}, "failed": {}},
        "due": 0, "scheduled_later": 0, "expired_leases": 0, "oldest_pending": None}
    seed(dbstore, "/d/1", "ingest", queued_timestamp="2020-05-01T00:00:00.000Z")
    seed(dbstore, "/d/2", "update", queued_timestamp="2020-06-01T00:00:00.000Z",
         scheduled_at=iso(3600))
    seed(dbstore, "/d/3", "delete", status="in_progress", lease_owner="x",
         lease_expires_at=iso(-10))
    seed(dbstore, "/d/4", "delete", status="in_progress", lease_owner="x",
         lease_expires_at=iso(600))
    seed(dbstore, "/d/5", "update", status="failed", retry_count=3)
    seed(dbstore, "/d/6", "ingest", status="done")
    doc = json.loads(ok(db, "stats", "--json"))
    _table_health(db, doc)
    assert doc == {
        "total": 6, "by_status": {"pending": 2, "in_progress": 2, "done": 1, "failed": 1},
        "by_operation": {"pending": {"ingest": 1, "update": 1}, "in_progress": {"delete": 2},
                         "done": {"ingest": 1}, "failed": {"update": 1}},
        "due": 1, "scheduled_later": 1, "expired_leases": 1,
        "oldest_pending": "2020-05-01T00:00:00.000Z"}
    text = ok(db, "stats").splitlines()
    assert [line.split(":")[0] for line in text[6:]] == (
        ["table", "oldest xact"] if db.kind == "pg" else [])
    assert text[:6] == [
        "pending:     2 (ingest 1, update 1)",
        "in_progress: 2 (delete 2)",
        "done:        1 (ingest 1)",
        "failed:      1 (update 1)",
        "due now:     1; later (backoff): 1; expired leases: 1",
        "oldest:      2020-05-01T00:00:00.000Z"]


# -- claim and complete ----------------------------------------------------------------------

def test_claim_prints_rows_and_complete_works_as_the_same_shell_owner(dbstore, db):
    low = seed(dbstore, "/d/low", "ingest", 1)
    high = seed(dbstore, "/d/high", "delete", 8)
    mid = seed(dbstore, "/d/mid", "update", 5)
    out = ok(db, "claim", "2")
    assert out == f"{high}\tdelete\t/d/high\n{mid}\tupdate\t/d/mid\n"
    rows = table(dbstore)
    for q in (high, mid):
        assert (rows[q]["status"], rows[q]["lease_owner"]) == ("in_progress", shell_owner())
        assert abs(from_now(rows[q]["lease_expires_at"]) - 300) < TOL
    assert rows[low]["status"] == "pending"
    assert ok(db, "complete", high, mid) == "completed 2\n"
    assert list(table(dbstore)) == [low]
    assert ok(db, "claim", "5") == f"{low}\tingest\t/d/low\n"
    assert ok(db, "claim", "5") == ""  # nothing due: no output, exit 0
    assert ok(db, "complete", low, low) == "completed 1\n"
    assert table(dbstore) == {}


def test_claim_json_with_owner_lease_collection_and_tenant(dbstore, db):
    seed(dbstore, "/d/1", collection="A", tenant="t2")
    want = seed(dbstore, "/d/2", "update", 7, collection="A", tenant="t1",
                metadata={"content_hash": "ab" * 16})
    seed(dbstore, "/d/3", collection="B", tenant="t1")
    doc = json.loads(ok(db, "claim", "5", "--json", "--owner", "worker-1", "--lease", "30",
                        "--collection", "A", "--tenant", "t1"))
    assert len(doc) == 1
    r = doc[0]
    assert list(r) == COLUMNS
    assert (r["queue_id"], r["operation"], r["priority"], r["status"], r["lease_owner"],
            r["metadata"]) == (want, "update", 7, "in_progress", "worker-1",
                               {"content_hash": "ab" * 16})
    assert re.fullmatch(ISO_MS_Z, r["lease_expires_at"])
    assert abs(from_now(r["lease_expires_at"]) - 30) < TOL
    assert table(dbstore)[want]["lease_expires_at"] == r["lease_expires_at"]
    assert json.loads(ok(db, "claim", "5", "--json", "--collection", "nope")) == []
    # another owner cannot complete it, the claiming one can
    p = wq(db, "complete", want)
    assert p.returncode == 1
    assert want in one_error_line(p)
    assert ok(db, "complete", want, "--owner", "worker-1") == "completed 1\n"


def test_concurrent_claim_processes_never_share_a_row(dbstore, db):
    dbstore.conn.executemany(SEED_INSERT, [(f"/d/{i:02}", "c", "default", "main", "ingest", 5,
                                          None) for i in range(20)])
    procs = [subprocess.Popen(wqscan_argv(db, "queue", "claim", "6", "--owner", f"p{i}", "--json"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    got = {}
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=60)
        assert (p.returncode, err) == (0, ""), err
        got[f"p{i}"] = [r["queue_id"] for r in json.loads(out)]
    claimed = [q for qs in got.values() for q in qs]
    assert len(claimed) == len(set(claimed)) == 20
    assert sorted(len(qs) for qs in got.values()) == [2, 6, 6, 6]
    rows = table(dbstore)
    for owner, qs in got.items():
        assert all(rows[q]["lease_owner"] == owner for q in qs)


def test_complete_reports_each_lost_row_and_exits_1(dbstore, db):
    mine, theirs = seed(dbstore, "/d/mine", priority=9), seed(dbstore, "/d/theirs")
    assert ok(db, "claim", "1").startswith(mine)
    with QueueClient(db.target, owner="other") as other:
        assert [r.queue_id for r in other.claim(1)] == [theirs]
    held = table(dbstore)[theirs]
    p = wq(db, "complete", theirs, mine, "no-such-id")
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in p.stderr
    assert lines[0].startswith(f"wqscan: error: queue row {theirs} ")
    assert "other" in lines[0]
    assert lines[1].startswith("wqscan: error: queue row no-such-id ")
    assert p.stdout == "completed 1\n"
    assert table(dbstore) == {theirs: held}


def test_complete_after_a_lease_passed_to_another_consumer(dbstore, db):
    qid = seed(dbstore, "/d/1")
    ok(db, "claim", "1", "--lease", "0.000001")
    with QueueClient(db.target, owner="other") as other:
        assert [r.queue_id for r in other.claim(1)] == [qid]
        held = queue_dump(dbstore)
        p = wq(db, "complete", qid)
        assert p.returncode == 1
        assert qid in one_error_line(p)
        assert queue_dump(dbstore) == held
        p = wq(db, "fail", qid, "--error", "x")
        assert p.returncode == 1
        assert qid in one_error_line(p)
        assert queue_dump(dbstore) == held
        other.complete(qid)
    assert table(dbstore) == {}


# -- fail, retry, purge ----------------------------------------------------------------------

def test_fail_reschedules_with_backoff_then_marks_failed(dbstore, db):
    qid = seed(dbstore, "/d/1", "update")
    ok(db, "claim", "1")
    out = ok(db, "fail", qid, "--error", "disk on fire")
    r = table(dbstore)[qid]
    assert out == f"{qid}: pending again at {r['scheduled_at']} (attempt 1 of 3 failed)\n"
    assert (r["status"], r["retry_count"], r["error_message"], r["lease_owner"],
            r["lease_expires_at"]) == ("pending", 1, "disk on fire", None, None)
    assert abs(from_now(r["scheduled_at"]) - 60) < TOL
    assert ok(db, "claim", "1") == ""  # backing off
    dbstore.conn.execute("UPDATE ingestion_queue SET scheduled_at = ?", (iso(-1),))
    ok(db, "claim", "1", "--owner", "w")
    assert ok(db, "fail", qid, "--error", "again", "--owner", "w", "--max-retries", "2") == \
        f"{qid}: failed after 2 attempts\n"
    r = table(dbstore)[qid]
    assert (r["status"], r["retry_count"], r["error_message"]) == ("failed", 2, "again")


def test_fail_with_max_retries_one_and_second_backoff(dbstore, db):
    q1, q2 = seed(dbstore, "/d/1", priority=9), seed(dbstore, "/d/2", retry_count=1)
    ok(db, "claim", "2")
    assert ok(db, "fail", q1, "--error", "e", "--max-retries", "1") == \
        f"{q1}: failed after 1 attempt\n"
    out = ok(db, "fail", q2, "--error", "e")
    r = table(dbstore)[q2]
    assert out == f"{q2}: pending again at {r['scheduled_at']} (attempt 2 of 3 failed)\n"
    assert abs(from_now(r["scheduled_at"]) - 120) < TOL


def test_fail_coalesced_away_says_so(dbstore, db):
    qid = seed(dbstore, "/d/1", "ingest")
    ok(db, "claim", "1")
    seed(dbstore, "/d/1", "delete", 8)
    assert ok(db, "fail", qid, "--error", "x") == \
        f"{qid}: cancelled out by a newer pending row of the same file\n"
    assert table(dbstore) == {}


def test_fail_of_a_row_not_held_exits_1(dbstore, db):
    qid = seed(dbstore, "/d/1")
    before = queue_dump(dbstore)
    for target in (qid, "no-such-id"):
        p = wq(db, "fail", target, "--error", "x")
        assert p.returncode == 1 and p.stdout == ""
        assert target in one_error_line(p)
    assert queue_dump(dbstore) == before


def test_retry_by_id_all_and_default(dbstore, db):
    f1 = seed(dbstore, "/d/1", status="failed", retry_count=3, error_message="e",
              scheduled_at="2020-01-01T00:00:00.000Z")
    f2 = seed(dbstore, "/d/2", status="failed", retry_count=3)
    f3 = seed(dbstore, "/d/3", status="failed", retry_count=2)
    assert ok(db, "retry", f1) == "returned 1 failed rows to pending\n"
    r = table(dbstore)[f1]
    assert (r["status"], r["retry_count"]) == ("pending", 0)
    assert abs(from_now(r["scheduled_at"])) < TOL
    assert [table(dbstore)[q]["status"] for q in (f2, f3)] == ["failed", "failed"]
    assert ok(db, "retry", "--all") == "returned 2 failed rows to pending\n"
    assert {q: (r["status"], r["retry_count"]) for q, r in table(dbstore).items()} == {
        f1: ("pending", 0), f2: ("pending", 0), f3: ("pending", 0)}
    dbstore.conn.execute("UPDATE ingestion_queue SET status = 'failed' WHERE queue_id = ?", (f2,))
    assert ok(db, "retry") == "returned 1 failed rows to pending\n"
    assert table(dbstore)[f2]["status"] == "pending"
    assert ok(db, "retry") == "returned 0 failed rows to pending\n"


def test_retry_coalesces_with_the_files_pending_row(dbstore, db):
    failed = seed(dbstore, "/d/1", "delete", 8, status="failed", retry_count=3,
                  queued_timestamp="2020-01-01T00:00:00.000Z",
                  metadata={"content_hash": "11" * 16})
    pending = seed(dbstore, "/d/1", "ingest", 5, tenant="t", metadata={"content_hash": "22" * 16})
    assert ok(db, "retry", failed) == "returned 1 failed rows to pending\n"
    rows = table(dbstore)
    assert list(rows) == [failed] and pending not in rows
    r = rows[failed]
    assert (r["operation"], r["status"], r["priority"], r["tenant_id"], r["retry_count"],
            r["queued_timestamp"]) == ("update", "pending", 8, "t", 0,
                                       "2020-01-01T00:00:00.000Z")
    assert json.loads(r["metadata"]) == {"content_hash": "22" * 16,
                                         "previous_hash": "11" * 16}


def test_purge_done_and_failed(dbstore, db):
    keep = seed(dbstore, "/d/keep")
    for i in range(2):
        seed(dbstore, f"/d/done{i}", status="done")
    for i in range(3):
        seed(dbstore, f"/d/failed{i}", status="failed", retry_count=3)
    assert ok(db, "purge", "--status", "done") == "purged 2 done rows\n"
    assert ok(db, "purge", "--status", "failed") == "purged 3 failed rows\n"
    assert ok(db, "purge", "--status", "failed") == "purged 0 failed rows\n"
    assert list(table(dbstore)) == [keep]


def test_quiet_suppresses_the_summaries(dbstore, db):
    qid = seed(dbstore, "/d/1", status="failed")
    assert ok(db, "retry", "-q") == ""
    ok(db, "claim", "1")
    assert ok(db, "complete", qid, "-q") == ""
    assert table(dbstore) == {}


# -- usage errors: exit 2, one line, nothing changed -----------------------------------------

BAD = [
    ("claim", "0"), ("claim", "-3"), ("claim", "x"), ("claim", "1.5"), ("claim",),
    ("claim", "1", "--lease", "0"), ("claim", "1", "--lease", "-1"),
    ("claim", "1", "--lease", "abc"), ("claim", "1", "--lease", "1e9"),
    ("list", "--status", "bogus"), ("list", "--limit", "-1"), ("list", "--limit", "x"),
    ("retry", "no-such-id"), ("retry", "{failed}", "no-such-id"), ("retry", "{pending}"),
    ("retry", "{held}"), ("retry", "{failed}", "--all"),
    ("fail", "{held}"), ("fail", "{held}", "--error", "x", "--max-retries", "0"),
    ("fail", "{held}", "--error", "x", "--max-retries", "x"),
    ("purge", "--status", "pending"), ("purge", "--status", "in_progress"), ("purge",),
    ("complete",), (), ("bogus",), ("stats", "--bogus"),
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a) or "(none)")
def test_usage_errors_exit_2_with_one_line_and_change_nothing(dbstore, db, argv):
    ids = {"failed": seed(dbstore, "/d/f", status="failed", retry_count=3),
           "pending": seed(dbstore, "/d/p"),
           "held": seed(dbstore, "/d/h", status="in_progress", lease_owner=shell_owner(),
                        lease_expires_at=iso(600))}
    before = queue_dump(dbstore)
    p = wq(db, *(a.format(**ids) for a in argv))
    assert p.returncode == 2, (p.stdout, p.stderr)
    one_error_line(p)
    assert p.stdout == ""
    assert queue_dump(dbstore) == before


def test_list_has_a_collection_column_and_filter(dbstore, db):
    """`queue list` shows each row's collection and takes --collection."""
    seed(dbstore, "/d/a", collection="books")
    seed(dbstore, "/d/b", collection="films")
    out = ok(db, "list")
    head, *lines = out.splitlines()
    assert "COLLECTION" in head.split()
    assert sorted(line.split()[-3] for line in lines) == ["books", "films"]
    rows = json.loads(ok(db, "list", "--collection", "films", "--json"))
    assert [(r["file_absolute_path"], r["collection_name"]) for r in rows] == [("/d/b", "films")]


def test_json_on_complete_fail_retry_purge(dbstore, db):
    """The queue actions print one JSON document with --json."""
    a, b = seed(dbstore, "/d/a"), seed(dbstore, "/d/b")
    (claimed,) = json.loads(ok(db, "claim", "1", "--json"))
    doc = json.loads(ok(db, "complete", claimed["queue_id"], "--json"))
    assert doc == {"completed": [claimed["queue_id"]], "lost": []}
    other = ({a, b} - {claimed["queue_id"]}).pop()
    p = wq(db, "complete", other, "--json")
    assert p.returncode == 1 and p.stderr == ""
    doc = json.loads(p.stdout)
    assert doc["completed"] == [] and doc["lost"][0]["queue_id"] == other
    ok(db, "claim", "1")
    doc = json.loads(ok(db, "fail", other, "--error", "boom", "--max-retries", "1",
                        "--json"))
    assert (doc["queue_id"], doc["status"], doc["error_message"]) == (other, "failed", "boom")
    assert json.loads(ok(db, "retry", other, "--json")) == {"returned": 1}
    assert json.loads(ok(db, "purge", "--status", "done", "--json")) == \
        {"purged": 0, "status": "done"}
