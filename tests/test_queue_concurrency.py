"""Several consumer processes drain one queue while `wqscan reconcile` processes fill it:
no row is claimed twice, none is lost, each file's operations apply in order, and the
consumers' combined view ends equal to the tree."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash

from helpers import OLD_NS, write

pytestmark = pytest.mark.scanner_free

CONSUMERS = 4
FILES = 30
ROUNDS = 12

# A consumer: claims batches, logs each row (before completing it, so a file's next row,
# which cannot be claimed before this one is completed, is always logged after it), and
# exits once the stop file exists and nothing is left to claim.
WORKER = r"""
import json, os, sys, time
from wqscan import QueueClient
from wqscan.errors import LeaseLost

db, log, stop = sys.argv[1:]
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
with QueueClient(db) as q:
    while True:
        stopping = os.path.exists(stop)
        rows = q.claim(7, lease_seconds=120)
        if not rows and stopping:
            break
        if not rows:
            time.sleep(0.02)  # an idle consumer polls gently
        for r in rows:
            time.sleep(0.03)  # the work: long enough for the next scan to queue this file again
            line = {"id": r.queue_id, "op": r.operation, "path": r.file_absolute_path,
                    "hash": (r.metadata or {}).get("content_hash"), "pid": os.getpid()}
            os.write(fd, (json.dumps(line) + "\n").encode())
            try:
                q.complete(r.queue_id)
            except LeaseLost as e:
                os.write(fd, (json.dumps({"lost": str(e)}) + "\n").encode())
"""


def wqscan(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wqscan", "--db", str(db), "-q", *args],
                          capture_output=True, text=True, timeout=120)


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


def test_consumer_processes_and_reconcile(tmp_path: Path) -> None:
    db, log, stop = tmp_path / "wq.db", tmp_path / "log.jsonl", tmp_path / "stop"
    root = tmp_path / "tree"
    rng = random.Random(5)
    for i in range(FILES):
        write(root / f"f{i}.txt", f"file {i}")
    assert wqscan(db, "add", str(root), "--collection", "c", "--settle", "0").returncode == 0
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(log), str(stop)],
                                stderr=subprocess.PIPE, text=True)
               for _ in range(CONSUMERS)]
    try:
        for n in range(ROUNDS):
            done = wqscan(db, "reconcile")
            assert done.returncode == 0, done.stderr
            mutate(root, rng, stamp=1000 * (n + 1))
        done = wqscan(db, "reconcile")
        assert done.returncode == 0, done.stderr
        stop.touch()
        for w in workers:
            assert w.wait(timeout=120) == 0, w.stderr.read()
    finally:
        for w in workers:
            w.kill()
            w.wait()
            w.stderr.close()

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [line for line in lines if "lost" in line]
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids)), "a row was handed to two consumers"
    assert len({line["pid"] for line in lines}) > 1, "only one consumer ever got work"

    left = wqscan(db, "queue", "list", "--limit", "0", "--json")
    assert json.loads(left.stdout) == []

    view: dict[str, str] = {}  # path -> content hash, applied in log order
    for line in lines:
        path, op = line["path"], line["op"]
        if op == "ingest":
            assert path not in view, f"ingest of {path}, which the consumers already hold"
            view[path] = line["hash"]
        elif op == "update":
            assert path in view, f"update of {path}, which the consumers never got"
            view[path] = line["hash"]
        else:
            assert path in view, f"delete of {path}, which the consumers never got"
            del view[path]
    tree = {str(p): xxhash.xxh3_128_hexdigest(p.read_bytes()) for p in root.iterdir()}
    assert view == tree
    assert sum(line["op"] != "ingest" for line in lines) > 50  # the rounds did change things
