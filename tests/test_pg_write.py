"""How a batch of queue rows is written, on both stores: PostgreSQL copies them into a
staging table first (docs/scaling-out.md), which must hold only the rows of the insert
at hand when one transaction inserts several times."""
from __future__ import annotations

from helpers.db import Db

from wqscan.clock import now_iso
from wqscan.queue.consumer import QueueClient
from wqscan.queue.writes import enqueue, new_queue_ids
from wqscan.store import Store, Target
from wqscan.store.rows import Row


def _row(queue_id: str, path: str, operation: str, now: str) -> Row:
    meta = '{"watch_id":"w","relative_path":"x","source":"wqscan"}'
    return Row(queue_id, path, "c", "default", "main", operation, 5, "w", meta, now, now)


def test_one_transaction_that_inserts_three_times(dbstore: Store) -> None:
    """A file's ingest, delete and ingest again in one write (three inserts of the store,
    the second cancelling the first): only the last ingest and the other file's row are
    left, each with its own id; the count is of all four rows, one of them cancelled."""
    now = now_iso()
    ids = new_queue_ids(4)
    rows = [_row(ids[0], "/t/a", "ingest", now), _row(ids[1], "/t/a", "delete", now),
            _row(ids[2], "/t/a", "ingest", now), _row(ids[3], "/t/b", "ingest", now)]
    with dbstore.write():
        done = enqueue(dbstore, rows)
    assert (done.changed, done.cancelled) == (4, 1)
    left = {(r["file_absolute_path"], r["operation"], r["queue_id"])
            for r in dbstore.queue.rows("pending", None)}
    assert left == {("/t/a", "ingest", ids[2]), ("/t/b", "ingest", ids[3])}


def test_many_rows_and_pending_ones_in_one_batch(dbstore: Store) -> None:
    """A batch of 3,000 rows, a third of whose files have a pending row already: the new
    files' rows go in under their ids, the others merge into the pending rows."""
    now = now_iso()
    first = new_queue_ids(1000)
    with dbstore.write():
        enqueue(dbstore, [_row(q, f"/t/{i:05}", "ingest", now) for i, q in enumerate(first)])
    second = new_queue_ids(3000)
    with dbstore.write():
        enqueue(dbstore, [_row(q, f"/t/{i:05}", "update", now)
                          for i, q in enumerate(second)])
    left = {r["file_absolute_path"]: (r["operation"], r["queue_id"])
            for r in dbstore.queue.rows("pending", None)}
    assert len(left) == 3000
    assert all(left[f"/t/{i:05}"] == ("ingest", first[i]) for i in range(1000))
    assert all(left[f"/t/{i:05}"] == ("update", second[i]) for i in range(1000, 3000))


def test_a_batch_meeting_rows_another_connection_queued_after_writes_of_its_own(
        dbstore: Store) -> None:
    """Rows another connection queued (another producer, a consumer's retry) met by a batch
    on a connection that wrote 0, 1 or 2 rows before: SQLite counts that connection's
    earlier changes too, so which rows went in is never judged by the count alone. The new
    file goes in; the deletes of the two files waiting to be ingested cancel their rows."""
    now = now_iso()
    for earlier in range(3):
        d = f"/t/{earlier}"
        with Store.open(dbstore.target) as other, other.write():
            enqueue(other, [_row(q, f"{d}/waiting{i}", "ingest", now)
                            for i, q in enumerate(new_queue_ids(2))])
        new = new_queue_ids(3 + earlier)
        with Store.open(dbstore.target) as mine:
            for i in range(earlier):
                with mine.write():
                    enqueue(mine, [_row(new[3 + i], f"{d}/earlier{i}", "ingest", now)])
            with mine.write():
                done = enqueue(mine, [_row(new[0], f"{d}/new", "ingest", now),
                                      _row(new[1], f"{d}/waiting0", "delete", now),
                                      _row(new[2], f"{d}/waiting1", "delete", now)])
        assert (done.changed, done.cancelled) == (3, 2)
        left = {r["file_absolute_path"]: (r["operation"], r["queue_id"])
                for r in dbstore.queue.rows("pending", None)
                if r["file_absolute_path"].startswith(d + "/")}
        assert left == {f"{d}/new": ("ingest", new[0]),
                        **{f"{d}/earlier{i}": ("ingest", new[3 + i]) for i in range(earlier)}}


def test_a_waiting_row_finished_while_a_write_looks_it_up(pg_server, pg_schema,
                                                          monkeypatch) -> None:
    """On PostgreSQL each statement of a write sees what others committed before it began:
    a consumer that claims and finishes a file's waiting row after the insert that met it
    and before the lookup that would merge into it leaves nothing to merge, and the new row
    goes in after all; the next file's waiting row still takes its update. (On SQLite the
    write holds the lock throughout: a consumer waits.)"""
    db = Db("pg", Target(pg_server, pg_schema))
    now = now_iso()
    ids = new_queue_ids(5)
    with db.open() as store, db.open() as other:
        with store.write():
            enqueue(store, [_row(ids[0], "/t/a", "ingest", "2020-01-02T03:04:05.000Z"),
                            _row(ids[1], "/t/c", "ingest", now)])
        lookup = store.queue.pending

        def finished_first(paths, collection):
            with QueueClient(other) as consumer:
                taken = consumer.claim(1)
                consumer.complete([r.queue_id for r in taken])
            assert [r.queue_id for r in taken] == [ids[0]]
            return lookup(paths, collection)

        monkeypatch.setattr(store.queue, "pending", finished_first)
        with store.write():
            done = enqueue(store, [_row(ids[2], "/t/a", "update", now),
                                   _row(ids[3], "/t/c", "update", now),
                                   _row(ids[4], "/t/b", "ingest", now)])
        left = {(r["file_absolute_path"], r["operation"], r["queue_id"])
                for r in store.queue.rows("pending", None)}
    assert (done.changed, done.cancelled) == (3, 0)
    assert left == {("/t/a", "update", ids[2]), ("/t/c", "ingest", ids[1]),
                    ("/t/b", "ingest", ids[4])}
