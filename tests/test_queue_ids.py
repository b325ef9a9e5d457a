"""Queue ids: UUIDs of version 7 (RFC 9562) that sort by the time they were drawn, so that a
scan's rows go into the primary key's B-tree in order."""
from __future__ import annotations

import json
import time
import uuid
from functools import reduce
from operator import and_, or_

import pytest
from helpers.db import scan, watch
from helpers.ondisk import read_rows
from helpers.trees import write

from wqscan.model import Watch
from wqscan.queue.writes import RowMaker, _Ids
from wqscan.scan.records import Change

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


def test_each_draw_takes_73_random_bits(monkeypatch):
    """Ids drawn in 200 different milliseconds: each of the 12 bits after the version and
    the 61 after the variant takes both values; the version, variant and the bit kept
    free for counting on never change."""
    ids = _Ids()
    drawn = []
    for i in range(200):
        monkeypatch.setattr(time, "time_ns", lambda: (1_800_000_000_000 + i) * MS)
        drawn.append(uuid.UUID(ids.draw(1)[0]).int)
    middle = [(v >> 64) & 0xFFFF for v in drawn]  # version and 12 random bits
    low = [v & (2**64 - 1) for v in drawn]  # variant, a zero bit and 61 random bits
    assert (reduce(or_, middle), reduce(and_, middle)) == (0x7FFF, 0x7000)
    assert (reduce(or_, low), reduce(and_, low)) == ((2 << 62) | (2**61 - 1), 2 << 62)


@pytest.mark.parametrize("low,n", [(0xFFFF_FFFF_FFF0, 40), (0xFFFF_FFFF_FFFE, 1),
                                   (0xFFFF_FFFF_FFFE, 2)])
def test_ids_grow_across_a_carry_of_the_counter(low, n):
    """A draw whose counter reaches, or carries past by one or more, the end of its last
    twelve hex digits still grows by one, in canonical text."""
    ids = _Ids()
    # far above what the clock gives: the counter goes on from it
    ids.last = (1_800_000_000_000 << 80) | (7 << 76) | (1 << 70) | (2 << 62) | low
    first = ids.last + 1
    batch = ids.draw(n)
    assert [uuid.UUID(t).int for t in batch] == list(range(first, first + n))
    assert all(str(uuid.UUID(t)) == t for t in batch)


def test_a_scan_inserts_its_rows_in_id_order(twin, store, root):
    """The rows of a first scan are inserted in increasing id order: appended to the key."""
    for i in range(500):
        write(root / f"d{i % 7}" / f"f{i:03}.txt", str(i))
    watch(store, root)
    assert scan(store).ingest == 500
    ids = [r[0] for r in read_rows(store.path, "SELECT queue_id FROM ingestion_queue "
                                               "ORDER BY rowid")]
    assert len(ids) == 500 and ids == sorted(ids)


def test_rows_rendered_in_one_loop_are_the_rows_of_one_at_a_time():
    """`RowMaker.ingests` gives, field for field, what `row` gives for each ingest, and its
    ids go on growing from those `row` took, also when it draws more than the pool held."""
    watch_ = Watch("w1", "/data/root/", collection="c", metadata={"team": "x"})
    changes = [Change("ingest", f"d/é{i}\"\\.txt", i, 10**18 + i, i, bytes([i]) * 16, None)
               for i in range(9)]
    one = RowMaker(watch_, "2026-12-07T00:00:00.000Z", expected=3)
    loop = RowMaker(watch_, "2026-12-07T00:00:00.000Z", expected=3)
    singly = [one.row(c, "t", "b", i % 3) for i, c in enumerate(changes)]
    first = loop.row(changes[0], "t", "b", 0)  # two ids left in the pool, eight wanted
    batch = [first] + loop.ingests(changes[1:], "t", "b", [i % 3 for i in range(1, 9)])
    assert [r._replace(queue_id="") for r in batch] == [r._replace(queue_id="")
                                                         for r in singly]
    ids = [r.queue_id for r in batch]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(left > ids[-1] for left in loop.ids)  # none left behind to come out later
    assert json.loads(batch[3].metadata)["relative_path"] == changes[3].path
