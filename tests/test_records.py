"""The walk's counters (`ScanTotals`) compare field by field and show every field: the
twin-parity tests compare the two scanners' totals with `==` and print them on failure."""
from __future__ import annotations

import pytest

from wqscan.scan.records import ScanTotals

pytestmark = pytest.mark.scanner_free

FIELDS = ("files", "dirs", "filtered", "deferred", "hashed", "bytes_hashed", "errors")


def test_totals_equal_only_when_every_field_is() -> None:
    base = dict.fromkeys(FIELDS, 1)
    assert ScanTotals(**base) == ScanTotals(**base)
    for name in FIELDS:
        assert ScanTotals(**base) != ScanTotals(**{**base, name: 2}), name
    assert ScanTotals() != (0,) * len(FIELDS)
    assert ScanTotals() == ScanTotals(*(0,) * len(FIELDS))


def test_totals_show_every_field_by_name() -> None:
    totals = ScanTotals(*range(1, len(FIELDS) + 1))
    assert repr(totals) == ("ScanTotals(files=1, dirs=2, filtered=3, deferred=4, hashed=5, "
                            "bytes_hashed=6, errors=7)")
