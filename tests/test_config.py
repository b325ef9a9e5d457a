"""The YAML configuration (docs/usage.md, "YAML configuration": `--config`/$WQSCAN_CONFIG and
database precedence): watches created, updated and retired from the file; errors that name the
file, the line and the key (exit 2, database unchanged); a loader that constructs nothing;
`wqscan run` reloading the file on SIGHUP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.cli import child_env, one_line, run
from helpers.db import drain
from helpers.ondisk import dump_db, read_dict, read_rows
from helpers.trees import OLD_NS, write

from wqscan.model import DEFAULT_IGNORES

pytestmark = [pytest.mark.scanner_free, pytest.mark.usefixtures("no_ambient_config")]

PATIENCE = 30.0
POLL = 0.02


# -- helpers -------------------------------------------------------------------------------

def watch_row(db: Path, watch_id: str) -> dict | None:
    """A watch's watch_folders row; None when there is none (yet)."""
    return read_dict(db, "SELECT * FROM watch_folders WHERE watch_id = ?", (watch_id,))


def stats_row(db: Path, watch_id: str) -> dict | None:
    """A watch's wq_watch_stats row; None when there is none (yet)."""
    return read_dict(db, "SELECT * FROM wq_watch_stats WHERE watch_id = ?", (watch_id,))


def queued(db: Path) -> dict[str, tuple[str, int, dict]]:
    """{absolute path: (operation, priority, metadata)} of the pending rows."""
    return {p: (op, prio, json.loads(m)) for p, op, prio, m in read_rows(
        db, "SELECT file_absolute_path, operation, priority, metadata FROM ingestion_queue "
        "WHERE status = 'pending'")}


def example(tree: Path, database: Path | None = None) -> str:
    """docs/usage.md's example configuration, with its paths pointing into the test's directory."""
    db_line = f"database: {database}   # optional\n" if database is not None else ""
    return db_line + f"""watches:
  - id: docs
    path: {tree}
    collection: team-docs
    patterns: ["*.md", "*.pdf"]
    ignore: ["drafts/"]
    interval: 600
    settle: 5
    priority: {{"*.md": 7}}
    metadata: {{owner: docs-team}}
"""


@pytest.fixture
def tree(tmp_path) -> Path:
    """A docs tree: two in-scope files, one out of scope, one in an ignored directory."""
    t = tmp_path / "share" / "docs"
    write(t / "guide.md", "# guide")
    write(t / "manual.pdf", "%PDF")
    write(t / "notes.txt", "notes")
    write(t / "drafts" / "wip.md", "draft")
    return t


@pytest.fixture
def cfg(tmp_path) -> Path:
    return tmp_path / "wqscan.yml"


# -- watches from the file -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["option", "environment"])
def test_spec_example_creates_watch(capsys, monkeypatch, tmp_path, tree, cfg, how):
    """docs/usage.md's example configuration creates watch docs with every setting stored and
    obeyed."""
    db = tmp_path / "from-config.db"
    cfg.write_text(example(tree, db))
    if how == "option":
        argv = ["--config", str(cfg), "list", "--json"]
    else:
        monkeypatch.setenv("WQSCAN_CONFIG", str(cfg))
        argv = ["list", "--json"]
    assert run(capsys, *argv[:-2], "init")[0] == 0  # list creates no database
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    assert [w["watch_id"] for w in json.loads(out)] == ["docs"]
    row = watch_row(db, "docs")
    assert row["path"] == os.path.realpath(tree)
    assert row["collection"] == "team-docs"
    assert json.loads(row["patterns"]) == ["*.md", "*.pdf"]
    assert json.loads(row["ignore_patterns"]) == [*DEFAULT_IGNORES, "drafts/"]
    assert row["poll_interval_seconds"] == 600
    assert row["debounce_seconds"] == 5
    assert json.loads(row["priority_rules"]) == [["*.md", 7]]
    assert json.loads(row["metadata"]) == {"owner": "docs-team"}
    assert row["enabled"] == 1
    assert row["created_at"] and row["updated_at"]

    rc, _, err = run(capsys, *argv[:-2], "reconcile", "docs")
    assert rc == 0, err
    q = queued(db)
    root = os.path.realpath(tree)
    assert set(q) == {f"{root}/guide.md", f"{root}/manual.pdf"}
    assert q[f"{root}/guide.md"][:2] == ("ingest", 7)
    assert q[f"{root}/manual.pdf"][:2] == ("ingest", 5)
    assert all(meta["owner"] == "docs-team" for _, _, meta in q.values())


def test_config_option_beats_environment(capsys, monkeypatch, tmp_path, tree, cfg):
    """--config is used instead of $WQSCAN_CONFIG (which here names a broken file)."""
    broken = tmp_path / "broken.yml"
    broken.write_text("watches: [\n")
    monkeypatch.setenv("WQSCAN_CONFIG", str(broken))
    cfg.write_text(example(tree))
    db = tmp_path / "wq.db"
    assert run(capsys, "--db", str(db), "--config", str(cfg), "init")[0] == 0
    rc, out, err = run(capsys, "--db", str(db), "--config", str(cfg), "list", "--json")
    assert rc == 0, err
    assert [w["watch_id"] for w in json.loads(out)] == ["docs"]


def test_second_load_updates_watch_and_keeps_its_history(capsys, tmp_path, tree, cfg):
    """A changed file updates the watch; statistics, last scan and snapshot stay."""
    db = tmp_path / "wq.db"
    cfg.write_text(example(tree))
    base = ["--db", str(db), "--config", str(cfg)]
    assert run(capsys, *base, "init")[0] == 0
    rc, _, err = run(capsys, *base, "reconcile", "docs")
    assert rc == 0, err
    before = watch_row(db, "docs")
    stats = stats_row(db, "docs")
    snapshot = read_rows(db, "SELECT * FROM wq_snapshot ORDER BY dir")
    assert before["last_scan"] and stats["scans_ok"] == 1

    cfg.write_text(example(tree).replace("interval: 600", "interval: 120")
                   .replace('["*.md", "*.pdf"]', '["*.md", "*.txt"]')
                   .replace('{"*.md": 7}', '{"*.md": 9, "*.txt": 2}')
                   .replace("{owner: docs-team}", "{owner: ops, tier: 2}"))
    rc, _, err = run(capsys, *base, "list")
    assert rc == 0, err
    after = watch_row(db, "docs")
    assert after["poll_interval_seconds"] == 120
    assert json.loads(after["patterns"]) == ["*.md", "*.txt"]
    assert json.loads(after["priority_rules"]) == [["*.md", 9], ["*.txt", 2]]
    assert json.loads(after["metadata"]) == {"owner": "ops", "tier": 2}
    assert (after["last_scan"], after["created_at"]) == (before["last_scan"],
                                                          before["created_at"])
    assert stats_row(db, "docs") == stats
    assert read_rows(db, "SELECT * FROM wq_snapshot ORDER BY dir") == snapshot


def test_dropped_watch_is_disabled_not_deleted(capsys, tmp_path, tree, cfg):
    """A watch the file created and dropped is disabled, not deleted; listed again, enabled."""
    db = tmp_path / "wq.db"
    other = tmp_path / "other"
    write(other / "x.md", "x")
    extra = f"  - id: extra\n    path: {other}\n    collection: more\n"
    cfg.write_text(example(tree) + extra)
    base = ["--db", str(db), "--config", str(cfg)]
    assert run(capsys, *base, "init")[0] == 0
    rc, _, err = run(capsys, *base, "reconcile")
    assert rc == 0, err
    stats = stats_row(db, "extra")
    assert stats["scans_ok"] == 1

    cfg.write_text(example(tree))
    rc, _, err = run(capsys, *base, "reconcile")  # all enabled watches: not `extra`
    assert rc == 0, err
    row = watch_row(db, "extra")
    assert row is not None and row["enabled"] == 0
    assert watch_row(db, "docs")["enabled"] == 1
    assert stats_row(db, "extra") == stats

    cfg.write_text(example(tree) + extra)
    rc, _, err = run(capsys, *base, "list")
    assert rc == 0, err
    assert watch_row(db, "extra")["enabled"] == 1


def test_watch_added_on_command_line_is_left_alone(capsys, tmp_path, tree, cfg):
    """A watch added by `wqscan add` is left alone by a file that does not list it."""
    db = tmp_path / "wq.db"
    manual = tmp_path / "manual"
    write(manual / "m.txt", "m")
    rc, _, err = run(capsys, "--db", str(db), "add", str(manual), "--collection", "hand",
                     "--id", "manual", "--interval", "30")
    assert rc == 0, err
    before = watch_row(db, "manual")
    for text in (example(tree), "watches: []\n", ""):
        cfg.write_text(text)
        rc, _, err = run(capsys, "--db", str(db), "--config", str(cfg), "list")
        assert rc == 0, err
        assert watch_row(db, "manual") == before, text
    assert watch_row(db, "docs")["enabled"] == 0  # the file created it and dropped it


@pytest.mark.parametrize("winner", ["option", "environment", "config", "default"])
def test_database_precedence(capsys, monkeypatch, tmp_path, tree, cfg, winner):
    """--db beats $WQSCAN_DB beats the file's `database:` (~ expanded) beats the default."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    paths = {"option": tmp_path / "option.db", "environment": tmp_path / "env.db",
             "config": home / "config.db",
             "default": tmp_path / "xdg" / "wqscan" / "wqscan.db"}
    order = ["option", "environment", "config", "default"]
    present = order[order.index(winner):]
    argv = ["--config", str(cfg)]
    if "option" in present:
        argv += ["--db", str(paths["option"])]
    if "environment" in present:
        monkeypatch.setenv("WQSCAN_DB", str(paths["environment"]))
    text = example(tree)
    if "config" in present:
        text = "database: ~/config.db\n" + text
    cfg.write_text(text)
    rc, out, err = run(capsys, *argv, "init")
    assert rc == 0, err
    for name, path in paths.items():
        assert path.exists() == (name == winner), name
    assert watch_row(paths[winner], "docs") is not None


# -- errors --------------------------------------------------------------------------------

def _watch(extra: str = "") -> str:
    """A watch whose line 5 is `extra` (line 1 is `watches:`)."""
    return "watches:\n  - id: docs\n    path: {tree}\n    collection: c\n" + extra


ERRORS = {
    # name: (file text, line, key)
    "unknown-top-key": (_watch() + "databse: x.db\n", 5, "databse"),
    "unknown-watch-key": (_watch("    intervall: 5\n"), 5, "intervall"),
    "interval-string": (_watch('    interval: "soon"\n'), 5, "interval"),
    "interval-zero": (_watch("    interval: 0\n"), 5, "interval"),
    "patterns-string": (_watch('    patterns: "*.md"\n'), 5, "patterns"),
    "patterns-number": (_watch("    patterns: [1]\n"), 5, "patterns"),
    "enabled-quoted": (_watch('    enabled: "yes"\n'), 5, "enabled"),
    "priority-high": (_watch('    priority: {"*.md": 11}\n'), 5, "priority"),
    "priority-negative": (_watch('    priority: {"*.md": -1}\n'), 5, "priority"),
    "priority-word": (_watch('    priority: {"*.md": high}\n'), 5, "priority"),
    "priority-list": (_watch('    priority: ["*.md"]\n'), 5, "priority"),
    "metadata-list": (_watch("    metadata: [1, 2]\n"), 5, "metadata"),
    "metadata-string": (_watch("    metadata: owner\n"), 5, "metadata"),
    "bad-pattern": (_watch('    patterns: ["*.md", "foo\\\\"]\n'), 5, "patterns"),
    "bad-ignore": (_watch('    ignore: ["[z-a]"]\n'), 5, "ignore"),
    "bad-priority-glob": (_watch('    priority: {"#x": 3}\n'), 5, "priority"),
    "max-depth-zero": (_watch("    max_depth: 0\n"), 5, "max_depth"),
    "check-stat": (_watch("    check_stat: sometimes\n"), 5, "check_stat"),
    "bad-id": ("watches:\n  - id: bad id!\n    path: {tree}\n    collection: c\n", 2, "id"),
    "empty-collection": ('watches:\n  - id: docs\n    path: {tree}\n    collection: ""\n', 4,
                         "collection"),
    "path-is-a-file": ("watches:\n  - id: docs\n    path: {tree}/guide.md\n    collection: c\n",
                       3, "path"),
    "missing-id": ("watches:\n  - path: {tree}\n    collection: c\n", 2, "id"),
    "missing-path": ("watches:\n  - id: docs\n    collection: c\n", 2, "path"),
    "missing-collection": ("watches:\n  - id: docs\n    path: {tree}\n", 2, "collection"),
    "duplicate-id": (_watch("  - id: docs\n    path: {tree}/drafts\n    collection: d\n"),
                     5, "id"),
    "watches-mapping": ("watches:\n  docs: {path: x}\n", 1, "watches"),
    # a value that starts below its key: the key's line for the whole value, the item's
    # line for an item of a list
    "unknown-key-block": (_watch("    intervall:\n      - 5\n"), 5, "intervall"),
    "ignore-block-mapping": (_watch("    ignore:\n      foo: bar\n"), 5, "ignore"),
    "patterns-block-number": (_watch('    patterns:\n      - "*.md"\n      - 7\n'), 7,
                              "patterns"),
    "priority-block-word": (_watch('    priority:\n      "*.md": high\n'), 6, "priority"),
    "database-block-list": ("database:\n  - a\n", 1, "database"),
    "database-list": ("database: [a, b]\n", 1, "database"),
}


@pytest.fixture
def db_with_manual(capsys, tmp_path) -> Path:
    """A database that already holds a watch added on the command line."""
    db = tmp_path / "wq.db"
    manual = tmp_path / "manual"
    write(manual / "m.txt", "m")
    rc, _, err = run(capsys, "--db", str(db), "add", str(manual), "--collection", "hand",
                     "--id", "manual")
    assert rc == 0, err
    return db


def assert_config_error(capsys, db: Path, cfg: Path, line: int, key: str) -> str:
    """Loading the file fails: exit 2, one line naming file, line and key; the database is
    unchanged."""
    before = dump_db(db)
    rc, out, err = run(capsys, "--db", str(db), "--config", str(cfg), "list")
    assert rc == 2, (out, err)
    assert out == ""
    msg = one_line(err)
    assert f"{cfg}:{line}:" in msg, msg
    assert f"'{key}'" in msg, msg
    assert dump_db(db) == before
    return msg


@pytest.mark.parametrize("case", ERRORS)
def test_config_error(capsys, tree, cfg, db_with_manual, case):
    """A bad file exits 2 with one line naming file, line and key; the database is unchanged."""
    text, line, key = ERRORS[case]
    cfg.write_text(text.replace("{tree}", str(tree)))
    assert_config_error(capsys, db_with_manual, cfg, line, key)


def test_config_error_before_database_exists(capsys, tmp_path, tree, cfg):
    """A bad file is refused before the database is created."""
    db = tmp_path / "new.db"
    cfg.write_text(_watch("    interval: soon\n").replace("{tree}", str(tree)))
    rc, _, err = run(capsys, "--db", str(db), "--config", str(cfg), "init")
    assert rc == 2
    assert f"{cfg}:5:" in one_line(err)
    assert not db.exists()


def test_path_error_names_path_key(capsys, tmp_path, cfg, db_with_manual):
    """A bad path is blamed on `path` even when its name contains another key's word."""
    file = tmp_path / "high-priority" / "file"
    write(file, "not a directory")
    cfg.write_text(f'watches:\n  - id: docs\n    path: {file}\n    collection: c\n'
                   f'    priority: {{"*.md": 7}}\n')
    assert_config_error(capsys, db_with_manual, cfg, 3, "path")


@pytest.mark.parametrize("text, line, column", [
    ("watches:\n  - id: docs\n    path: a: b\n", 3, 12),
    ("watches:\n  - id: docs\n\tpath: x\n", 3, 1),
    ("watches: [\n", 2, 1),
])
def test_invalid_yaml(capsys, cfg, db_with_manual, text, line, column):
    """Invalid YAML exits 2 with one line naming file, line and column; nothing changes."""
    cfg.write_text(text)
    before = dump_db(db_with_manual)
    rc, out, err = run(capsys, "--db", str(db_with_manual), "--config", str(cfg), "list")
    assert rc == 2
    assert f"{cfg}:{line}:{column}:" in one_line(err)
    assert dump_db(db_with_manual) == before


def test_conflict_with_existing_watch_changes_nothing(capsys, tmp_path, tree, cfg,
                                                      db_with_manual):
    """A watch clashing with an existing one exits 2; the file's other watches are not created."""
    cfg.write_text(example(tree) + f"  - id: twin\n    path: {tmp_path / 'manual'}\n"
                   "    collection: hand\n")
    before = dump_db(db_with_manual)
    rc, _, err = run(capsys, "--db", str(db_with_manual), "--config", str(cfg), "list")
    assert rc == 2
    msg = one_line(err)
    assert str(cfg) in msg and "twin" in msg, msg
    assert dump_db(db_with_manual) == before


UNSAFE = {
    "document": "{tag} [\"touch {marker}\"]\n",
    "database": "database: {tag} [\"touch {marker}\"]\n",
    "watches": "watches: {tag} [\"touch {marker}\"]\n",
    "watch": "watches:\n  - {tag} [\"touch {marker}\"]\n",
    "id": "watches:\n  - id: {tag} [\"touch {marker}\"]\n    path: {tree}\n    collection: c\n",
    "patterns": _watch("    patterns: {tag} [\"touch {marker}\"]\n"),
    "ignore": _watch("    ignore: {tag} [\"touch {marker}\"]\n"),
    "priority": _watch("    priority: {\"*.md\": {tag} [\"touch {marker}\"]}\n"),
    "metadata": _watch("    metadata: {tag} [\"touch {marker}\"]\n"),
    "metadata-value": _watch("    metadata: {run: {tag} [\"touch {marker}\"]}\n"),
    "metadata-nested": _watch("    metadata: {a: [1, {b: {tag} [\"touch {marker}\"]}]}\n"),
}


def unsafe(where: str, marker: Path, tree: Path) -> str:
    """The file of case `where` with a payload that would create `marker`."""
    return (UNSAFE[where].replace("{tag}", "!!python/object/apply:os.system")
            .replace("{marker}", str(marker)).replace("{tree}", str(tree)))


@pytest.mark.parametrize("where", UNSAFE)
def test_python_tags_are_refused(capsys, tmp_path, tree, cfg, db_with_manual, where):
    """A live !!python/object/apply payload anywhere is refused (exit 2) and never runs."""
    live = tmp_path / "pwned-control"
    text = unsafe(where, live, tree)
    yaml.unsafe_load(text)  # the payload is real: the unsafe loader runs it
    assert live.exists()

    marker = tmp_path / f"pwned-{os.getpid()}-{where}"
    cfg.write_text(unsafe(where, marker, tree))
    before = dump_db(db_with_manual)
    rc, out, err = run(capsys, "--db", str(db_with_manual), "--config", str(cfg), "list")
    assert not marker.exists()
    assert rc == 2, (out, err)
    assert str(cfg) in one_line(err)
    assert dump_db(db_with_manual) == before


def test_scalar_python_tag_is_refused(capsys, tree, cfg, db_with_manual):
    """A python tag on a scalar (`!!python/name:os.system`) is refused with the key named."""
    cfg.write_text(_watch("    check_stat: !!python/name:os.system\n").replace("{tree}", str(tree)))
    msg = assert_config_error(capsys, db_with_manual, cfg, 5, "check_stat")
    assert "tag" in msg


def test_missing_path_accepted_and_scanned_once_it_exists(capsys, tmp_path, cfg):
    """A missing path is accepted from the file; scans fail until it exists, then succeed."""
    db = tmp_path / "wq.db"
    later = tmp_path / "mnt" / "later"
    cfg.write_text(f"watches:\n  - id: later\n    path: {later}\n    collection: c\n"
                   "    settle: 0\n")
    base = ["--db", str(db), "--config", str(cfg)]
    assert run(capsys, *base, "init")[0] == 0
    rc, out, err = run(capsys, *base, "list", "--json")
    assert rc == 0, err
    assert [(w["watch_id"], w["path"]) for w in json.loads(out)] == [("later", str(later))]
    rc, _, err = run(capsys, *base, "reconcile", "later")
    assert rc == 1
    assert "later" in one_line(err) and "unavailable" in err
    assert stats_row(db, "later")["last_result"] == "failed"
    write(later / "doc.md", "now it is here")
    rc, _, err = run(capsys, *base, "reconcile", "later")
    assert rc == 0, err
    assert list(queued(db)) == [str(later / "doc.md")]


# -- wqscan run and SIGHUP -----------------------------------------------------------------

def wait_for(condition, what: str, proc: subprocess.Popen, log: Path,
             patience: float = PATIENCE) -> None:
    """Poll `condition` until it holds; fail if `proc` ends first or time runs out."""
    deadline = time.monotonic() + patience
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"run exited {proc.returncode} before {what}: {log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; run's log:\n{log.read_text()}")
        time.sleep(POLL)


def scanned(db: Path, watch_id: str) -> bool:
    stats = stats_row(db, watch_id) if db.exists() else None
    return bool(stats and stats["scans_ok"] > 0)


def watch_yaml(watch_id: str, path: Path, interval: float = 3600) -> str:
    return (f"  - id: {watch_id}\n    path: {path}\n    collection: c\n"
            f"    interval: {interval}\n    settle: 0\n")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_run_reloads_config_on_sighup(tmp_path, cfg):
    """run reloads the file on SIGHUP: watches added, bad file kept out, dropped disabled."""
    db = tmp_path / "wq.db"
    one, two = tmp_path / "one", tmp_path / "two"
    write(one / "a.txt", "a")
    write(two / "b.txt", "b")
    cfg.write_text("watches:\n" + watch_yaml("one", one))
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "wqscan", "--db", str(db), "--config",
                                 str(cfg), "run"], env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        wait_for(lambda: scanned(db, "one"), "watch one's first scan", proc, log)
        assert watch_row(db, "two") is None

        cfg.write_text("watches:\n" + watch_yaml("one", one) + watch_yaml("two", two))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: scanned(db, "two"), "watch two, added by SIGHUP, to be scanned",
                 proc, log)
        assert str(two / "b.txt") in queued(db)
        assert f"configuration {cfg} loaded" in log.read_text()

        cfg.write_text("watches: [\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "not reloaded" in log.read_text(), "the failed reload's log line",
                 proc, log)
        assert [line for line in log.read_text().splitlines() if "not reloaded" in line][0] \
            .count(str(cfg)) == 1
        assert watch_row(db, "one")["enabled"] == watch_row(db, "two")["enabled"] == 1

        cfg.write_text("watches:\n" + watch_yaml("two", two))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: watch_row(db, "one")["enabled"] == 0, "watch one to be disabled",
                 proc, log)
        assert proc.poll() is None
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()


def test_run_keeps_scanning_when_env_config_breaks(tmp_path, cfg):
    """run with $WQSCAN_CONFIG keeps scanning after the file breaks on disk (until a reload)."""
    db = tmp_path / "wq.db"
    one = tmp_path / "one"
    write(one / "a.txt", "a")
    cfg.write_text("watches:\n" + watch_yaml("one", one, interval=1))
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "wqscan", "--db", str(db), "run"],
                                env=child_env(WQSCAN_CONFIG=str(cfg)),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: scanned(db, "one"), "watch one's first scan", proc, log)
        cfg.write_text("watches: [\n")  # an operator's edit, half done
        write(one / "new.txt", "new", OLD_NS + 10**12)
        wait_for(lambda: str(one / "new.txt") in queued(db),
                 "the new file to be queued by a later scheduled scan", proc, log,
                 patience=12.0)
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()


def test_remove_of_a_watch_the_file_defines_is_refused(capsys, tmp_path, tree, cfg):
    """`remove` of a watch the YAML file still defines exits 2 with one line pointing at the
    file (the next command would create it again, with an empty snapshot: a full
    re-ingest); once the file drops it, or is gone, remove works."""
    db = tmp_path / "wq.db"
    cfg.write_text(example(tree))
    base = ["--db", str(db), "--config", str(cfg)]
    assert run(capsys, *base, "init")[0] == 0
    assert run(capsys, *base, "reconcile", "docs")[0] == 0
    rc, _, err = run(capsys, "--db", str(db), "remove", "docs")
    assert rc == 2 and f"defined by {cfg}" in one_line(err) and "enabled: false" in err
    assert watch_row(db, "docs") is not None and stats_row(db, "docs")["scans_ok"] == 1
    cfg.write_text("watches: []\n")
    assert run(capsys, *base, "list")[0] == 0  # the file dropped it: disabled
    rc, out, err = run(capsys, "--db", str(db), "remove", "docs")
    assert rc == 0, err
    assert watch_row(db, "docs") is None


# -- enabled like every key; ids owned once; the cron form on a new machine -----------------

def test_enabled_returns_to_its_default_when_the_key_goes(capsys, tmp_path, tree, cfg):
    """`enabled: false` disables the watch; removing the key enables it again, as every
    other key returns to its default."""
    db = tmp_path / "wq.db"
    base = ["--db", str(db), "--config", str(cfg)]
    cfg.write_text(example(tree) + "    enabled: false\n")
    assert run(capsys, *base, "list")[0] == 0
    assert watch_row(db, "docs")["enabled"] == 0
    cfg.write_text(example(tree))
    assert run(capsys, *base, "list")[0] == 0
    assert watch_row(db, "docs")["enabled"] == 1


@pytest.mark.parametrize("command", ["enable", "disable"])
def test_enable_and_disable_of_a_watch_the_file_defines_are_refused(capsys, tmp_path, tree,
                                                                     cfg, command):
    """`wqscan enable|disable` of a watch a YAML file defines exits 2 in one line pointing
    at the file, as `set` does, and changes nothing (the next command loading the file
    would undo it)."""
    db = tmp_path / "wq.db"
    cfg.write_text(example(tree) + ("    enabled: false\n" if command == "enable" else ""))
    assert run(capsys, "--db", str(db), "--config", str(cfg), "list")[0] == 0
    before = dump_db(db)
    rc, out, err = run(capsys, "--db", str(db), command, "docs")
    assert rc == 2 and out == "", out
    assert f"defined by {cfg}" in one_line(err) and "enabled: " in err, err
    assert dump_db(db) == before


def test_a_yaml_id_taken_by_an_added_watch_is_refused(capsys, tmp_path, tree, cfg):
    """A watch `wqscan add` made keeps its id: a file defining the same id (for another
    tree) is refused in one line naming both owners, and nothing changes."""
    db = tmp_path / "wq.db"
    manual = tmp_path / "manual"
    write(manual / "m.txt", "m")
    assert run(capsys, "--db", str(db), "add", str(manual), "--collection", "hand",
               "--id", "docs")[0] == 0
    before = dump_db(db)
    cfg.write_text(example(tree))
    rc, _, err = run(capsys, "--db", str(db), "--config", str(cfg), "list")
    line = one_line(err)
    assert rc == 2 and str(cfg) in line and "added with wqscan add" in line, line
    assert dump_db(db) == before


def test_a_yaml_id_another_file_defines_is_refused(capsys, tmp_path, tree, cfg):
    """Two files defining one id: the second is refused naming both files; once the first
    drops the watch (or is gone) the second may take it over, and the watch then moves to
    its tree: deletes of the old tree's files, ingests of the new one's."""
    db = tmp_path / "wq.db"
    other_tree = tmp_path / "other"
    write(other_tree / "o.md", "o")
    other = tmp_path / "other.yml"
    other.write_text(f"watches:\n  - id: docs\n    path: {other_tree}\n"
                     "    collection: team-docs\n    settle: 0\n")
    cfg.write_text(example(tree))
    assert run(capsys, "--db", str(db), "--config", str(cfg), "reconcile")[0] == 0
    before = dump_db(db)
    rc, _, err = run(capsys, "--db", str(db), "--config", str(other), "list")
    line = one_line(err)
    assert rc == 2 and str(other) in line and f"defined by {cfg}" in line, line
    assert dump_db(db) == before
    cfg.unlink()
    rc, _, err = run(capsys, "--db", str(db), "--config", str(other), "reconcile")
    assert rc == 0, err
    # the old tree's pending ingests, never consumed, cancelled by their deletes
    assert {p: op for p, (op, _, _) in queued(db).items()} == {
        os.path.realpath(other_tree / "o.md"): "ingest"}


def test_a_new_path_for_a_watch_moves_it(capsys, tmp_path, tree, cfg):
    """The file gives a watch another path: every file of the old tree gets a delete, the
    new tree is ingested; nothing of the old snapshot is compared with the new tree."""
    db = tmp_path / "wq.db"
    base = ["--db", str(db), "--config", str(cfg)]
    cfg.write_text(example(tree))
    assert run(capsys, *base, "reconcile")[0] == 0
    drain(db)
    moved = tmp_path / "moved"
    write(moved / "guide.md", "# another guide")
    cfg.write_text(example(moved))
    rc, _, err = run(capsys, *base, "reconcile")
    assert rc == 0, err
    real, new = os.path.realpath(tree), os.path.realpath(moved)
    assert {p: op for p, (op, _, _) in queued(db).items()} == {
        f"{real}/guide.md": "delete", f"{real}/manual.pdf": "delete",
        f"{new}/guide.md": "ingest"}


@pytest.mark.parametrize("command", ["reconcile", "status", "run --once"])
def test_a_configuration_listing_watches_creates_its_database(capsys, tmp_path, tree, cfg,
                                                               command):
    """The cron form on a new machine: `wqscan --config F reconcile` creates the database
    the file names and scans; any command loading such a file does."""
    db = tmp_path / "new" / "wq.db"
    cfg.write_text(example(tree, database=db))
    os.utime(tree / "guide.md", ns=(OLD_NS, OLD_NS))
    rc, _, err = run(capsys, "--config", str(cfg), *command.split())
    assert rc == 0, err
    assert watch_row(db, "docs") is not None


@pytest.mark.parametrize("text", ["", "watches: []\n"])
def test_a_missing_database_is_still_refused_without_watches(capsys, tmp_path, cfg, text):
    """A bare command, or one whose file lists no watches, on a missing database (a
    mistyped $WQSCAN_DB) exits 2 naming it and creates nothing."""
    db = tmp_path / "typo.db"
    cfg.write_text(text)
    for argv in (["--db", str(db), "reconcile"],
                 ["--db", str(db), "--config", str(cfg), "reconcile"]):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and str(db) in one_line(err), err
        assert not db.exists()


def test_a_path_that_resolves_elsewhere_while_its_share_is_away_moves_nothing(
        capsys, tmp_path, cfg):
    """A watch's path through a symlink on a share: while the share is unmounted the path
    resolves to nothing, and loading the file (any command, `list` too) queues no delete
    and keeps the snapshot; the watch stays where it was."""
    nas = tmp_path / "nas"
    (nas / "real-docs").mkdir(parents=True)
    for name in ("a.md", "b.md"):
        write(nas / "real-docs" / name, name)
    os.symlink("real-docs", nas / "docs")
    db = tmp_path / "wq.db"
    cfg.write_text(f"watches:\n  - id: docs\n    path: {nas / 'docs'}\n    collection: c\n"
                   "    settle: 0\n")
    base = ["--db", str(db), "--config", str(cfg)]
    assert run(capsys, *base, "reconcile")[0] == 0
    drain(db)
    snapshot = read_rows(db, "SELECT * FROM wq_snapshot")
    (nas / "real-docs").rename(tmp_path / "away")  # the share, unmounted
    (nas / "docs").unlink()
    assert run(capsys, *base, "list")[0] == 0
    assert queued(db) == {}
    assert read_rows(db, "SELECT * FROM wq_snapshot") == snapshot
    assert watch_row(db, "docs")["path"] == str((tmp_path / "nas" / "real-docs").resolve())


def test_a_disabled_watch_the_file_dropped_is_the_files_no_more(capsys, tmp_path, tree, cfg):
    """A watch with `enabled: false` that the file then drops is retired like any other:
    `remove` works, and another file may take its id."""
    db = tmp_path / "wq.db"
    base = ["--db", str(db), "--config", str(cfg)]
    cfg.write_text(example(tree) + "    enabled: false\n")
    assert run(capsys, *base, "list")[0] == 0
    cfg.write_text("watches: []\n")
    assert run(capsys, *base, "list")[0] == 0
    assert watch_row(db, "docs")["config_retired"] == 1
    rc, _, err = run(capsys, "--db", str(db), "remove", "docs")
    assert rc == 0, err


def test_one_file_reached_by_two_paths_is_one_owner(capsys, tmp_path, tree):
    """The configuration loaded once by its path and once through a symlinked directory is
    one file: its watches are its own either way."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "wq.yaml").write_text(example(tree))
    os.symlink(real, tmp_path / "link")
    db = tmp_path / "wq.db"
    for cfg in (real / "wq.yaml", tmp_path / "link" / "wq.yaml"):
        rc, _, err = run(capsys, "--db", str(db), "--config", str(cfg), "list")
        assert rc == 0, err
        assert watch_row(db, "docs")["enabled"] == 1
