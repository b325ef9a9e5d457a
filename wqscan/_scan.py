"""Picks the scanner: the compiled `_scan_c` unless WQSCAN_NO_EXTENSIONS asks for `_scan_py`.

Nothing else in the package imports either twin; `BACKEND` records the choice so
that `--version` and `status` can show it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("WQSCAN_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._scan_py import decode_entries, encode_entries, gitignore_rules, glob_match, walk

    BACKEND = "python"
else:
    try:
        from ._scan_c import decode_entries, encode_entries, gitignore_rules, glob_match, walk

        BACKEND = "cython"
    except ModuleNotFoundError as exc:  # only an install made without the extension
        if exc.name != f"{__package__}._scan_c":
            raise
        from ._scan_py import decode_entries, encode_entries, gitignore_rules, glob_match, walk

        BACKEND = "python"

__all__ = ["BACKEND", "NO_EXTENSIONS", "walk", "encode_entries", "decode_entries", "glob_match",
           "gitignore_rules"]
