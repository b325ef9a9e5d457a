"""The command line, invoked in process: help, global options, every command's happy path,
usage errors (exit 2, one line, database untouched), failed watches (exit 1)."""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import apsw
import pytest
from helpers.cli import one_line, run
from helpers.db import drain, queue
from helpers.trees import OLD_NS, write

import wqscan
from wqscan import _scan
from wqscan.cli import main
from wqscan.errors import NotADatabaseError
from wqscan.store import SCHEMA_VERSION, Store


def _commands() -> tuple[str, ...]:
    """Every command the parser has, so that a new one cannot escape the checks below."""
    import argparse

    from wqscan.cli.commands import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return tuple(sub.choices)


COMMANDS = _commands()
TOP = Path(__file__).resolve().parent.parent
DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]  # what a user reads


# -- helpers -------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cli.db"


def wq(capsys, db: Path, *argv: str) -> tuple[int, str, str]:
    """Run `wqscan --db DB ARGV`."""
    return run(capsys, "--db", str(db), *argv)


def ok(capsys, db: Path, *argv: str) -> str:
    """Run a command that must succeed; returns its stdout."""
    rc, out, err = wq(capsys, db, *argv)
    assert rc == 0, (argv, out, err)
    return out


def db_state(db: Path) -> tuple[str, str]:
    """Hashes of the database file and of its WAL (an absent WAL hashes as empty)."""
    gc.collect()  # close connections that in-process commands left for the collector
    wal = db.with_name(db.name + "-wal")
    return tuple(hashlib.sha256(p.read_bytes() if p.exists() else b"").hexdigest()
                 for p in (db, wal))


def rows(db: Path) -> list[dict]:
    """Every row of ingestion_queue (any status), metadata decoded."""
    s = Store.open(str(db))
    try:
        return queue(s, None)
    finally:
        s.close()


def snapshot_rows(db: Path) -> int:
    s = Store.open(str(db))
    try:
        return s.conn.execute("SELECT count(*) FROM wq_snapshot").fetchall()[0][0]
    finally:
        s.close()


def make_tree(path: Path, names=("a.txt", "sub/b.md", "sub/deep/c.txt")) -> Path:
    for n in names:
        write(path / n, f"content of {n}")
    return path


# -- 1. help and README --------------------------------------------------------------------

@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_has_help(capsys, cmd):
    """`wqscan CMD --help` exits 0 with a usage line and a description."""
    with pytest.raises(SystemExit) as ei:
        main([cmd, "--help"])
    assert ei.value.code in (0, None)
    out = capsys.readouterr().out
    paragraphs = out.split("\n\n")
    assert paragraphs[0].startswith(f"usage: wqscan {cmd}"), out
    description = paragraphs[1].strip()
    assert description and not description.startswith(("options:", "positional arguments:")), out


def test_top_level_help_lists_every_command(capsys):
    """`wqscan --help` names every command."""
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: wqscan")
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s", out, re.M), cmd


def test_command_names_are_the_parsers():
    """A run builds only its command's parser, found by name in COMMAND_NAMES: that list
    must be the parser's, or a new command would never be parsed on its own."""
    from wqscan.cli.commands import COMMAND_NAMES

    assert COMMAND_NAMES == COMMANDS


@pytest.mark.parametrize("argv,command", [
    (["reconcile", "-q"], "reconcile"),
    (["--db", "reconcile", "list"], "list"),  # a database file named like a command
    (["--db=x.db", "-q", "queue", "stats"], "queue"),
    (["--conf", "status", "show", "w"], "show"),  # an abbreviated --config takes a value
    (["-v", "--", "list"], None),
    (["-h", "list"], None),
    (["frobnicate"], None),
])
def test_command_of(argv, command):
    """The command a run's arguments name, as the whole parser reads them (None: the
    whole parser is built and decides)."""
    from wqscan.cli.commands import build_parser, command_of

    assert command_of(argv) == command
    if command is not None:
        assert build_parser(command).parse_args(argv).command == \
            build_parser().parse_args(argv).command == command


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_documented_in_readme(cmd):
    """The README or docs/ documents every command as `wqscan <command>`."""
    assert DOCS[0].is_file() and len(DOCS) > 1, f"{DOCS[0]} or docs/*.md is missing"
    assert any(f"wqscan {cmd}" in doc.read_text(encoding="utf-8") for doc in DOCS)


# -- 2. global options ---------------------------------------------------------------------

def test_db_option_before_and_after_command(capsys, tmp_path):
    """`--db X list` and `list --db X` both use X."""
    db1, db2 = tmp_path / "one.db", tmp_path / "two.db"
    tree = make_tree(tmp_path / "proj")
    rc, out, _ = run(capsys, "add", str(tree), "--collection", "c", "--db", str(db1))
    assert (rc, out) == (0, "proj\n")
    assert run(capsys, "--db", str(db2), "init")[0] == 0
    for argv in (["--db", str(db1), "list", "--json"], ["list", "--json", "--db", str(db1)]):
        rc, out, _ = run(capsys, *argv)
        assert rc == 0
        assert [w["watch_id"] for w in json.loads(out)] == ["proj"]
    for argv in (["--db", str(db2), "list", "--json"], ["list", "--db", str(db2), "--json"]):
        rc, out, _ = run(capsys, *argv)
        assert (rc, json.loads(out)) == (0, [])


def test_db_from_environment_and_precedence(capsys, tmp_path, monkeypatch):
    """$WQSCAN_DB is used without --db; --db wins over it."""
    env_db, opt_db = tmp_path / "env.db", tmp_path / "opt.db"
    monkeypatch.setenv("WQSCAN_DB", str(env_db))
    assert run(capsys, "init")[0] == 0
    assert env_db.is_file() and not opt_db.exists()
    assert run(capsys, "init", "--db", str(opt_db))[0] == 0
    assert opt_db.is_file()


def test_default_db_under_xdg_data_home(capsys, tmp_path, monkeypatch):
    """Without --db and $WQSCAN_DB the database is $XDG_DATA_HOME/wqscan/wqscan.db."""
    monkeypatch.delenv("WQSCAN_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert run(capsys, "init")[0] == 0
    assert (tmp_path / "xdg" / "wqscan" / "wqscan.db").is_file()


def test_a_relative_xdg_data_home_is_ignored(capsys, tmp_path, monkeypatch):
    """The XDG rules ignore a relative $XDG_DATA_HOME: the database is then
    ~/.local/share/wqscan/wqscan.db, not one relative to wherever the command runs."""
    monkeypatch.delenv("WQSCAN_DB", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", "relative")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "init")[0] == 0
    assert (tmp_path / "home" / ".local" / "share" / "wqscan" / "wqscan.db").is_file()
    assert not (tmp_path / "relative").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_and_after_command(capsys, db, where):
    """-q silences init's report before or after the command name."""
    argv = ["-q", "init"] if where == "before" else ["init", "-q"]
    rc, out, err = wq(capsys, db, *argv)
    assert (rc, out, err) == (0, "", "")
    assert db.is_file()
    rc, out, _ = wq(capsys, db, "init")
    assert rc == 0 and out.strip()


def test_version(capsys, tmp_path):
    """`--version` prints the version and the active scanner, and the store and layout of
    the database, creating nothing; then exits 0."""
    db = tmp_path / "none.db"
    assert main(["--db", str(db), "--version"]) == 0
    out = capsys.readouterr().out
    m = re.fullmatch(r"wqscan (\S+) \(scanner: (cython|python)\)\ndatabase: (.*)\n", out)
    assert m, out
    assert m.group(1) == wqscan.__version__
    assert m.group(2) == _scan.BACKEND
    assert m.group(3) == f"sqlite {db} (absent)"
    assert not db.exists()


def test_version_after_command(capsys, db):
    """`--version` is a global option and so is accepted after the command name too."""
    assert main(["--db", str(db), "list", "--version"]) == 0
    out = capsys.readouterr().out
    assert out == (f"wqscan {wqscan.__version__} (scanner: {_scan.BACKEND})\n"
                   f"database: sqlite {db} (absent)\n")


# -- 3. happy path -------------------------------------------------------------------------

def test_init_is_idempotent(capsys, db, tmp_path):
    """A second init keeps the database (and its watches) as it was."""
    ok(capsys, db, "init")
    ok(capsys, db, "add", str(make_tree(tmp_path / "t")), "--collection", "c")
    before = db_state(db)
    out = ok(capsys, db, "init")
    assert str(db) in out
    assert db_state(db) == before
    assert [w["watch_id"] for w in json.loads(ok(capsys, db, "list", "--json"))] == ["t"]


def test_add_prints_derived_unique_ids(capsys, db, tmp_path):
    """add prints an id derived from the directory name, unique among watches."""
    one = make_tree(tmp_path / "one" / "Docs")
    two = make_tree(tmp_path / "two" / "Docs")
    first = ok(capsys, db, "add", str(one), "--collection", "c")
    second = ok(capsys, db, "add", str(two), "--collection", "c")
    assert first == "docs\n"
    assert second.endswith("\n") and second.count("\n") == 1
    assert second.startswith("docs") and second != first
    third = ok(capsys, db, "add", str(tmp_path / "one"), "--collection", "other", "--id", "mine")
    assert third == "mine\n"
    ids = {w["watch_id"]: w["path"] for w in json.loads(ok(capsys, db, "list", "--json"))}
    assert ids == {"docs": str(one), second.strip(): str(two), "mine": str(tmp_path / "one")}


def test_add_stores_options(capsys, db, tmp_path):
    """add's options end up in the watch's settings."""
    tree = make_tree(tmp_path / "t")
    ok(capsys, db, "add", str(tree), "--collection", "notes", "--pattern", "*.md",
       "--ignore", "drafts/", "--priority", "*.md=7", "--metadata", '{"owner": "me"}',
       "--max-depth", "3", "--interval", "30", "--settle", "1.5", "--check-stat", "minimal",
       "--disabled")
    w = json.loads(ok(capsys, db, "show", "t", "--json"))
    assert w["collection"] == "notes"
    assert w["patterns"] == ["*.md"]
    assert "drafts/" in w["ignore_patterns"] and ".git" in w["ignore_patterns"]
    assert w["priority_rules"] == [["*.md", 7]]
    assert w["metadata"] == {"owner": "me"}
    assert (w["recursive_depth"], w["poll_interval_seconds"], w["debounce_seconds"]) == \
        (3, 30.0, 1.5)
    assert (w["check_stat"], w["enabled"]) == ("minimal", False)


def test_list_and_show(capsys, db, tmp_path):
    """list / list --json and show / show --json describe the watch; no line of the
    table ends in the padding of its last column."""
    tree = make_tree(tmp_path / "proj")
    ok(capsys, db, "add", str(tree), "--collection", "books")
    text = ok(capsys, db, "list")
    assert "proj" in text and str(tree) in text and "books" in text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []
    (w,) = json.loads(ok(capsys, db, "list", "--json"))
    assert (w["watch_id"], w["path"], w["collection"], w["enabled"]) == \
        ("proj", str(tree), "books", True)
    text = ok(capsys, db, "show", "proj")
    assert "proj" in text and str(tree) in text and "books" in text
    doc = json.loads(ok(capsys, db, "show", "proj", "--json"))
    assert (doc["watch_id"], doc["path"], doc["collection"]) == ("proj", str(tree), "books")
    assert "stats" in doc


def test_disable_and_enable(capsys, db, tmp_path):
    """disable and enable flip `enabled`."""
    ok(capsys, db, "add", str(make_tree(tmp_path / "t")), "--collection", "c")

    def enabled() -> bool:
        return json.loads(ok(capsys, db, "show", "t", "--json"))["enabled"]

    assert enabled() is True
    ok(capsys, db, "disable", "t")
    assert enabled() is False
    assert json.loads(ok(capsys, db, "list", "--json"))[0]["enabled"] is False
    ok(capsys, db, "enable", "t")
    assert enabled() is True


def test_reconcile_summary_and_queue(capsys, db, tmp_path):
    """reconcile prints a summary per watch and queues every file."""
    tree = make_tree(tmp_path / "t")
    ok(capsys, db, "add", str(tree), "--collection", "c", "--settle", "0")
    out = ok(capsys, db, "reconcile")
    assert re.search(r"^t: 3 ingest, 0 update, 0 delete", out, re.M), out
    got = {r["file_absolute_path"]: (r["operation"], r["status"]) for r in rows(db)}
    assert got == {str(tree / n): ("ingest", "pending")
                   for n in ("a.txt", "sub/b.md", "sub/deep/c.txt")}
    out = ok(capsys, db, "reconcile")
    assert re.search(r"^t: 0 ingest, 0 update, 0 delete", out, re.M), out


def test_reconcile_json_is_one_document(capsys, db, tmp_path):
    """reconcile --json prints exactly one JSON document with each watch's counts."""
    ok(capsys, db, "add", str(make_tree(tmp_path / "t")), "--collection", "c", "--settle", "0")
    ok(capsys, db, "add", str(make_tree(tmp_path / "u", ["x"])), "--collection", "c",
       "--settle", "0")
    out = ok(capsys, db, "reconcile", "--json")
    doc = json.loads(out)  # the whole of stdout: one document, nothing else
    got = {w["watch_id"]: (w["ok"], w["ingest"], w["update"], w["delete"])
           for w in doc["watches"]}
    assert got == {"t": (True, 3, 0, 0), "u": (True, 1, 0, 0)}


def test_reconcile_dry_run_writes_nothing(capsys, db, tmp_path):
    """--dry-run prints the operations and leaves queue, snapshot and file untouched."""
    tree = make_tree(tmp_path / "t")
    ok(capsys, db, "add", str(tree), "--collection", "c", "--settle", "0")
    before = db_state(db)
    out = ok(capsys, db, "reconcile", "--dry-run")
    for n in ("a.txt", "sub/b.md", "sub/deep/c.txt"):
        assert re.search(rf"^ingest\s+{re.escape(str(tree / n))}$", out, re.M), out
    doc = json.loads(ok(capsys, db, "reconcile", "--dry-run", "--json"))
    assert doc["dry_run"] is True
    assert sorted(o["path"] for o in doc["watches"][0]["operations"]) == \
        sorted(str(tree / n) for n in ("a.txt", "sub/b.md", "sub/deep/c.txt"))
    assert db_state(db) == before
    assert rows(db) == [] and snapshot_rows(db) == 0
    assert json.loads(ok(capsys, db, "show", "t", "--json"))["last_scan"] is None
    ok(capsys, db, "reconcile")
    assert sorted(r["file_absolute_path"] for r in rows(db)) == \
        sorted(str(tree / n) for n in ("a.txt", "sub/b.md", "sub/deep/c.txt"))


def test_status(capsys, db, tmp_path):
    """status / status --json: scanner, each watch's last scan, queue depth by status and op."""
    tree = make_tree(tmp_path / "t")
    ok(capsys, db, "add", str(tree), "--collection", "c", "--settle", "0")
    doc = json.loads(ok(capsys, db, "status", "--json"))
    assert doc["scanner"] == _scan.BACKEND
    assert doc["queue"] == {}
    ok(capsys, db, "reconcile")
    doc = json.loads(ok(capsys, db, "status", "--json"))
    assert doc["queue"] == {"pending": {"ingest": 3}}
    (w,) = doc["watches"]
    assert w["watch_id"] == "t" and w["last_result"] == "ok"
    # the consumer completes everything; then one file changes and one goes
    drain(db)
    write(tree / "a.txt", "changed content", OLD_NS + 10**9)
    (tree / "sub" / "b.md").unlink()
    ok(capsys, db, "reconcile")
    doc = json.loads(ok(capsys, db, "status", "--json"))
    assert doc["queue"] == {"pending": {"update": 1, "delete": 1}}
    text = ok(capsys, db, "status")
    assert f"scanner: {_scan.BACKEND}" in text
    assert re.search(r"^t\s+yes\s", text, re.M), text
    assert "pending" in text and "update" in text and "delete" in text


def test_remove(capsys, db, tmp_path):
    """remove unregisters the watch; with --emit-deletes it first queues deletes."""
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b", ["only.txt"])
    ok(capsys, db, "add", str(a), "--collection", "c", "--settle", "0")
    ok(capsys, db, "add", str(b), "--collection", "d", "--settle", "0")
    ok(capsys, db, "reconcile")
    drain(db)
    ok(capsys, db, "remove", "a")
    assert [w["watch_id"] for w in json.loads(ok(capsys, db, "list", "--json"))] == ["b"]
    assert rows(db) == []
    assert wq(capsys, db, "show", "a")[0] == 2
    ok(capsys, db, "remove", "b", "--emit-deletes")
    assert [(r["file_absolute_path"], r["operation"]) for r in rows(db)] == \
        [(str(b / "only.txt"), "delete")]
    assert json.loads(ok(capsys, db, "list", "--json")) == []


# -- 4. bad input: exit 2, one line, database untouched -------------------------------------

BAD = {
    "add-missing-path": lambda p: ["add", str(p.tmp / "nope"), "--collection", "c"],
    "add-file-as-root": lambda p: ["add", str(p.file), "--collection", "c"],
    "add-duplicate-id": lambda p: ["add", str(p.other), "--collection", "c", "--id", "w"],
    "add-pattern-trailing-backslash": lambda p: ["add", str(p.other), "--collection", "c",
                                                 "--pattern", "foo\\"],
    "add-pattern-empty": lambda p: ["add", str(p.other), "--collection", "c", "--pattern", ""],
    "add-priority-no-number": lambda p: ["add", str(p.other), "--collection", "c",
                                         "--priority", "x"],
    "add-priority-out-of-range": lambda p: ["add", str(p.other), "--collection", "c",
                                            "--priority", "*.md=11"],
    "add-metadata-not-json": lambda p: ["add", str(p.other), "--collection", "c",
                                        "--metadata", "not json"],
    "add-metadata-not-object": lambda p: ["add", str(p.other), "--collection", "c",
                                          "--metadata", "[1]"],
    "show-unknown": lambda p: ["show", "nosuch"],
    "remove-unknown": lambda p: ["remove", "nosuch"],
    "enable-unknown": lambda p: ["enable", "nosuch"],
    "disable-unknown": lambda p: ["disable", "nosuch"],
    "reconcile-unknown": lambda p: ["reconcile", "nosuch"],
    "reconcile-known-and-unknown": lambda p: ["reconcile", "w", "nosuch"],
    "reconcile-path-outside": lambda p: ["reconcile", "--path", str(p.other)],
    "unknown-command": lambda p: ["frobnicate"],
    "unknown-option-after": lambda p: ["list", "--frobnicate"],
    "unknown-option-before": lambda p: ["--frobnicate", "list"],
}


class _Paths:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = make_tree(tmp / "root")
        self.other = make_tree(tmp / "other", ["o.txt"])
        self.file = write(tmp / "plain.txt", "text")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_usage_error(capsys, db, tmp_path, case):
    """A usage error exits 2 with one line on stderr and leaves the database as it was."""
    p = _Paths(tmp_path)
    ok(capsys, db, "init")
    ok(capsys, db, "add", str(p.root), "--collection", "c", "--id", "w", "--settle", "0")
    before = db_state(db)
    rc, out, err = wq(capsys, db, *BAD[case](p))
    assert rc == 2, (out, err)
    one_line(err)
    assert out == ""
    assert db_state(db) == before


def test_text_file_as_db(capsys, tmp_path):
    """A file that is not a database is refused (exit 2, one line) and left unchanged."""
    bogus = write(tmp_path / "notes.txt", "these are my notes, not a database\n" * 20)
    content = bogus.read_bytes()
    for argv in (["list"], ["init"], ["status", "--json"]):
        rc, out, err = run(capsys, "--db", str(bogus), *argv)
        assert rc == 2, (argv, out, err)
        one_line(err)
        assert str(bogus) in err
    assert bogus.read_bytes() == content
    assert not Path(str(bogus) + "-wal").exists()


def test_foreign_sqlite_database_as_db(capsys, tmp_path):
    """An SQLite database of another application is refused and left unchanged."""
    path = tmp_path / "other.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);"
                 "INSERT INTO accounts (name) VALUES ('x')")
    conn.close()
    before = db_state(path)
    rc, out, err = run(capsys, "--db", str(path), "init")
    assert rc == 2, (out, err)
    one_line(err)
    assert db_state(path) == before


# -- 5. -v ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["-v", "show", "nosuch"], ["show", "nosuch", "--verbose"]],
                         ids=["before", "after"])
def test_verbose_adds_traceback(capsys, db, argv):
    """With -v an error comes with its traceback; the last line is still the error."""
    ok(capsys, db, "init")
    rc, _, err = wq(capsys, db, *argv)
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) > 1 and "Traceback" in err
    assert lines[-1].startswith("wqscan: error:") and "nosuch" in lines[-1]


# -- 6. a watch that fails as a whole -------------------------------------------------------

def test_root_removed_fails_watch(capsys, db, tmp_path):
    """A watch whose root is gone fails (exit 1, one line naming it); others still scan."""
    gone = make_tree(tmp_path / "gone")
    fine = make_tree(tmp_path / "fine", ["f.txt"])
    ok(capsys, db, "add", str(gone), "--collection", "c", "--settle", "0")
    ok(capsys, db, "add", str(fine), "--collection", "c", "--settle", "0", "--id", "fine")
    shutil.rmtree(gone)
    rc, out, err = wq(capsys, db, "reconcile")
    assert rc == 1, (out, err)
    one_line(err)
    assert "gone" in err
    assert [r["file_absolute_path"] for r in rows(db)] == [str(fine / "f.txt")]
    doc = json.loads(ok(capsys, db, "status", "--json"))
    result = {w["watch_id"]: w["last_result"] for w in doc["watches"]}
    assert result == {"gone": "failed", "fine": "ok"}


def test_root_removed_named_watch(capsys, db, tmp_path):
    """reconcile ID of a watch whose root vanished exits 1 with one line naming it."""
    gone = make_tree(tmp_path / "vanishing")
    ok(capsys, db, "add", str(gone), "--collection", "c", "--settle", "0")
    ok(capsys, db, "reconcile")
    os.rename(gone, tmp_path / "elsewhere")
    rc, _, err = wq(capsys, db, "reconcile", "vanishing")
    assert rc == 1
    one_line(err)
    assert "vanishing" in err


# -- 7. disabled watches --------------------------------------------------------------------

def test_reconcile_and_disabled_watches(capsys, db, tmp_path):
    """reconcile skips disabled watches unless they are named."""
    on = make_tree(tmp_path / "on", ["x.txt"])
    off = make_tree(tmp_path / "off", ["y.txt"])
    ok(capsys, db, "add", str(on), "--collection", "c", "--settle", "0")
    ok(capsys, db, "add", str(off), "--collection", "c", "--settle", "0", "--disabled")
    doc = json.loads(ok(capsys, db, "reconcile", "--json"))
    assert [w["watch_id"] for w in doc["watches"]] == ["on"]
    assert [r["file_absolute_path"] for r in rows(db)] == [str(on / "x.txt")]
    doc = json.loads(ok(capsys, db, "reconcile", "off", "--json"))
    assert [(w["watch_id"], w["ingest"]) for w in doc["watches"]] == [("off", 1)]
    assert sorted(r["file_absolute_path"] for r in rows(db)) == \
        sorted([str(on / "x.txt"), str(off / "y.txt")])
    assert json.loads(ok(capsys, db, "show", "off", "--json"))["enabled"] is False


# -- which commands create a database (only those that write; the rest refuse a missing one) -

@pytest.mark.parametrize("argv", [
    ["status"], ["list"], ["show", "x"], ["reconcile"], ["metrics"], ["queue", "list"],
    ["queue", "stats"], ["queue", "claim", "1"], ["enable", "x"], ["remove", "x"],
    ["run", "--once"], ["set", "x", "--interval", "5"],
], ids=lambda a: "-".join(a))
def test_missing_database_is_refused_not_created(capsys, monkeypatch, tmp_path, argv):
    """A command that defines no work, given a database that does not exist (a typo in
    $WQSCAN_DB, say), exits 2 with one line naming it and creates nothing."""
    typo = tmp_path / "sub" / "typo.db"
    monkeypatch.setenv("WQSCAN_DB", str(typo))
    rc, out, err = run(capsys, *argv)
    assert rc == 2, (out, err)
    assert err.strip() == f"wqscan: error: database {typo} does not exist (wqscan init or " \
        "wqscan add creates it)"
    assert os.listdir(tmp_path) == []


def test_queueclient_refuses_a_missing_database(tmp_path):
    from wqscan.queue.consumer import QueueClient

    with pytest.raises(NotADatabaseError, match="does not exist"):
        QueueClient(str(tmp_path / "typo.db"))
    assert os.listdir(tmp_path) == []


def test_commands_that_define_work_create_it(capsys, tmp_path):
    """init, add, and run with a configuration that lists watches create the database."""
    (tmp_path / "t").mkdir()
    for name, argv in (("a", ["init"]), ("b", ["add", str(tmp_path / "t"), "--collection", "c"])):
        assert run(capsys, "--db", str(tmp_path / f"{name}.db"), *argv)[0] == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"watches:\n  - id: t\n    path: {tmp_path / 't'}\n    collection: c\n")
    rc, _, err = run(capsys, "--db", str(tmp_path / "c.db"), "--config", str(cfg), "run",
                     "--once")
    assert rc == 0, err
    assert {"a.db", "b.db", "c.db"} <= set(os.listdir(tmp_path))
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    rc, _, err = run(capsys, "--db", str(empty), "status")
    assert rc == 2 and "is empty" in err and empty.read_bytes() == b""


@pytest.mark.parametrize("how", ["option", "environment", "yaml"])
def test_tilde_in_the_database_path_is_the_home(capsys, monkeypatch, tmp_path, how):
    """`~` in --db, $WQSCAN_DB and the YAML's database: is expanded alike; no directory
    named `~` appears."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WQSCAN_DB", raising=False)
    argv = ["init"]
    if how == "option":
        argv = ["--db", "~/x.db", "init"]
    elif how == "environment":
        monkeypatch.setenv("WQSCAN_DB", "~/x.db")
    else:
        (tmp_path / "c.yaml").write_text("database: ~/x.db\n")
        argv = ["--config", str(tmp_path / "c.yaml"), "init"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    assert (home / "x.db").is_file() and not (tmp_path / "~").exists()


# -- messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (["reconcile", "--dryrun"],
     "wqscan: error: unrecognized arguments: --dryrun (did you mean --dry-run?)"),
    (["reconcil"], "(did you mean reconcile?)"),
    (["queue", "clam", "1"], "wqscan: error: queue: argument ACTION: invalid choice: 'clam'"),
    (["queue", "clam", "1"], "(did you mean claim?)"),
])
def test_usage_errors_name_the_program_once_and_suggest(capsys, db, argv, line):
    """One `wqscan:` per line (not `wqscan: error: wqscan: ...`), and the nearest option or
    command to a misspelt one."""
    rc, out, err = wq(capsys, db, *argv)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert line in err and err.startswith("wqscan: error: ") and err.count("wqscan") == 1, err


def test_reconcile_without_watches_says_so(capsys, db):
    ok(capsys, db, "init")
    rc, out, err = wq(capsys, db, "reconcile")
    assert (rc, out) == (0, "")
    assert err == "wqscan: no enabled watch to scan (wqscan add PATH --collection NAME adds " \
        "one)\n"


def test_hook_install_warns_when_no_watch_covers_the_repository(capsys, db, tmp_path):
    """The hooks rescan the watches containing the repository: with none, install says so
    on stderr (and still installs); with one, it does not."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    ok(capsys, db, "add", str(tmp_path / "repo" / ".."), "--collection", "other", "--disabled")
    rc, out, err = wq(capsys, db, "hook", "install", str(repo))
    assert rc == 0 and out.count("installed ") == 3
    assert err == f"wqscan: warning: no enabled watch contains {os.path.realpath(repo)}, so " \
        f"the hooks rescan nothing until one does (wqscan add {os.path.realpath(repo)} " \
        "--collection NAME)\n"
    ok(capsys, db, "add", str(repo), "--collection", "code")
    rc, out, err = wq(capsys, db, "hook", "install", str(repo))
    assert (rc, err) == (0, "")


# -- output a person reads; --json everywhere --------------------------------------------------

def test_show_prints_option_names_and_human_values(capsys, db, tmp_path):
    """show says `settle: 0 s`, `max depth: unlimited`, `gitignore: yes`, not column names
    and Python values (`debounce_seconds`, None, True, long floats)."""
    tree = make_tree(tmp_path / "proj")
    ok(capsys, db, "add", str(tree), "--collection", "books", "--settle", "0",
       "--priority", "*.md=7")
    text = ok(capsys, db, "show", "proj")
    assert "last scan:          never" in text
    ok(capsys, db, "reconcile", "-q")
    text = ok(capsys, db, "show", "proj")
    for line in ("settle:             0 s", "interval:           60 s",
                 "max depth:          unlimited", "gitignore:          yes",
                 "follow symlinks:    no", "priority:           *.md=7",
                 "max file size:      no limit", "result:             ok", "reason:             -",
                 "ingest:             3"):
        assert line in text.splitlines(), (line, text)
    assert not re.search(r"\b(True|False|None)\b|debounce_seconds|\d\.\d{5,}", text), text


def test_show_renders_each_kind_of_value_set_and_unset(capsys, db, tmp_path):
    """Unset, a value says what it means (every file, the automatic thread count, the
    default timeout, no metadata, `-` where nothing more is to say); set, lists are joined
    by `, `, rules read GLOB=N, seconds end in ` s` and metadata is its JSON (a name's
    backslash escaped, other text as is)."""
    tree = make_tree(tmp_path / "proj")
    ok(capsys, db, "add", str(tree), "--collection", "c")

    def shown() -> list[str]:
        return ok(capsys, db, "show", "proj").splitlines()

    for label, value in (("patterns", "-"), ("priority", "-"), ("metadata", "-"),
                         ("config file", "-"),
                         ("threads", "auto (16 on network and FUSE mounts, one per core "
                                     "(at most 8) otherwise)"),
                         ("timeout", "600 s (the default)")):
        assert f"{label + ':':20}{value}" in shown(), label
    ok(capsys, db, "set", "proj", "--pattern", "*.md", "--pattern", "a\\b", "--priority",
       "*.md=7", "--priority", "*.txt=3", "--threads", "4", "--timeout", "30",
       "--interval", "90.5", "--metadata", '{"k": [1, "\u00e9"]}')
    for label, value in (("patterns", "*.md, a\\\\b"), ("priority", "*.md=7, *.txt=3"),
                         ("threads", "4"), ("timeout", "30 s"), ("interval", "90.5 s"),
                         ("metadata", '{"k": [1, "\u00e9"]}')):
        assert f"{label + ':':20}{value}" in shown(), label


def test_list_shows_a_failed_last_scan(capsys, db, tmp_path):
    """A watch whose scans failed is not listed as never scanned."""
    tree = make_tree(tmp_path / "gone")
    ok(capsys, db, "add", str(tree), "--collection", "c")
    assert "  never  " in ok(capsys, db, "list")
    shutil.rmtree(tree)
    assert wq(capsys, db, "reconcile")[0] == 1
    line = ok(capsys, db, "list").splitlines()[1]
    assert re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z \(failed\)", line), line


def test_json_on_add_init_and_run_once(capsys, db, tmp_path):
    """add, init and run --once print one JSON document with --json."""
    doc = json.loads(ok(capsys, db, "init", "--json"))
    assert doc == {"database": str(db), "layout": "wqscan", "schema_version": SCHEMA_VERSION}
    tree = make_tree(tmp_path / "t")
    doc = json.loads(ok(capsys, db, "add", str(tree), "--collection", "c", "--json"))
    assert (doc["watch_id"], doc["path"], doc["collection"]) == ("t", str(tree), "c")
    rc, out, err = wq(capsys, db, "run", "--once", "--json", "-q")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["failed"] is False
    assert [(s["watch_id"], s["result"]) for s in doc["scans"]] == [("t", "ok")]
    rc, out, err = wq(capsys, db, "run", "--json")
    assert rc == 2 and "--json needs --once" in err
