"""What commands say, where a careful user would otherwise be misled, and the small gaps
a user trips on: `set` that changes nothing, deletes that cancel pending ingests, a new
collection's deletes, the option hint, `reconcile --until-settled`'s duration, a queue id
that was never queued, `--path` of an ancestor of watches, `add --allow-missing`, sizes
with units, and `/` as a watch."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.cli import run
from helpers.db import drain
from helpers.ondisk import read_rows
from helpers.trees import write

from wqscan.cli import main

pytestmark = pytest.mark.usefixtures("no_ambient_config")


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "wq.db")


def added(capsys, db: str, root: Path, *options: str) -> str:
    """`wqscan add ROOT --collection c --settle 0 OPTIONS`; returns the watch id."""
    rc, out, err = run(capsys, "--db", db, "add", str(root), "--collection", "c",
                       "--settle", "0", *options)
    assert rc == 0, err
    return out.strip()


# -- set, remove --------------------------------------------------------------------------------

@pytest.mark.scanner_free
def test_set_that_changes_nothing_says_so(capsys, db, root):
    """`set` to the values a watch already has writes nothing and says nothing changed; a
    real change names only what changed."""
    write(root / "a.txt")
    wid = added(capsys, db, root, "--interval", "30")
    rc, out, _ = run(capsys, "--db", db, "set", wid, "--interval", "30", "--settle", "0")
    assert (rc, out) == (0, f"nothing changed: {wid} already has those settings\n")
    rc, out, _ = run(capsys, "--db", db, "set", wid, "--interval", "30", "--settle", "5")
    assert (rc, out) == (0, f"changed {wid}: settle\n")


def test_remove_emit_deletes_says_what_the_deletes_did(twin, capsys, db, root):
    """A delete that cancels a pending ingest leaves no row: `remove --emit-deletes` says
    so instead of counting it as queued (and counts in the singular when it is one)."""
    write(root / "old.txt", "old")
    wid = added(capsys, db, root)
    assert main(["--db", db, "reconcile", "-q"]) == 0
    drain(db)
    write(root / "new.txt", "new")  # pending ingest, never consumed
    assert main(["--db", db, "reconcile", "-q"]) == 0
    rc, out, _ = run(capsys, "--db", db, "remove", wid, "--emit-deletes")
    assert (rc, out) == (0, f"removed {wid}; 1 delete queued, 1 pending ingest cancelled "
                            "(never consumed)\n")


def test_set_collection_says_it_queued_deletes_into_the_old_one(twin, capsys, db, root):
    """A new collection first queues a delete of every file into the old collection: `set`
    says so."""
    for name in ("a.txt", "b.txt", "c.txt"):
        write(root / name, name)
    wid = added(capsys, db, root)
    assert main(["--db", db, "reconcile", "-q"]) == 0
    drain(db)
    rc, out, _ = run(capsys, "--db", db, "set", wid, "--collection", "other")
    assert (rc, out) == (0, f"changed {wid}: collection; 3 deletes queued into the old "
                            "collection c\n")


@pytest.mark.scanner_free
def test_a_second_watch_of_one_tree_is_refused_in_plain_words(capsys, db, root):
    write(root / "a.txt")
    wid = added(capsys, db, root)
    rc, _, err = run(capsys, "--db", db, "add", str(root), "--collection", "c")
    assert rc == 2 and f"is already watched by watch '{wid}'" in err, err


# -- the command line's hints ---------------------------------------------------------------

@pytest.mark.scanner_free
def test_an_option_of_another_command_is_not_its_own_near_miss(capsys, db):
    """`--json` where the command has none is not answered with `did you mean --json?`."""
    assert main(["--db", db, "init", "-q"]) == 0
    rc, _, err = run(capsys, "--db", db, "enable", "x", "--json")
    assert rc == 2 and "did you mean" not in err, err
    assert "--json is not an option of this command" in err, err
    rc, _, err = run(capsys, "--db", db, "status", "--jsn")
    assert rc == 2 and "did you mean --json?" in err, err


@pytest.mark.scanner_free
def test_completing_an_id_never_queued_does_not_blame_another_consumer(capsys, db):
    assert main(["--db", db, "init", "-q"]) == 0
    rc, _, err = run(capsys, "--db", db, "queue", "complete",
                     "00000000-0000-4000-8000-000000000000")
    assert rc == 1 and "another consumer" not in err, err
    assert "not in the queue" in err and "never queued" in err, err


# -- reconcile --------------------------------------------------------------------------------

def test_until_settled_reports_the_whole_commands_duration(twin, capsys, db, root):
    """`reconcile --until-settled` scans again while files are too young: its summary gives
    the time of the whole command (its passes and the waits between), not of its last pass."""
    write(root / "old.txt", "old")
    added(capsys, db, root, "--settle", "1")
    fresh = root / "fresh.txt"
    write(fresh, "fresh", mtime_ns=0)
    os.utime(fresh)  # now: deferred by the settle time of 1 s
    rc, out, err = run(capsys, "--db", db, "reconcile", "--until-settled", "30")
    assert rc == 0, err
    took = float(out.rsplit(", ", 1)[1].removesuffix(" s\n"))
    assert took >= 0.5, out  # at least one wait of half a second between two passes
    assert "2 ingest" in out, out


def test_path_counts_and_warns_only_within_the_path(twin, capsys, db, root):
    """`--path a/b` counts the files and directories below a/b only, and says nothing of
    names outside it (a name that is not UTF-8 in the root, a link leading out in a)."""
    write(root / "x.txt")
    write(root / "a" / "y.txt")
    write(root / "a" / "b" / "z.txt")
    write(root / "a" / "b" / "c" / "w.txt")
    os.close(os.open(os.path.join(os.fsencode(root), b"caf\xe9"), os.O_CREAT | os.O_WRONLY))
    os.symlink("/etc/passwd", root / "a" / "outside")
    added(capsys, db, root, "--follow-symlinks")
    assert main(["--db", db, "reconcile", "-q"]) == 0
    rc, out, err = run(capsys, "--db", db, "reconcile", "--path", str(root / "a" / "b"))
    assert (rc, err) == (0, ""), err
    assert "2 files in 2 dirs, 0 warnings" in out, out


def test_path_of_an_ancestor_scans_the_watches_below_it(twin, capsys, db, tmp_path):
    """`--path P` where P holds watch roots (no watch contains it) scans those watches
    whole."""
    for name in ("one", "two"):
        write(tmp_path / "work" / name / "f.txt", name)
    for name in ("one", "two"):
        rc, _, err = run(capsys, "--db", db, "add", str(tmp_path / "work" / name),
                         "--collection", name, "--settle", "0")
        assert rc == 0, err
    write(tmp_path / "elsewhere" / "e.txt")
    rc, out, err = run(capsys, "--db", db, "reconcile", "--path", str(tmp_path / "work"))
    assert rc == 0, err
    assert [line.split(":")[0] for line in out.splitlines()] == ["one", "two"], out
    rc, _, err = run(capsys, "--db", db, "reconcile", "--path", str(tmp_path / "elsewhere"))
    assert rc == 2 and "no enabled watch contains" in err, err


# -- add ----------------------------------------------------------------------------------------

@pytest.mark.scanner_free
def test_add_allow_missing_accepts_a_share_not_mounted_yet(capsys, db, tmp_path):
    """`add` refuses a path that does not exist, pointing at --allow-missing, which accepts
    it (as the YAML file does); its scans fail until the path is there."""
    share = tmp_path / "share"
    rc, _, err = run(capsys, "--db", db, "add", str(share), "--collection", "c")
    assert rc == 2 and "--allow-missing" in err, err
    rc, out, err = run(capsys, "--db", db, "add", str(share), "--collection", "c",
                       "--allow-missing")
    assert rc == 0, err
    rc, _, err = run(capsys, "--db", db, "reconcile")
    assert rc == 1 and "unavailable" in err, err
    write(share / "doc.txt", "doc")
    rc, out, err = run(capsys, "--db", db, "reconcile")
    assert rc == 0 and "1 ingest" in out, (out, err)


@pytest.mark.scanner_free
@pytest.mark.parametrize("given,size", [("10MB", 10_000_000), ("10M", 10 << 20),
                                        ("1.5G", 3 << 29), ("512k", 512 << 10),
                                        ("2KiB", 2048), ("4096", 4096)])
def test_max_file_size_takes_the_usual_units(capsys, db, root, tmp_path, given, size):
    """--max-file-size (and the YAML key) accept bytes or a size with a unit: K, M, G, T
    are powers of 1024, KB, MB, GB, TB powers of 1000."""
    write(root / "a.txt")
    wid = added(capsys, db, root, "--max-file-size", given)
    assert read_rows(db, "SELECT max_file_size FROM watch_folders") == [(size,)]
    assert main(["--db", db, "set", wid, "--max-file-size", "none", "-q"]) == 0
    assert main(["--db", db, "set", wid, "--max-file-size", given, "-q"]) == 0
    assert read_rows(db, "SELECT max_file_size FROM watch_folders") == [(size,)]
    cfg = tmp_path / "w.yml"
    cfg.write_text(f"watches:\n  - id: y\n    path: {tmp_path}\n    collection: y\n"
                   f"    max_file_size: {given}\n")
    assert main(["--db", db, "--config", str(cfg), "list"]) == 0
    assert read_rows(db, "SELECT max_file_size FROM watch_folders WHERE watch_id = 'y'") == \
        [(size,)]


@pytest.mark.scanner_free
def test_the_whole_filesystem_is_not_a_watch(capsys, db):
    """`wqscan add /` is refused in one line: / holds /proc, /sys and /dev."""
    rc, out, err = run(capsys, "--db", db, "add", "/", "--collection", "c")
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert "whole filesystem" in err, err
