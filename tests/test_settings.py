"""The table of watch settings is the one place a setting is declared: each one reaches
`add`, `set`, the YAML file, `show`, `list --json`, the watch record and the database
from its row, under its one name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wqscan import cli
from wqscan.model import Watch
from wqscan.settings import DEFAULT_IGNORES, SETTINGS, STORED, Setting
from wqscan.watches import get_watch

# a value other than the default, as the command line, the YAML file and the record have it
SAMPLES = {"text": ("other", "other", "other"), "choice": ("full", "full", "full"),
           "int": ("3", "3", 3), "seconds": ("7.5", "7.5", 7.5), "size": ("1K", "1K", 1024),
           "globs": ("*.md", '["*.md"]', ("*.md",)),
           "rules": ("*.md=7", '{"*.md": 7}', (("*.md", 7),)),
           "json": ('{"team": "x"}', '{"team": "x"}', {"team": "x"})}


def sample(s: Setting) -> tuple[list[str], str, object]:
    """(`set` arguments, YAML value, the record's value) that change `s`."""
    if s.kind == "bool":
        flag = s.flag if not s.default else "--no-" + s.flag[2:]
        return [flag], "false" if s.default else "true", not s.default
    arg, yaml, value = SAMPLES[s.kind]
    return [s.flag, arg], yaml, value


def value_of(w: Watch, s: Setting) -> object:
    if s.name == "default_ignores":
        return all(i in w.ignores for i in DEFAULT_IGNORES)
    if s.name == "ignores":
        return tuple(i for i in w.ignores if i not in DEFAULT_IGNORES)
    return getattr(w, s.name)


def run(capsys, db: str, *argv: str) -> str:
    capsys.readouterr()
    code = cli.main(["--db", db, *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: s.name)
def test_set_changes_one_setting_and_every_view_shows_it(s: Setting, tmp_path: Path, capsys):
    """`set` with the setting's option changes that setting alone; `show` prints it under its
    label, `list --json` under its column; the record round-trips through the row."""
    db = str(tmp_path / "q.db")
    (tmp_path / "tree").mkdir()
    wid = run(capsys, db, "add", str(tmp_path / "tree"), "--collection", "c").strip()
    from wqscan.store import Store, Target

    with Store.open(Target(db)) as store:
        before = get_watch(store, wid)
    argv, _, expected = sample(s)
    out = run(capsys, db, "set", wid, *argv)
    assert out.startswith(f"changed {wid}: {s.name}"), out
    with Store.open(Target(db)) as store:
        after = get_watch(store, wid)
    assert value_of(after, s) == expected
    for other in SETTINGS:
        if other is not s and {s.name, other.name} != {"ignores", "default_ignores"}:
            assert value_of(after, other) == value_of(before, other), other.name
    assert Watch.from_row(after.to_row()) == after._replace(created_at=None, updated_at=None,
                                                            last_scan=None)
    listed = json.loads(run(capsys, db, "list", "--json"))[0]
    if s.column is not None:
        assert listed[s.column] == after.to_json()[s.column]
        assert listed[s.column] != before.to_json()[s.column]
    if s.label:
        shown = {line[:20].strip(" :"): line[20:] for line in
                 run(capsys, db, "show", wid).splitlines()}
        assert s.label in shown, shown


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.name != "collection"],
                         ids=lambda s: s.name)
def test_yaml_key_and_add_option_give_the_same_watch(s: Setting, tmp_path: Path, capsys):
    """The setting's YAML key and its `add` option (where add has one) make the same watch
    as `set` does."""
    (tmp_path / "tree").mkdir()
    argv, yaml, expected = sample(s)
    config = tmp_path / "w.yaml"
    config.write_text(f"watches:\n  - id: w\n    path: tree\n    collection: c\n"
                      f"    {s.yaml_key}: {yaml}\n")
    db = str(tmp_path / "y.db")
    run(capsys, db, "--config", str(config), "list")
    from wqscan.store import Store, Target

    with Store.open(Target(db)) as store:
        assert value_of(get_watch(store, "w"), s) == expected
    if s.add_flag == "-":
        return
    if s.kind == "bool":
        argv = [s.add_flag or s.flag]
    db = str(tmp_path / "a.db")
    run(capsys, db, "add", str(tmp_path / "tree"), "--collection", "c", "--id", "w", *argv)
    with Store.open(Target(db)) as store:
        assert value_of(get_watch(store, "w"), s) == expected


def test_the_record_has_a_field_per_stored_setting():
    assert Watch._fields == ("watch_id", "path", *(s.name for s in STORED), "config_file",
                             "created_at", "updated_at", "last_scan")
