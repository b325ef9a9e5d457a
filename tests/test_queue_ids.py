"""Queue ids: UUIDs of version 7 (RFC 9562) that sort by the time they were drawn, so that a
scan's rows go into the primary key's B-tree in order."""
from __future__ import annotations

import time
import uuid

from helpers.db import scan, watch
from helpers.ondisk import read_rows
from helpers.trees import write

from wqscan.queue.writes import _Ids

MS = 1_000_000


def test_ids_are_uuid7_and_grow_within_and_across_draws(monkeypatch):
    """Canonical text of version 7, variant RFC 4122, the draw's millisecond in the first
    48 bits, and every id larger than the one before, also when the clock goes back."""
    ids = _Ids()
    drawn = []
    for at_ms in (1_800_000_000_000, 1_800_000_000_000, 1_800_000_000_001, 1_700_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda: at_ms * MS + 123)
        batch = ids.draw(300)
        for text in batch:
            u = uuid.UUID(text)
            assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == text
        assert uuid.UUID(batch[0]).int >> 80 >= min(at_ms, 1_800_000_000_001)
        drawn += batch
    assert uuid.UUID(drawn[0]).int >> 80 == 1_800_000_000_000
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)


def test_ids_grow_across_a_carry_of_the_counter():
    """A draw whose counter carries past its last twelve hex digits still grows by one."""
    ids = _Ids()
    ids.last = (1_800_000_000_000 << 80) | (7 << 76) | (2 << 62) | 0xFFFF_FFFF_FFF0
    ids.last += 1 << 70  # far above what the clock gives: the counter goes on from it
    batch = ids.draw(40)
    assert [uuid.UUID(t).int for t in batch] == list(range(ids.last - 39, ids.last + 1))
    assert batch == sorted(batch)


def test_a_scan_inserts_its_rows_in_id_order(twin, store, root):
    """The rows of a first scan are inserted in increasing id order: appended to the key."""
    for i in range(500):
        write(root / f"d{i % 7}" / f"f{i:03}.txt", str(i))
    watch(store, root)
    assert scan(store).ingest == 500
    ids = [r[0] for r in read_rows(store.path, "SELECT queue_id FROM ingestion_queue "
                                               "ORDER BY rowid")]
    assert len(ids) == 500 and ids == sorted(ids)
