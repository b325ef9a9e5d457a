"""How names are escaped in text output (`printable`), at the edges of each rule: the
backslash, control characters, the bytes surrogateescape keeps, code points beyond."""
from __future__ import annotations

import pytest

from wqscan.cli.text import printable

pytestmark = pytest.mark.scanner_free


@pytest.mark.parametrize("text, shown", [
    ("plain name.txt", "plain name.txt"),
    ("a\\b", "a\\\\b"),
    ("a\nb", "a\\nb"),
    ("\x1b[31m", "\\x1b[31m"),
    ("\x7f", "\\x7f"),
    ("\x80", "\\u0080"),  # the first C1 control: a code point, not a byte
    ("\udc7f", "\\udc7f"),  # a lone surrogate just below the escaped bytes
    ("\udc80", "\\x80"),  # the first byte surrogateescape keeps
    ("\udcff", "\\xff"),  # the last one
    ("\udd00", "\\udd00"),  # just above them
    ("\u200b", "\\u200b"),
    ("\uffff", "\\uffff"),  # the last code point of four hex digits
    ("\U000e0001", "\\U000e0001"),
    ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),  # printable: left as it is
], ids=["plain", "backslash", "newline", "escape", "delete", "c1-first", "below-bytes",
        "byte-first", "byte-last", "above-bytes", "zero-width", "ffff", "tag", "printable"])
def test_each_rule_at_its_edges(text, shown):
    assert printable(text) == shown


def test_names_that_print_alike_unescaped_print_apart():
    """A real backslash-n, a newline, a byte 0x80 of a non-UTF-8 name and U+0080 each
    print differently."""
    names = ["a\\nb", "a\nb", "a\udc80b", "a\x80b", "a\\x80b", "a\\u0080b"]
    assert len({printable(n) for n in names}) == len(names)
