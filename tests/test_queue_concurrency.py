"""Several consumer processes drain one queue while `wqscan reconcile` processes fill it:
no row is claimed twice, none is lost, each file's operations apply in order, and the
consumers' combined view ends equal to the tree; on either store (an SQLite file, a
PostgreSQL schema)."""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import consumer_log
import pytest
from helpers.cli import child_env, wqscan
from helpers.db import Db
from helpers.trees import OLD_NS, write

pytestmark = pytest.mark.scanner_free

CONSUMERS = 4
FILES = 30
ROUNDS = 12


def mutate(root: Path, rng: random.Random, stamp: int) -> None:
    """Create, rewrite, delete and rename some files; every write gets a new mtime."""
    names = sorted(p.name for p in root.iterdir())
    for _ in range(40):
        action = rng.choice(("create", "rewrite", "rewrite", "delete", "rename"))
        if action == "create" or not names:
            name = f"f{rng.randrange(FILES * 2)}.txt"
            write(root / name, f"{name} {stamp} {rng.random()}", OLD_NS + stamp)
            names.append(name)
        elif action == "rewrite":
            name = rng.choice(names)
            write(root / name, f"{name} {stamp} {rng.random()}", OLD_NS + stamp)
        elif action == "delete":
            name = names.pop(rng.randrange(len(names)))
            (root / name).unlink(missing_ok=True)
        else:
            name = names.pop(rng.randrange(len(names)))
            new = f"r{rng.randrange(FILES * 2)}.txt"
            if (root / name).exists() and not (root / new).exists():
                (root / name).rename(root / new)
                names.append(new)
        stamp += 1


def test_consumer_processes_and_reconcile(tmp_path: Path, database: Db) -> None:
    """Consumer processes drain the queue while reconciles fill it: no row is claimed twice
    or lost, each file's operations apply in order, the consumers' view ends as the tree."""
    db, log, stop = database, tmp_path / "log.jsonl", tmp_path / "stop"
    root = tmp_path / "tree"
    rng = random.Random(5)
    for i in range(FILES):
        write(root / f"f{i}.txt", f"file {i}")
    assert wqscan(db, "-q", "add", str(root), "--collection", "c", "--settle", "0").returncode == 0
    # each takes 30 ms over a row: long enough for the next scan to queue its file again
    consumer = consumer_log.command(db.target, log, stop, "--batch", "7", "--lease", "120",
                                    "--work", "0.03")
    workers = [subprocess.Popen(consumer, env=child_env(), stderr=subprocess.PIPE, text=True)
               for _ in range(CONSUMERS)]
    try:
        for n in range(ROUNDS):
            done = wqscan(db, "-q", "reconcile")
            assert done.returncode == 0, done.stderr
            mutate(root, rng, stamp=1000 * (n + 1))
        done = wqscan(db, "-q", "reconcile")
        assert done.returncode == 0, done.stderr
        stop.touch()
        for w in workers:
            assert w.wait(timeout=120) == 0, w.stderr.read()
    finally:
        for w in workers:
            w.kill()
            w.wait()
            w.stderr.close()

    # each row is logged before it is completed, and a file's next row cannot be claimed
    # before that: the log holds every file's operations in order
    view, problems, lines = consumer_log.replay(log)
    assert not problems, problems  # no lease lost, no row handed to two consumers
    assert len({line["pid"] for line in lines}) > 1, "only one consumer ever got work"

    left = wqscan(db, "-q", "queue", "list", "--limit", "0", "--json")
    assert json.loads(left.stdout) == []
    assert view == consumer_log.tree_hashes(root)
    assert sum(line["op"] != "ingest" for line in lines) > 50  # the rounds did change things
