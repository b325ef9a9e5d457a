"""Bad input everywhere: malformed arguments to every command, empty, non-UTF-8 and 100k-
character strings, extreme numbers, every key of the YAML file with the wrong type, and
hostile trees (control characters in names, 255-byte names, 2,000 levels, 100,000 files in
one directory, paths longer than PATH_MAX, .gitignore patterns that explode a naive
matcher).

For each: no traceback and no hang, one line naming the culprit where something is
refused, the exit code of docs/operations.md (0 ok, 1 a watch failed, 2 usage), the database
unchanged after refused input, and sensible scan results on both twins. Quick argument
checks run `main()` in process; whatever might hang runs in a subprocess with a timeout.
What feeds hostile values to the store (odd, long and deep paths, 100k-character and
non-UTF-8 arguments, extreme numbers) runs on both stores (fixture `database`: an SQLite
file, a PostgreSQL schema).
"""
from __future__ import annotations

import gc
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers.cli import run, wqscan
from helpers.db import Db, drain, dump, queue, scan, watch
from helpers.ondisk import dump_db, read_rows
from helpers.trees import OLD_NS, write
from helpers.twins import twin_env

from wqscan.cli import main
from wqscan.store import Store

pytestmark = pytest.mark.usefixtures("no_ambient_config")

#: The catch-all of cli.main: an exception nobody turned into a message.
UNHANDLED = "(-v shows the traceback)"
LONG = 100_000
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# -- helpers -------------------------------------------------------------------------------

def refused(rc: int, out: str, err: str, code: int = 2) -> str:
    """A refusal: the exit code, nothing on stdout, one line on stderr, no traceback, no
    unhandled exception. Returns the line."""
    assert rc == code, (rc, out[:300], err[:600])
    assert UNHANDLED not in err and "Traceback" not in err, err[:600]
    assert err.startswith("wqscan: error: ") and err.endswith("\n") and err.count("\n") == 1, \
        err[:600]
    assert out == "", out[:300]
    return err


def handled(rc: int, err: str, allowed: tuple[int, ...] = (0, 2)) -> None:
    """Accepted or refused, but handled: an allowed exit code, no unhandled exception,
    and when refused one line on stderr."""
    assert rc in allowed, (rc, err[:600])
    assert UNHANDLED not in err and "Traceback" not in err, err[:600]
    if rc != 0:
        assert err.count("\n") == 1, err[:600]


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as JSON (RFC 8259) does."""
    def bad(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=bad)


class World:
    """A database holding one scanned watch `w` (3 pending rows), copied for each test from
    one made per module, and paths to misuse: trees, a file, a FIFO, a plain directory
    (shared by the module's tests) and the test's own directory `tmp`."""

    def __init__(self, base: Path, tmp: Path, database: Db | None = None) -> None:
        self.base, self.tmp = base, tmp
        self.db = tmp / "wq.db"
        self.database = database  # None: the SQLite file `db`
        self.db_argv = database.argv if database else ["--db", str(self.db)]
        self.tree, self.other = base / "tree", base / "other"
        self.file, self.fifo = base / "plain.txt", base / "fifo"
        self.plain_dir, self.binary = base / "plain-dir", base / "binary.yml"

    @staticmethod
    def make(base: Path) -> None:
        for n in ("a.txt", "sub/b.md", "sub/c.txt"):
            write(base / "tree" / n, n)
        write(base / "other" / "o.txt", "o")
        write(base / "plain.txt", "plain")
        os.mkfifo(base / "fifo")
        (base / "plain-dir").mkdir()
        write(base / "binary.yml", b"\x00\xff\xfe garbage")
        db = str(base / "template.db")
        assert main(["--db", db, "-q", "add", str(base / "tree"), "--collection", "c", "--id",
                     "w", "--settle", "0"]) == 0
        assert main(["--db", db, "reconcile", "-q"]) == 0
        gc.collect()  # the commands leave their connections to the collector

    def args(self, argv: list[str]) -> list[str]:
        subst = {"{tree}": str(self.tree), "{other}": str(self.other), "{file}": str(self.file),
                 "{fifo}": str(self.fifo), "{dir}": str(self.plain_dir),
                 "{missing}": str(self.base / "missing"), "{binary}": str(self.binary)}
        out = []
        for a in argv:
            for k, v in subst.items():
                a = a.replace(k, v)
            out.append(a)
        return self.db_argv + out if "--db" not in out else out

    def dump(self) -> list:
        """The database's logical content, for before/after comparisons."""
        return dump(self.database) if self.database else dump_db(self.db)


@pytest.fixture(scope="module")
def world_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("world")
    World.make(base)
    return base


@pytest.fixture
def world(world_base, tmp_path) -> World:
    for suffix in ("", "-wal"):
        src = world_base / f"template.db{suffix}"
        if src.exists():
            shutil.copyfile(src, tmp_path / f"wq.db{suffix}")
    return World(world_base, tmp_path)


@pytest.fixture
def any_world(world_base, tmp_path, database: Db) -> World:
    """`world` on either store: the SQLite file copied from the module's template, or the
    same watch added and scanned in a fresh PostgreSQL schema."""
    if database.kind == "sqlite":
        for suffix in ("", "-wal"):
            src = world_base / f"template.db{suffix}"
            if src.exists():
                shutil.copyfile(src, tmp_path / f"wq.db{suffix}")
        assert database.target.db == str(tmp_path / "wq.db")
    else:
        w = World(world_base, tmp_path, database)
        assert main([*w.db_argv, "-q", "add", str(w.tree), "--collection", "c", "--id", "w",
                     "--settle", "0"]) == 0
        assert main([*w.db_argv, "reconcile", "-q"]) == 0
        gc.collect()
    return World(world_base, tmp_path, database)


# -- 1. malformed arguments to every command: exit 2, one line, database unchanged ----------

ADD = ["add", "{other}", "--collection", "d"]
BAD_ARGS = {
    # add
    "add-no-collection": ["add", "{other}"],
    "add-no-path": ["add", "--collection", "d"],
    "add-empty-path": ["add", "", "--collection", "d"],
    "add-fifo-path": ["add", "{fifo}", "--collection", "d"],
    "add-dev-null-path": ["add", "/dev/null", "--collection", "d"],
    "add-empty-collection": ["add", "{other}", "--collection", ""],
    "add-blank-collection": ["add", "{other}", "--collection", "   "],
    **{f"add-interval-{name}": ADD + ["--interval", value] for name, value in (
        ("negative", "-1"), ("zero", "0"), ("nan", "nan"), ("minus-inf", "-inf"),
        ("word", "soon"))},
    "add-settle-negative": ADD + ["--settle", "-1"],
    "add-settle-nan": ADD + ["--settle", "nan"],
    "add-max-depth-negative": ADD + ["--max-depth", "-5"],
    "add-max-depth-zero": ADD + ["--max-depth", "0"],
    "add-max-depth-float": ADD + ["--max-depth", "1.5"],
    "add-threads-zero": ADD + ["--threads", "0"],
    "add-threads-negative": ADD + ["--threads", "-1"],
    "add-threads-257": ADD + ["--threads", "257"],
    "add-threads-word": ADD + ["--threads", "many"],
    "add-timeout-zero": ADD + ["--timeout", "0"],
    "add-timeout-negative": ADD + ["--timeout", "-3"],
    "add-timeout-nan": ADD + ["--timeout", "nan"],
    "add-max-file-size-negative": ADD + ["--max-file-size", "-1"],
    "add-max-file-size-word": ADD + ["--max-file-size", "lots"],
    "add-max-file-size-unit": ADD + ["--max-file-size", "1XB"],
    "add-priority-negative": ADD + ["--priority", "*.md=-1"],
    "add-priority-float": ADD + ["--priority", "*.md=1.5"],
    "add-priority-no-glob": ADD + ["--priority", "=3"],
    "add-priority-no-number": ADD + ["--priority", "*.md="],
    "add-priority-huge": ADD + ["--priority", "*.md=" + "9" * 30],
    "add-priority-bad-glob": ADD + ["--priority", "[z-a]=3"],
    "add-metadata-string": ADD + ["--metadata", '"owner"'],
    "add-metadata-number": ADD + ["--metadata", "1"],
    "add-metadata-broken": ADD + ["--metadata", '{"a": '],
    "add-metadata-empty": ADD + ["--metadata", ""],
    "add-check-stat": ADD + ["--check-stat", "sometimes"],
    "add-id-slash": ADD + ["--id", "a/b"],
    "add-id-dotdot": ADD + ["--id", "../x"],
    "add-id-space": ADD + ["--id", "a b"],
    "add-id-newline": ADD + ["--id", "a\nb"],
    "add-id-duplicate": ADD + ["--id", "w"],
    "add-pattern-comment": ADD + ["--pattern", "#x"],
    "add-pattern-bang": ADD + ["--pattern", "!"],
    "add-pattern-reversed-range": ADD + ["--pattern", "[z-a]"],
    "add-ignore-reversed-range": ADD + ["--ignore", "[z-a]"],
    "add-same-tree-same-collection": ["add", "{tree}", "--collection", "c"],
    # list, show, remove, enable, disable
    "list-extra-argument": ["list", "x"],
    "show-no-id": ["show"],
    "show-empty-id": ["show", ""],
    "remove-empty-id": ["remove", ""],
    "remove-unknown-emit-deletes": ["remove", "nosuch", "--emit-deletes"],
    "enable-empty-id": ["enable", ""],
    "disable-empty-id": ["disable", ""],
    # reconcile
    "reconcile-empty-id": ["reconcile", ""],
    "reconcile-threads-zero": ["reconcile", "--threads", "0"],
    "reconcile-threads-257": ["reconcile", "--threads", "257"],
    "reconcile-wait-word": ["reconcile", "--wait", "long"],
    "reconcile-path-empty": ["reconcile", "--path", ""],
    "reconcile-path-missing": ["reconcile", "--path", "{missing}"],
    "reconcile-path-and-unknown-id": ["reconcile", "nosuch", "--path", "{tree}"],
    # status, metrics, run
    "status-unknown-option": ["status", "--verbose-json"],
    "metrics-textfile-missing-dir": ["metrics", "--textfile", "{missing}/x.prom"],
    "metrics-textfile-is-a-dir": ["metrics", "--textfile", "{dir}"],
    **{f"run-jobs-{name}": ["run", "--once", "--jobs", value] for name, value in (
        ("zero", "0"), ("negative", "-1"), ("word", "x"))},
    **{f"run-metrics-addr-{name}": ["run", "--once", "--metrics-addr", value]
       for name, value in (("garbage", "garbage"), ("port-zero", ":0"),
                           ("port-high", "127.0.0.1:99999"), ("port-word", "127.0.0.1:http"),
                           ("colons", "1:2:3:x"), ("bad-host", "no such host:9464"))},
    # queue
    "queue-no-action": ["queue"],
    "queue-unknown-action": ["queue", "steal"],
    "queue-list-limit-negative": ["queue", "list", "--limit", "-1"],
    "queue-list-limit-word": ["queue", "list", "--limit", "all"],
    "queue-list-status": ["queue", "list", "--status", "stuck"],
    "queue-claim-no-n": ["queue", "claim"],
    "queue-claim-zero": ["queue", "claim", "0"],
    "queue-claim-negative": ["queue", "claim", "-1"],
    "queue-claim-float": ["queue", "claim", "1.5"],
    "queue-claim-lease-zero": ["queue", "claim", "1", "--lease", "0"],
    "queue-claim-lease-negative": ["queue", "claim", "1", "--lease", "-5"],
    "queue-claim-lease-nan": ["queue", "claim", "1", "--lease", "nan"],
    "queue-claim-lease-inf": ["queue", "claim", "1", "--lease", "inf"],
    "queue-complete-no-id": ["queue", "complete"],
    "queue-fail-no-error": ["queue", "fail", "x"],
    "queue-fail-max-retries-zero": ["queue", "fail", "x", "--error", "e", "--max-retries", "0"],
    "queue-fail-max-retries-word": ["queue", "fail", "x", "--error", "e", "--max-retries", "x"],
    "queue-retry-ids-and-all": ["queue", "retry", "x", "--all"],
    "queue-retry-unknown": ["queue", "retry", "nosuch"],
    "queue-purge-no-status": ["queue", "purge"],
    "queue-purge-pending": ["queue", "purge", "--status", "pending"],
    # hook
    "hook-no-action": ["hook"],
    "hook-unknown-action": ["hook", "reinstall"],
    "hook-install-missing": ["hook", "install", "{missing}"],
    "hook-install-file": ["hook", "install", "{file}"],
    "hook-install-not-a-repo": ["hook", "install", "{dir}"],
    "hook-uninstall-not-a-repo": ["hook", "uninstall", "{dir}"],
    # global
    "no-command": [],
    "db-directory": ["--db", "{dir}", "list"],
    "db-text-file": ["--db", "{file}", "list"],
    "db-dev-null": ["--db", "/dev/null", "list"],
    "db-below-a-file": ["--db", "{file}/wq.db", "list"],
    "config-missing": ["--config", "{missing}", "list"],
    "config-directory": ["--config", "{dir}", "list"],
    "config-binary": ["--config", "{binary}", "list"],
}


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_malformed_arguments_are_usage_errors(capsys, world, case):
    """Every command refuses malformed arguments with exit 2 and one line on stderr, and
    leaves the database as it was."""
    before = dump_db(world.db)
    rc, out, err = run(capsys, *world.args(BAD_ARGS[case]))
    refused(rc, out, err)
    assert dump_db(world.db) == before


@pytest.mark.scanner_free
@pytest.mark.parametrize("option", ["--db", "--textfile", "--metrics-addr"])
def test_an_explicit_empty_string_is_not_silently_ignored(capsys, world, option):
    """`--db ''` (say `--db "$UNSET"`), `metrics --textfile ''` and `run --metrics-addr ''`
    name nothing: they are refused (exit 2), not treated as absent, which would write to
    the default database, print to stdout, or run without the metrics server."""
    argv = {"--db": ["--db", "", "list"],
            "--textfile": ["--db", str(world.db), "metrics", "--textfile", ""],
            "--metrics-addr": ["--db", str(world.db), "run", "--once", "--metrics-addr", ""]}
    before = dump_db(world.db)
    rc, out, err = run(capsys, *argv[option])
    refused(rc, out, err)
    assert dump_db(world.db) == before
    assert not (world.tmp / "xdg").exists()


@pytest.mark.scanner_free
def test_fifo_as_database_or_configuration_does_not_hang(tmp_path):
    """A FIFO given as the database or as the configuration (nobody writes to it) is
    refused at once with one line, instead of blocking forever in open()."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    procs = {where: subprocess.Popen([sys.executable, "-P", "-m", "wqscan", *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for where, argv in (("--db", ["--db", str(fifo), "list"]),
                                 ("--config", ["--db", str(tmp_path / "wq.db"), "--config",
                                               str(fifo), "list"]))}
    deadline = time.monotonic() + 5
    hung = []
    for where, p in procs.items():
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            hung.append(where)
            continue
        refused(p.returncode, out.decode(), err.decode())
    assert hung == [], f"wqscan {' and '.join(hung)} FIFO blocked for more than 5 s"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# -- 2. numbers at the edge: refused, or accepted without breaking anything later ----------

EXTREME = {
    "interval-inf": ["--interval", "inf"],
    "interval-1e308": ["--interval", "1e308"],
    "interval-tiny": ["--interval", "1e-300"],
    "settle-inf": ["--settle", "inf"],
    "settle-1e308": ["--settle", "1e308"],
    "timeout-inf": ["--timeout", "inf"],
    "timeout-1e308": ["--timeout", "1e308"],
    "max-file-size-huge": ["--max-file-size", "9" * 30],
    "max-depth-huge": ["--max-depth", "9" * 30],
    "metadata-nan": ["--metadata", '{"a": NaN, "b": Infinity, "c": -Infinity}'],
    "metadata-huge-int": ["--metadata", '{"a": ' + "9" * 40 + "}"],
}


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", EXTREME)
def test_extreme_values_refused_or_harmless(capsys, any_world, case):
    """An extreme setting is either refused at `add` (exit 2, one line, nothing changed) or
    every later command still works: reconcile scans, status/show/list/queue list print
    standard JSON, run --once and metrics succeed, and every stored metadata is valid JSON
    for the database's own json functions (SQLite's json_valid, PostgreSQL's jsonb)."""
    world = any_world
    db = world.db_argv
    before = world.dump()
    rc, out, err = run(capsys, *db, "add", str(world.other), "--collection", "x", "--id",
                       "edge", "--settle", "0", *EXTREME[case])
    handled(rc, err)
    if rc != 0:
        refused(rc, out, err)
        assert world.dump() == before
        return
    rc, out, err = run(capsys, *db, "reconcile", "edge", "--json")
    assert rc == 0, err
    assert all(w["ok"] for w in strict_json(out)["watches"]), out
    for argv in (["status", "--json"], ["show", "edge", "--json"], ["list", "--json"],
                 ["queue", "list", "--json"]):
        rc, out, err = run(capsys, *db, *argv)
        assert rc == 0, (argv, err)
        strict_json(out)
    for argv in (["status"], ["show", "edge"], ["list"], ["metrics"], ["run", "--once"]):
        rc, out, err = run(capsys, *db, *argv)
        assert rc == 0, (argv, err)
        assert UNHANDLED not in err
    if world.database and world.database.kind == "pg":
        assert _pg_invalid_json(world.database) == []
        return
    bad = read_rows(world.db, "SELECT count(*) FROM ingestion_queue WHERE NOT json_valid("
                    "metadata) OR json_extract(metadata, '$.watch_id') IS NULL")[0][0]
    bad += read_rows(world.db, "SELECT count(*) FROM watch_folders WHERE metadata IS NOT NULL "
                     "AND NOT json_valid(metadata)")[0][0]
    assert bad == 0


def _pg_invalid_json(database: Db) -> list[str]:
    """The stored metadata (queue rows: with a watch_id; watches) that PostgreSQL's own
    JSON parser refuses, read on a connection of its own."""
    import psycopg
    from psycopg import sql

    bad = []
    with psycopg.connect(database.target.db, autocommit=True) as conn:
        schema = sql.Identifier(database.target.pg_schema)
        for table, key in (("ingestion_queue", True), ("watch_folders", False)):
            for (text,) in conn.execute(sql.SQL("SELECT metadata FROM {}.{}").format(
                    schema, sql.Identifier(table))).fetchall():
                if text is None and not key:
                    continue
                try:
                    (watch_id,) = conn.execute("SELECT %s::jsonb ->> 'watch_id'",
                                               (text,)).fetchone()
                except psycopg.Error as e:
                    bad.append(f"{table}: {text!r}: {e}")
                    continue
                if key and watch_id is None:
                    bad.append(f"{table}: no watch_id in {text!r}")
    return bad


HUGE = "9" * 30


@pytest.mark.scanner_free
@pytest.mark.parametrize("argv", [["queue", "list", "--limit", HUGE], ["queue", "claim", HUGE],
                                  ["queue", "claim", "1", "--lease", "1e400"],
                                  ["reconcile", "--wait", "1e400", "--threads", HUGE],
                                  ["run", "--once", "--jobs", HUGE]],
                         ids=["list-limit", "claim-n", "claim-lease", "reconcile-threads",
                              "run-jobs"])
def test_huge_numbers_are_handled(capsys, any_world, argv):
    """Numbers beyond 64 bits are refused with a usage error or served as a large limit,
    never an unhandled OverflowError (nor a database's integer out of range)."""
    world = any_world
    before = world.dump()
    rc, out, err = run(capsys, *world.db_argv, *argv)
    handled(rc, err)
    if rc != 0:
        refused(rc, out, err)
        assert world.dump() == before


# -- 3. non-UTF-8 bytes and 100k-character strings ------------------------------------------

BAD = b"bad\xff\xfe"  # not UTF-8


def _non_utf8_cases(w: World) -> dict[str, tuple[list, tuple[int, ...]]]:
    """argv (bytes where it matters) and the exit codes that are fine for each case."""
    odd_dir = os.path.join(os.fsencode(w.tree), b"dir\xff")
    os.makedirs(odd_dir, exist_ok=True)
    odd_root = os.fsencode(w.tmp) + b"/root\xfe"
    os.makedirs(odd_root, exist_ok=True)
    tree, other, tmp = os.fsencode(w.tree), os.fsencode(w.other), os.fsencode(w.tmp)
    return {
        "show-id": (["show", BAD], (2,)),
        "remove-id": (["remove", BAD], (2,)),
        "enable-id": (["enable", BAD], (2,)),
        "disable-id": (["disable", BAD], (2,)),
        "add-root": (["add", odd_root, "--collection", "d"], (0, 2)),
        "add-collection": (["add", other, "--collection", BAD], (0, 2)),
        "add-id": (["add", other, "--collection", "d", "--id", BAD], (0, 2)),
        "add-pattern": (["add", other, "--collection", "d", "--pattern", BAD], (0, 2)),
        "add-ignore": (["add", other, "--collection", "d", "--ignore", BAD], (0, 2)),
        "add-priority": (["add", other, "--collection", "d", "--priority", BAD + b"=3"], (0, 2)),
        "add-metadata": (["add", other, "--collection", "d", "--metadata",
                          b'{"a": "' + BAD + b'"}'], (0, 2)),
        "reconcile-id": (["reconcile", BAD], (2,)),
        "reconcile-path-inside": (["reconcile", "--path", odd_dir], (0, 2)),
        "reconcile-path-missing": (["reconcile", "--path", tree + b"/" + BAD], (0, 2)),
        "queue-complete": (["queue", "complete", BAD], (1, 2)),
        "queue-fail": (["queue", "fail", BAD, "--error", BAD], (1, 2)),
        "queue-claim-owner": (["queue", "claim", "1", "--owner", BAD], (0, 2)),
        "queue-claim-collection": (["queue", "claim", "1", "--collection", BAD], (0, 2)),
        "queue-claim-tenant": (["queue", "claim", "1", "--tenant", BAD], (0, 2)),
        "db": (["--db", tmp + b"/" + BAD, "list"], (0, 2)),
        "config": ([*map(os.fsencode, w.db_argv), "--config", tmp + b"/" + BAD, "list"], (2,)),
        "metrics-textfile": (["metrics", "--textfile", tmp + b"/" + BAD + b".prom"], (0, 2)),
        "hook-install": (["hook", "install", odd_root], (2,)),
    }


NON_UTF8 = ["show-id", "remove-id", "enable-id", "disable-id", "add-root", "add-collection",
            "add-id", "add-pattern", "add-ignore", "add-priority", "add-metadata",
            "reconcile-id", "reconcile-path-inside", "reconcile-path-missing",
            "queue-complete", "queue-fail", "queue-claim-owner", "queue-claim-collection",
            "queue-claim-tenant", "db", "config", "metrics-textfile", "hook-install"]


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", NON_UTF8)
def test_non_utf8_arguments_are_handled(any_world, case):
    """Bytes that are not UTF-8 in any argument (passed as real bytes to a subprocess)
    are accepted or refused with one line (exit 2; 1 for a queue row that is not there),
    never an unhandled UnicodeEncodeError; refused input changes nothing."""
    world = any_world
    argv, allowed = _non_utf8_cases(world)[case]
    before = world.dump()
    if argv[0] != "--db":
        argv = [*world.db_argv, *argv]
    done = wqscan(None, *argv, timeout=60, text=False)
    err = done.stderr.decode("utf-8", "backslashreplace")
    handled(done.returncode, err, allowed)
    assert "UnicodeEncodeError" not in err and "surrogates not allowed" not in err, err
    if done.returncode != 0:
        assert world.dump() == before


#: 100k characters that do not compress (a database may store a long repeated string in
#: far fewer bytes, and so accept it where it would refuse an arbitrary one).
RANDOM_LONG = "".join(random.Random(100).choices("abcdefghijklmnopqrstuvwxyz0123456789",
                                                 k=LONG))


def _failures(report: str) -> list[str]:
    """The reasons of the watches a `reconcile --json` report says failed (or the report)."""
    try:
        return [w["reason"] for w in json.loads(report)["watches"] if not w["ok"]]
    except (ValueError, KeyError, TypeError):
        return [report[-2000:]]


def _long_cases(w: World) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    x = "x" * LONG
    return {
        "show-id": (["show", x], (2,)),
        "remove-id": (["remove", x], (2,)),
        "add-path": (["add", str(w.tmp / x), "--collection", "d"], (2,)),
        "add-collection": (["add", str(w.other), "--collection", x], (0, 2)),
        "add-collection-random": (["add", str(w.other), "--collection", RANDOM_LONG], (0, 2)),
        "add-id": (["add", str(w.other), "--collection", "d", "--id", x], (0, 2)),
        "add-pattern": (["add", str(w.other), "--collection", "d", "--pattern", x], (0, 2)),
        "add-priority-glob": (["add", str(w.other), "--collection", "d", "--priority",
                               x + "=3"], (0, 2)),
        "add-metadata-value": (["add", str(w.other), "--collection", "d", "--metadata",
                                json.dumps({"a": x})], (0, 2)),
        "add-metadata-random": (["add", str(w.other), "--collection", "d", "--metadata",
                                 json.dumps({"a": RANDOM_LONG})], (0, 2)),
        "add-metadata-deep": (["add", str(w.other), "--collection", "d", "--metadata",
                               '{"a":' * (LONG // 5) + "1" + "}" * (LONG // 5)], (0, 2)),
        "add-metadata-deep-list": (["add", str(w.other), "--collection", "d", "--metadata",
                                    '{"a": ' + "[" * LONG + "]" * LONG + "}"], (0, 2)),
        "reconcile-id": (["reconcile", x], (2,)),
        "reconcile-path": (["reconcile", "--path", str(w.tree / x)], (0, 2)),
        "queue-complete": (["queue", "complete", x], (1, 2)),
        "queue-fail": (["queue", "fail", x, "--error", x], (1, 2)),
        "queue-claim-filters": (["queue", "claim", "1", "--owner", x, "--collection", x,
                                 "--tenant", x], (0, 2)),
        "hook-install": (["hook", "install", str(w.tmp / x)], (2,)),
        "metrics-textfile": (["metrics", "--textfile", str(w.tmp / x)], (2,)),
        "db": (["--db", str(w.tmp / x), "list"], (2,)),
        "config": (["--config", str(w.tmp / x), "list"], (2,)),
    }


LONG_CASES = ["show-id", "remove-id", "add-path", "add-collection", "add-collection-random",
              "add-id", "add-pattern", "add-priority-glob", "add-metadata-value",
              "add-metadata-random", "add-metadata-deep",
              "add-metadata-deep-list", "reconcile-id", "reconcile-path", "queue-complete",
              "queue-fail", "queue-claim-filters", "hook-install", "metrics-textfile", "db",
              "config"]


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", LONG_CASES)
def test_100k_character_arguments_are_handled(capsys, any_world, case):
    """A 100,000-character argument anywhere is accepted or refused with one line; a
    refusal changes nothing; an accepted watch can still be listed and scanned."""
    world = any_world
    argv, allowed = _long_cases(world)[case]
    before = world.dump()
    rc, out, err = run(capsys, *(argv if argv[0] == "--db" else [*world.db_argv, *argv]))
    handled(rc, err, allowed)
    if rc != 0:
        assert world.dump() == before
    elif argv[0] == "add":
        rc, out, err = run(capsys, *world.db_argv, "reconcile", "--json")
        assert rc == 0, (_failures(out), err[:600])
        rc, out, err = run(capsys, *world.db_argv, "list", "--json")
        assert rc == 0 and len(strict_json(out)) == 2


@pytest.mark.scanner_free
@pytest.mark.parametrize("pattern", ["[" * LONG, "**/" * (LONG // 3)],
                         ids=["brackets", "globstars"])
def test_100k_character_pattern_does_not_hang(tmp_path, pattern):
    """`add --pattern` with 100,000 characters of brackets or `**/` is checked (and, if
    accepted, a small tree scanned) within seconds (6 s each), not minutes."""
    tree = tmp_path / "tree"
    write(tree / ("d" * 50) / ("e" * 50) / "f.txt", "f")
    db = str(tmp_path / "wq.db")
    try:
        done = wqscan(db, "add", str(tree), "--collection", "c", "--settle", "0",
                   "--pattern", pattern, timeout=6, text=False)
        handled(done.returncode, done.stderr.decode(errors="replace"))
        if done.returncode == 0:
            done = wqscan(db, "reconcile", timeout=6, text=False)
            handled(done.returncode, done.stderr.decode(errors="replace"), (0,))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(map(str, e.cmd[3:6]))} ... ran for more than {e.timeout} s")


#: Strings that read as SQL: quotes, comments, `;`, statements, and the placeholders of
#: either engine (`?` and `?1` of SQLite, `%s` and `%(name)s` of psycopg, `$1`, `:name`).
SQLISH = ["c'); DROP TABLE ingestion_queue; --", "x' OR '1'='1", "%s %(x)s %% ? ?1 :name $1",
          'q"uote\\ \'\' /* c */ -- d', "Robert'); DELETE FROM wq_snapshot WHERE ('a'='a"]


@pytest.mark.scanner_free
def test_sql_syntax_in_collections_metadata_and_names(capsys, database, tmp_path):
    """Collection names, metadata (keys and values) and file names that read as SQL are
    stored and read back verbatim on either store: each file is queued once under its
    exact collection, path and metadata; `queue claim --collection C` takes exactly the
    row of C; completing them empties the queue; and every table is still there."""
    db = database.argv
    expected = {}
    for i, text in enumerate(SQLISH):
        tree = tmp_path / f"t{i}"
        path = write(tree / (text.replace("/", "_") + ".txt"), text)
        rc, out, err = run(capsys, *db, "-q", "add", str(tree), "--collection", text,
                           "--id", f"t{i}", "--settle", "0",
                           "--metadata", json.dumps({"note": text, text: i}))
        assert rc == 0, err
        expected[text] = str(path)
    tables = [t[0] for t in dump(database) if isinstance(t, tuple)]
    assert "ingestion_queue" in tables and "wq_snapshot" in tables
    rc, out, err = run(capsys, *db, "reconcile", "--json")
    assert rc == 0, (_failures(out), err)
    rc, out, err = run(capsys, *db, "queue", "list", "--json", "--limit", "0")
    assert rc == 0, err
    rows = strict_json(out)
    assert {r["collection_name"]: r["file_absolute_path"] for r in rows} == expected
    assert len(rows) == len(SQLISH)
    for r in rows:
        text = r["collection_name"]
        assert r["metadata"]["note"] == text and r["metadata"][text] == SQLISH.index(text)
    for text in SQLISH:
        rc, out, err = run(capsys, *db, "queue", "claim", "5", "--collection", text, "--json")
        assert rc == 0, err
        (row,) = strict_json(out)
        assert (row["collection_name"], row["file_absolute_path"]) == (text, expected[text])
        rc, out, err = run(capsys, *db, "queue", "complete", row["queue_id"])
        assert rc == 0, err
    rc, out, err = run(capsys, *db, "queue", "list", "--json", "--limit", "0")
    assert rc == 0 and strict_json(out) == []
    assert [t[0] for t in dump(database) if isinstance(t, tuple)] == tables


def test_a_priority_rule_another_tool_stored_that_matches_nothing(capsys, database, tmp_path):
    """`add` and `set` refuse such a rule; one written into the watch table by another tool
    stops the scan that applies it: one line naming the watch, the setting and the rule,
    exit 2, and nothing queued."""
    db = database.argv
    tree = tmp_path / "t"
    write(tree / "a.md", "a")
    os.utime(tree / "a.md", ns=(OLD_NS, OLD_NS))
    rc, out, err = run(capsys, *db, "-q", "add", str(tree), "--collection", "c")
    assert rc == 0, err
    with database.open() as store:
        store.conn.execute("UPDATE watch_folders SET priority_rules = ?",
                           (json.dumps([["#x", 7]]),))
    line = refused(*run(capsys, *db, "reconcile"))
    assert line == "wqscan: error: t: bad priority glob '#x': empty, a comment, or it can " \
        "match nothing\n"
    assert queue(database) == []


# -- 4. every key of the YAML file with the wrong type --------------------------------------

#: key -> wrong values (YAML text); the cases test_config.py already has are left out.
WRONG = {
    "id": ["3", "[w]", "{a: 1}", "null", "true", '""'],
    "path": ["3", "[/tmp]", "{a: 1}", "null", "true", '""'],
    "collection": ["3", "[c]", "{a: 1}", "null", "false"],
    "patterns": ["{a: 1}", "[[a]]", "null", "[null]", "true", "[{a: 1}]"],
    "ignore": ['"drafts/"', "{a: 1}", "[1]", "null", "[[a]]"],
    "default_ignores": ['"no"', "1", "[true]", "null", "{a: 1}"],
    "recursive": ['"yes"', "0", "[true]", "null"],
    "max_depth": ['"3"', "2.5", "true", "[1]", "null", "-5", "99999999999999999999999999"],
    "interval": ["true", "[1]", "null", "-5", ".nan", "-.inf", "{a: 1}"],
    "settle": ['"soon"', "true", "[1]", "null", "-5", ".nan", "-.inf"],
    "priority": ['"x"', '{"*.md": 2.5}', '{"*.md": true}', '{"*.md": null}', '{"*.md": [1]}',
                 '{"": 3}', "null", "3"],
    "max_file_size": ['"1XB"', '"lots"', "2.5", "true", "[1]", "null", "-5",
                      "99999999999999999999999999"],
    "gitignore": ['"false"', "0", "[false]", "null"],
    "follow_symlinks": ['"true"', "1", "[true]", "null"],
    "check_stat": ["3", "[full]", "null", '""', "true"],
    "enabled": ["1", "[true]", "null", "{a: 1}"],
    "metadata": ["3", "true", "{a: 2024-01-01}", "{a: !!binary aGVsbG8=}",
                 "{a: [1, {b: 2001-12-14t21:59:43.10-05:00}]}"],
    "threads": ['"4"', "2.5", "true", "[1]", "null", "0", "257", "-1",
                "99999999999999999999999999"],
    "timeout": ['"600"', "true", "[1]", "null", "0", "-5", ".nan", "{a: 1}"],
    "auto_ingest": ['"yes"', "1", "[true]", "null"],
}
TOP_WRONG = {"database": ["3", "{a: 1}", "true", "null"],
             "watches": ['"docs"', "3", "[3]", "[[1]]", "[null]", "true"]}
YAML_CASES = [(k, v) for k, vs in WRONG.items() for v in vs] + \
    [(k, v) for k, vs in TOP_WRONG.items() for v in vs] + \
    [("Interval", "60"), ("PATH", "/tmp"), ("tags", "[a]"), ("path", "twice")]


def _yaml(tree: Path, key: str, value: str) -> tuple[str, int]:
    """A file whose one watch has `key: value` (or a top-level key); the line it is on."""
    if key in TOP_WRONG:
        return f"{key}: {value}\n", 1
    lines = ["watches:", "  - id: docs", f"    path: {tree}", "    collection: c"]
    where = {"id": 1, "path": 2, "collection": 3}
    if value == "twice":  # the key once more: YAML wants keys unique, PyYAML takes the last
        return "\n".join(lines + [f"    {key}: /tmp"]) + "\n", 5
    if key in where:
        lines[where[key]] = f"{'  - ' if key == 'id' else '    '}{key}: {value}"
        return "\n".join(lines) + "\n", where[key] + 1
    return "\n".join(lines + [f"    {key}: {value}"]) + "\n", 5


@pytest.mark.scanner_free
@pytest.mark.parametrize("key, value", YAML_CASES, ids=[f"{k}={v}" for k, v in YAML_CASES])
def test_yaml_key_with_wrong_type(capsys, world, key, value):
    """Every key of the configuration, given a value of the wrong type, a negative or
    out-of-range number, an empty string or null (and unknown keys), is refused: exit 2,
    one line naming the file, the line and the key; the database is unchanged. So is a
    key given twice in one watch."""
    cfg = world.tmp / "wqscan.yml"
    text, line = _yaml(world.other, key, value)
    cfg.write_text(text)
    before = dump_db(world.db)
    rc, out, err = run(capsys, "--db", str(world.db), "--config", str(cfg), "list")
    msg = refused(rc, out, err)
    assert f"{cfg}:{line}:" in msg, (text, msg)
    assert f"'{key}'" in msg or key == "watches" and "watch" in msg, (text, msg)
    assert dump_db(world.db) == before


YAML_EDGES = {
    "interval-inf": "interval: .inf", "interval-huge": "interval: 1.0e+308",
    "settle-inf": "settle: .inf", "timeout-inf": "timeout: .inf",
    "metadata-nan": "metadata: {a: .nan, b: .inf, c: -.inf}",
    "path-nul": 'path: "/tmp\\0x"', "metadata-nul-key": 'metadata: {"a\\0b": 1}',
    "metadata-deep": "metadata: {a: " + "[" * 500 + "]" * 500 + "}",
}


@pytest.mark.scanner_free
@pytest.mark.parametrize("case", YAML_EDGES)
def test_yaml_edge_values_refused_or_harmless(capsys, world, case):
    """Infinite and huge numbers, NaN in metadata, NUL bytes and 500 levels of nesting
    in the configuration: refused with one line naming the file (exit 2, database
    unchanged), or accepted with every later command working and all stored JSON valid."""
    cfg = world.tmp / "wqscan.yml"
    lines = ["watches:", "  - id: edge", "    collection: x"]
    if not case.startswith("settle"):
        lines.append("    settle: 0")
    if case != "path-nul":
        lines.append(f"    path: {world.other}")
    cfg.write_text("\n".join(lines + ["    " + YAML_EDGES[case]]) + "\n")
    db = ["--db", str(world.db), "--config", str(cfg)]
    before = dump_db(world.db)
    rc, out, err = run(capsys, *db, "list", "--json")
    handled(rc, err)
    if rc != 0:
        assert str(cfg) in refused(rc, out, err)
        assert dump_db(world.db) == before
        return
    strict_json(out)
    for argv in (["reconcile", "edge", "--json"], ["status", "--json"], ["show", "edge", "--json"],
                 ["queue", "list", "--json"]):
        rc, out, err = run(capsys, *db, *argv)
        assert rc == 0, (argv, err)
        strict_json(out)
    for argv in (["status"], ["metrics"], ["run", "--once"]):
        rc, out, err = run(capsys, *db, *argv)
        assert rc == 0, (argv, err)
    assert read_rows(world.db, "SELECT count(*) FROM ingestion_queue "
                               "WHERE NOT json_valid(metadata)")[0][0] == 0


# -- 5. hostile trees, both twins ------------------------------------------------------------

ODD_NAMES = ["new\nline.txt", "cr\rreturn.txt", "tab\there.txt", "esc\x1b[31mred", "del\x7f",
             "bell\x07", "-dash", "--help", " lead", "trail ", "sp ace.txt", "back\\slash",
             "quote'\"", "$(touch PWNED)", "`touch PWNED`", "semi;colon", "star*", "q?", "[br]",
             "!bang", "#hash", "~tilde", "caf\u00e9.txt", "cafe\u0301.txt", "rtl\u202etxt.exe",
             "zw\u200bj", "\ufeffbom", "emoji\U0001F600", "percent%20s%n"]


def test_control_characters_and_shell_syntax_in_names(twin, dbstore, root):
    """Names with newlines, CR, tabs, escape sequences, shell syntax, leading dashes, glob
    characters, both Unicode normal forms of one word and invisible characters are all
    queued at their exact paths (on either store); a rescan is quiet."""
    for n in ODD_NAMES:
        write(root / n, n)
    write(root / "dir\nwith\tcontrol" / "inner.txt", "inner")
    wid = watch(dbstore, root, default_ignores=False)
    r = scan(dbstore)
    assert r.ok and r.totals.errors == 0, r.warnings
    expected = set(ODD_NAMES) | {"dir\nwith\tcontrol/inner.txt"}
    rows = queue(dbstore)
    assert {row["metadata"]["relative_path"] for row in rows} == expected
    assert {row["file_absolute_path"] for row in rows} == {f"{root}/{n}" for n in expected}
    assert dbstore.snapshot_files(wid) == len(expected)
    drain(dbstore)
    r = scan(dbstore)
    assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)


def _outside_links(tmp_path: Path, root: Path) -> list[str]:
    outside = tmp_path / "outside"
    outside.mkdir()
    names = ["evil\nwqscan: error: forged line", "esc\x1b]0;owned\x07\x1b[31mred",
             "cr\rwqscan: all good"]
    for n in names:
        os.symlink(outside, root / n)
    return names


def test_warnings_about_hostile_names_stay_one_line_each(twin, tmp_path, root):
    """A warning that names an entry is one line on stderr: a name with a newline cannot
    forge another line, and escape sequences or carriage returns never reach the terminal
    raw."""
    write(root / "a.txt", "a")
    names = _outside_links(tmp_path, root)
    db = str(tmp_path / "wq.db")
    env = twin_env(twin)
    assert wqscan(db, "add", str(root), "--collection", "c", "--settle", "0",
               "--follow-symlinks", env=env, text=False).returncode == 0
    done = wqscan(db, "reconcile", env=env, text=False)
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode("utf-8", "backslashreplace")
    for ch in ("\x1b", "\x07", "\r"):
        assert ch not in err, err
    lines = err.splitlines()
    assert len(lines) == len(names), lines
    assert all(line.startswith("wqscan: warning: ") for line in lines), lines


def test_text_forms_are_one_line_per_entry(twin, database, root):
    """The line-oriented outputs stay parseable when names hold newlines and tabs:
    `reconcile --dry-run` prints one line per operation (plus the summary), and
    `queue claim N` prints one ID<TAB>OPERATION<TAB>PATH line per row it claimed (the
    names stored and read back from either store)."""
    names = ["new\nline.txt", "tab\there.txt", "plain.txt"]
    for n in names:
        write(root / n, n)
    env = twin_env(twin)
    assert wqscan(database, "add", str(root), "--collection", "c", "--settle", "0",
               env=env, text=False).returncode == 0
    done = wqscan(database, "reconcile", "--dry-run", env=env, text=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == len(names) + 1, lines
    assert all(line.startswith("ingest ") for line in lines[:-1]), lines
    assert wqscan(database, "reconcile", "-q", env=env, text=False).returncode == 0
    done = wqscan(database, "queue", "claim", "10", env=env, text=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == len(names), lines
    assert all(len(line.split("\t")) == 3 for line in lines), lines
    claimed = json.loads(wqscan(database, "queue", "list", "--json", "--status",
                             "in_progress", text=False).stdout)
    assert {line.split("\t")[0] for line in lines} == {r["queue_id"] for r in claimed}


def test_text_output_tells_every_name_apart(twin, tmp_path, root):
    """`a<newline>b.txt` and `a\\nb.txt` (a real backslash) print differently everywhere
    text output escapes: `reconcile --dry-run`, `queue claim`'s text form, `queue list`;
    a name that is not UTF-8 is named in its warning with its bytes as \\xNN, the style of
    the rest."""
    newline, backslash = "a\nb.txt", "a\\nb.txt"
    for n in (newline, backslash):
        write(root / n, n)
    os.close(os.open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
    db = str(tmp_path / "wq.db")
    env = twin_env(twin)
    assert wqscan(db, "add", str(root), "--collection", "c", "--settle", "0",
               env=env, text=False).returncode == 0
    real = os.path.realpath(root)
    shown = {newline: f"{real}/a\\nb.txt", backslash: f"{real}/a\\\\nb.txt"}
    done = wqscan(db, "reconcile", "--dry-run", env=env, text=False)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.decode().splitlines()[:-1]) == sorted(
        f"ingest  {p}" for p in shown.values())
    assert done.stderr.decode() == \
        "wqscan: warning: tree: caf\\xe9.txt: skipped: the name is not valid UTF-8\n"
    assert wqscan(db, "reconcile", "-q", env=env, text=False).returncode == 0
    listed = wqscan(db, "queue", "list", env=env, text=False).stdout.decode().splitlines()
    assert sorted(line.split()[-2] for line in listed[1:]) == sorted(shown.values())
    done = wqscan(db, "queue", "claim", "10", env=env, text=False)
    assert sorted(line.split("\t")[2] for line in done.stdout.decode().splitlines()) == \
        sorted(shown.values())


def test_255_byte_names(twin, dbstore, root):
    """Names of exactly 255 bytes (ASCII, 2-, 3- and 4-byte UTF-8) as files and as nested
    directories are queued whole (on either store); one byte more cannot even be created."""
    names = ["a" * 255, "\u00e9" * 127 + "a", "\u20ac" * 85, "\U0001F600" * 63 + "abc",
             "x" + "\u00e9\u20ac\U0001F600" * 28 + "y" * 2]
    for n in names:
        assert len(n.encode()) == 255, n
        write(root / n, n)
    deep = Path(*[c * 255 for c in "def"])
    write(root / deep / ("g" * 255), "deep")
    with pytest.raises(OSError):
        (root / ("h" * 256)).write_text("too long")
    wid = watch(dbstore, root)
    r = scan(dbstore)
    assert r.ok and r.totals.errors == 0, r.warnings
    expected = set(names) | {f"{deep}/{'g' * 255}"}
    assert {row["metadata"]["relative_path"] for row in queue(dbstore)} == expected
    assert dbstore.snapshot_files(wid) == len(expected)
    drain(dbstore)
    r = scan(dbstore)
    assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)


def _mkfile_at(fd: int, name: str, data: bytes = b"x") -> None:
    f = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    try:
        os.write(f, data)
    finally:
        os.close(f)
    os.utime(name, ns=(OLD_NS, OLD_NS), dir_fd=fd)


def _rmtree_any_depth(path: Path) -> None:
    """Remove a tree however deep (shutil.rmtree recurses once per level), by descriptors."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    stack = [(os.open(path, flags), -1, "")]
    while stack:
        fd, parent, name = stack[-1]
        sub = None
        with os.scandir(fd) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    sub = e.name
                    break
                os.unlink(e.name, dir_fd=fd)
        if sub is not None:
            stack.append((os.open(sub, flags, dir_fd=fd), fd, sub))
            continue
        stack.pop()
        os.close(fd)
        if parent >= 0:
            os.rmdir(name, dir_fd=parent)
    os.rmdir(path)


@pytest.fixture
def deep_root(tmp_path):
    d = tmp_path / "deep"
    d.mkdir()
    yield d
    if d.exists():
        _rmtree_any_depth(d)


def test_directory_depth_2000(twin, dbstore, deep_root):
    """2,000 nested directories (built by descriptor): files at depth 1, 1,000 and 2,000 are
    queued, the walk neither recurses itself to death nor slows down per level, a rescan is
    quiet, and a --path scan 1,000 levels down sees its subtree (on either store)."""
    fd = os.open(deep_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(1, 2001):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if i in (1, 1000, 2000):
                _mkfile_at(fd, f"f{i}")
    finally:
        os.close(fd)
    wid = watch(dbstore, deep_root)
    expected = {"/".join(["d"] * i) + f"/f{i}" for i in (1, 1000, 2000)}
    r = scan(dbstore)
    assert r.ok and r.totals.errors == 0, r.warnings[:3]
    assert r.totals.dirs == 2001
    assert {row["metadata"]["relative_path"] for row in queue(dbstore)} == expected
    drain(dbstore)
    r = scan(dbstore)
    assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)
    mid = os.path.join(str(deep_root), *["d"] * 1000)
    os.unlink(os.path.join(mid, "f1000"))
    r = scan(dbstore, path=mid)
    assert r.ok, r.reason
    assert {row["metadata"]["relative_path"]: row["operation"] for row in queue(dbstore)} == \
        {"/".join(["d"] * 1000) + "/f1000": "delete"}
    assert dbstore.snapshot_files(wid) == 2


@pytest.fixture(scope="module")
def wide_tree(tmp_path_factory):
    """One directory of 100,000 empty files, made once for both twins; on tmpfs when there
    is one, where making them takes a second instead of up to twenty on a busy disk."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        top = Path(tempfile.mkdtemp(prefix="wqscan-wide-", dir=shm))
    else:
        top = tmp_path_factory.mktemp("wide")
    d = top / "tree"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(100_000):
            os.close(os.open(f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    yield d
    shutil.rmtree(top)


def test_100k_files_in_one_directory(twin, tmp_path, wide_tree):
    """100,000 files in one directory: every one is queued once, the snapshot holds them,
    and a rescan finds nothing to do."""
    s = Store.open(str(tmp_path / "wide.db"))
    try:
        wid = watch(s, wide_tree)
        r = scan(s)
        assert r.ok, r.reason
        assert r.ingest == 100_000 and r.totals.files == 100_000
        n, distinct = s.conn.execute(
            "SELECT count(*), count(DISTINCT file_absolute_path) FROM ingestion_queue "
            "WHERE operation = 'ingest'").fetchall()[0]
        assert n == distinct == 100_000
        assert s.snapshot_files(wid) == 100_000
        r = scan(s)
        assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)
    finally:
        s.close()


@pytest.mark.parametrize("names", ["repeated", "random"])
def test_paths_longer_than_path_max(twin, dbstore, root, names):
    """25 levels of 200-byte directory names, each holding a file with a 253-byte name, so
    that paths pass PATH_MAX (4,096 bytes) on the way down. What the package does: every
    directory whose path below the root fits in PATH_MAX is listed and its files queued,
    even when the file's absolute path is longer than PATH_MAX; the first directory whose
    relative path is too long is reported (one warning per scan, naming it) and its
    subtree left as it was; the rescan queues nothing. On either store, with names of one
    repeated letter or of random ones (which a database cannot store in fewer bytes)."""
    rng = random.Random(25)

    def filler(c: str, n: int) -> str:
        return c * n if names == "repeated" else "".join(rng.choices(ALNUM, k=n))

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    rel, files, too_long = "", set(), None
    try:
        for i in range(25):
            name = f"{i:02d}" + filler("n", 198)
            rel = f"{rel}{name}/"
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            fname = f"f{i:02d}" + filler("L", 250)
            _mkfile_at(fd, fname)
            if len(rel.encode()) < 4096 and too_long is None:
                files.add(rel + fname)
            elif too_long is None:
                too_long = rel[:-1]
    finally:
        os.close(fd)
    assert too_long is not None
    assert max(len(f"{root}/{f}".encode()) for f in files) > 4096  # some queued paths are long
    wid = watch(dbstore, root)
    r = scan(dbstore)
    assert r.ok, r.reason
    assert {row["metadata"]["relative_path"] for row in queue(dbstore)} == files
    assert len(r.warnings) == 1 and r.warnings[0].startswith(too_long + ":"), \
        [w[-120:] for w in r.warnings]
    assert "too long" in r.warnings[0]
    drain(dbstore)
    r = scan(dbstore)
    assert r.ok and (r.ingest, r.update, r.delete) == (0, 0, 0)
    assert len(r.warnings) == 1
    assert dbstore.snapshot_files(wid) == len(files)


def _scan_cli(twin, root: Path, db: str, timeout: float) -> subprocess.CompletedProcess:
    env = twin_env(twin)
    done = wqscan(db, "add", str(root), "--collection", "c", "--settle", "0", env=env,
                  text=False)
    assert done.returncode == 0, done.stderr
    return wqscan(db, "reconcile", "--json", env=env, timeout=timeout, text=False)


def test_gitignore_glob_bombs_do_not_hang(twin, tmp_path, root):
    """A .gitignore in the tree with patterns that make a backtracking matcher explode
    (`*a*a*a*a*a*a*b` against a long name of a's, ten `**/` against a deep path) does not
    stall the scan: it finishes within 6 s and applies the rules (nothing matches)."""
    (root / ".gitignore").write_text("*a*a*a*a*a*a*a*a*b\n" + "**/" * 10 + "zz\n")
    long_a = "a" * 250
    write(root / long_a, "a")
    deep = "/".join(["d"] * 30)
    write(root / deep / "f.txt", "f")
    try:
        done = _scan_cli(twin, root, str(tmp_path / "wq.db"), timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("the scan ran for more than 6 s")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["watches"][0]
    assert report["ok"] and report["ingest"] == 3  # .gitignore, the long name, the deep file


def test_long_bracket_line_in_gitignore_does_not_hang(twin, tmp_path, root):
    """A .gitignore line of 10,000 `[` (an unterminated bracket expression, repeated) is
    parsed in linear time: the scan finishes within 6 s."""
    (root / ".gitignore").write_text("[" * 10_000 + "\n")
    write(root / "a.txt", "a")
    try:
        done = _scan_cli(twin, root, str(tmp_path / "wq.db"), timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("the scan ran for more than 6 s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["watches"][0]["ok"]
