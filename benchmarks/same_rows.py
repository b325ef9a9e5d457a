#!/usr/bin/env python3
"""The first scan's writing alone: what bare apsw takes to write exactly the rows a first
scan wrote, into the same schema.

    python benchmarks/same_rows.py FIRST.db [--runs 5] [--out DIR]

Reads the DDL (tables, then indexes and triggers) and every row of every table from the
database a first scan wrote, untimed; then per run creates a fresh file with the pragmas
wqscan's store sets (page size, WAL, synchronous=NORMAL, cache), runs the DDL, and times
only the inserts: one `executemany` per table, all in one transaction. Prints
`insert<TAB>rows=N<TAB>median_s=...`, the line compare.sh reads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import apsw

from wqscan.store import CONNECTION_CACHE_KIB, PAGE_SIZE


def read(path: str) -> tuple[list[str], list[str], dict[str, list[tuple]]]:
    """(table DDL, index and trigger DDL, rows by table) of a database, read-only."""
    con = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    objects = con.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                          "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    tables = [(name, sql) for kind, name, sql in objects if kind == "table"]
    rest = [sql for kind, _, sql in objects if kind in ("index", "trigger", "view")]
    rows = {name: con.execute(f'SELECT * FROM "{name}"').fetchall() for name, _ in tables}
    con.close()
    return [sql for _, sql in tables], rest, rows


def insert_once(db: str, tables: list[str], rest: list[str],
                rows: dict[str, list[tuple]]) -> float:
    """Seconds to insert every row into a fresh file with the same schema."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    con = apsw.Connection(db)
    con.pragma("page_size", PAGE_SIZE)
    con.pragma("journal_mode", "wal")
    con.pragma("synchronous", "normal")
    con.pragma("cache_size", -CONNECTION_CACHE_KIB)
    for sql in tables + rest:
        con.execute(sql)
    t0 = time.perf_counter()
    with con:
        for name, values in rows.items():
            if values:
                marks = ",".join("?" * len(values[0]))
                con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', values)
    took = time.perf_counter() - t0
    con.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", help="the database a first scan wrote")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="/tmp/wqscan-bench", help="where the copies go")
    a = ap.parse_args()
    tables, rest, rows = read(a.db)
    target = os.path.join(a.out, "same-rows.db")
    insert_once(target, tables, rest, rows)  # warm-up
    took = [insert_once(target, tables, rest, rows) for _ in range(a.runs)]
    n = sum(len(v) for v in rows.values())
    m = statistics.median(took)
    print(f"insert\trows={n}\tmedian_s={m:.4f}\tmin_s={min(took):.4f}\tmax_s={max(took):.4f}")


if __name__ == "__main__":
    main()
