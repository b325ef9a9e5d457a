"""The progress line's text and pace, driven by a clock of the test's own: counts, bytes
hashed in a person's units, the rate, at most one line per 0.1 s, and a clear that erases
only a line it drew. (tests/test_progress.py runs it on a real terminal.)"""
from __future__ import annotations

import pytest

from wqscan.cli.text import ProgressLine

pytestmark = pytest.mark.scanner_free

ERASE = "\r\x1b[K"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def line(capsys, at: float, hashed: int, files: int = 500) -> str:
    progress = ProgressLine()
    progress.clock = clock = Clock(progress.start + at)
    progress.start = clock.now - at
    progress.update("w", files, 7, 3, hashed)
    return capsys.readouterr().err


@pytest.mark.parametrize("hashed, shown", [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1049, "1.0 kB"), (1050, "1.1 kB"),
    (999_499, "999.5 kB"), (1_000_000, "1.0 MB"), (3_400_000, "3.4 MB"),
    (1_500_000_000, "1.5 GB"), (2 * 10 ** 12, "2.0 TB"), (5 * 10 ** 15, "5000.0 TB"),
])
def test_bytes_hashed_in_a_persons_units(capsys, hashed: int, shown: str) -> None:
    assert line(capsys, 2.0, hashed) == \
        f"{ERASE}w: 500 files, 7 dirs, 3 operations, {shown} hashed, 250 files/s"


def test_the_rate_of_a_scan_just_begun_is_not_a_division_by_zero(capsys) -> None:
    assert line(capsys, 0.0, 0, files=2).endswith(", 2000 files/s")


def test_at_most_one_line_per_tenth_of_a_second_and_clear_erases_only_its_own(capsys) -> None:
    progress = ProgressLine()
    progress.clear()
    assert capsys.readouterr().err == ""
    progress.clock = clock = Clock(0.1)  # a tenth of a second after nothing was shown
    progress.update("w", 1, 1, 0, 0)
    assert capsys.readouterr().err.startswith(ERASE + "w: 1 files")
    clock.now = 0.199
    progress.update("w", 2, 1, 0, 0)
    assert capsys.readouterr().err == ""
    clock.now = 0.2  # a tenth of a second after the last line
    progress.update("w", 3, 1, 0, 0)
    assert capsys.readouterr().err.startswith(ERASE + "w: 3 files")
    progress.clear()
    assert capsys.readouterr().err == ERASE
