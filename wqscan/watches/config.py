"""The YAML configuration (docs/usage.md): a database path and watch definitions.

The file is composed into YAML nodes with the safe loader's composer and checked
node by node, so no object is ever constructed and every error names the file,
the line and the key. Watches it lists are created or updated; watches it created
and no longer lists are disabled, not deleted; watches added from the command
line are left alone.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigError, UsageError
from ..model import PG_SCHEMES, Watch
from ..settings import SETTINGS

if TYPE_CHECKING:
    from ..store import Store

MAX_NESTING = 64  # of lists and mappings in the file
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_KIND_NAMES = {"str": "string", "bool": "boolean (true or false)", "int": "whole number",
               "number": "number", "size": "size (bytes, or 10MB, 1.5G, ...)"}
_YAML_KINDS = {"text": "str", "choice": "str", "bool": "bool", "int": "int",
               "seconds": "number", "size": "size", "globs": "strs", "rules": "priorities",
               "json": "mapping"}
# YAML key -> (make_watch's name, expected kind)
_WATCH_KEYS: dict[str, tuple[str, str]] = {
    "id": ("watch_id", "str"), "path": ("path", "str"),
    **{s.yaml_key: (s.name, _YAML_KINDS[s.kind]) for s in SETTINGS},
}


class Config(NamedTuple):
    """A loaded configuration file (a NamedTuple: dataclasses would cost start-up time)."""

    path: str
    database: str | None
    watches: tuple[Watch, ...]


def config_path(given: str | None) -> str | None:
    """--config, else $WQSCAN_CONFIG, else none."""
    return given or os.environ.get("WQSCAN_CONFIG") or None


def load(path: str) -> Config:
    """Read and check a configuration file; a problem raises ConfigError naming it."""
    import yaml

    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the open
        raise ConfigError(f"{path}: cannot read the configuration: not a regular file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_NESTING} levels") from None
    if root is None:
        return Config(path, None, ())
    _check_tree(path, root)
    top = _mapping(path, root, "the file")
    base = os.path.dirname(path)
    database, watches = None, []
    for key, node, at in top:
        if key == "database":
            database = _scalar(path, node, key, "str", at)
            if not database.startswith(PG_SCHEMES):  # a file, relative to the configuration
                database = os.path.join(base, os.path.expanduser(database))
        elif key == "watches":
            if not isinstance(node, yaml.SequenceNode):
                raise _error(path, at, key, "must be a list of watches")
            seen: set[str] = set()
            for item in node.value:
                watch = _watch(path, base, item)
                if watch.watch_id in seen:
                    raise _error(path, item, "id", f"watch '{watch.watch_id}' is defined twice")
                seen.add(watch.watch_id)
                watches.append(watch)
        else:
            raise _error(path, at, key, "unknown key (expected database, watches)")
    return Config(path, database, tuple(watches))


def apply(store: Store, config: Config) -> None:
    """Create or update the file's watches; disable those it created and dropped."""
    from . import define_watch, retire_watches

    with store.write():
        for watch in config.watches:
            try:
                define_watch(store, watch, config.path)
            except UsageError as e:
                raise ConfigError(f"{config.path}: watch {watch.watch_id}: {e}") from None
        retire_watches(store, config.path, {w.watch_id for w in config.watches})


def _watch(path: str, base: str, node: Any) -> Watch:
    """A watch of the file (a key it leaves out takes its default, `enabled` too)."""
    from . import make_watch

    items = _mapping(path, node, "a watch")
    options: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    for key, value, at in items:
        if key not in _WATCH_KEYS:
            raise _error(path, at, key, "unknown key (expected one of "
                         f"{', '.join(_WATCH_KEYS)})")
        option, kind = _WATCH_KEYS[key]
        options[option] = _value(path, value, key, kind, at)
        marks[option] = (key, at)
    for key in ("id", "path", "collection"):
        if _WATCH_KEYS[key][0] not in options:
            raise _error(path, node, key, "missing (every watch needs id, path, collection)")
    where = os.path.join(base, os.path.expanduser(options.pop("path")))
    try:
        return make_watch(where, options.pop("collection"), must_exist=False, **options)
    except UsageError as e:
        key, value = marks.get(e.field or "", ("id", node))
        raise _error(path, value, key, str(e)) from None


def _check_tree(path: str, root: Any) -> None:
    """Refuse aliases (each node is read once: no alias bombs, no recursion), nesting
    deeper than MAX_NESTING and a key given twice in one mapping."""
    import yaml

    seen: set[int] = set()
    todo = [(root, 0)]
    while todo:
        node, depth = todo.pop()
        if id(node) in seen:
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: aliases (*name) are not "
                              "supported; write the value out")
        seen.add(id(node))
        if depth > MAX_NESTING:
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: nested deeper than "
                              f"{MAX_NESTING} levels")
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in keys:
                        raise _error(path, k, k.value, "given twice in one mapping")
                    keys.add(k.value)
                todo += [(k, depth + 1), (v, depth + 1)]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(v, depth + 1) for v in node.value]


def _plain_tag(path: str, node: Any, what: str) -> None:
    """A list or mapping with an explicit tag (`!!python/...`) is refused, as the safe
    loader would refuse it."""
    if node.tag not in _PLAIN_TAGS:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {what} has a tag the safe "
                          f"loader refuses: {node.tag}")


def _error(path: str, node: Any, key: str, problem: str) -> ConfigError:
    """The error at `node`'s line: a key's for what is wrong with its whole value (a block
    value starts on a later line), an item's for an item of a list."""
    return ConfigError(f"{path}:{node.start_mark.line + 1}: key '{key}': {problem}")


def _mapping(path: str, node: Any, what: str) -> list[tuple[str, Any, Any]]:
    """A mapping's (key, value node, key node) in order."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {what} must be a mapping")
    _plain_tag(path, node, what)
    out = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: keys must be plain")
        out.append((key_node.value, value_node, key_node))
    return out


def _value(path: str, node: Any, key: str, kind: str, at: Any) -> Any:
    """The value of `key` (key node `at`) as `kind` asks."""
    import yaml

    if kind == "strs":
        if not isinstance(node, yaml.SequenceNode):
            raise _error(path, at, key, "must be a list of strings")
        _plain_tag(path, node, f"key '{key}'")
        return [_scalar(path, item, key, "str") for item in node.value]
    if kind == "priorities":
        return [(glob, _scalar(path, value, key, "int", glob_at))
                for glob, value, glob_at in _mapping(path, node, f"key '{key}'")]
    if kind == "mapping":
        return _plain(path, node, key)
    if kind == "size":  # bytes, or a size with its unit: 10MB, 1.5G
        from ..settings import parse_size

        value = _scalar(path, node, key, "size", at)
        try:
            return value if isinstance(value, int) else parse_size(value)
        except ValueError as e:
            raise _error(path, at or node, key, str(e)) from None
    return _scalar(path, node, key, kind, at)


def _scalar(path: str, node: Any, key: str, kind: str, at: Any = None) -> Any:
    """A scalar of the expected kind, resolved as the safe loader would resolve it; errors
    at the line of `at` (its key), else of the node (an item of a list)."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise _error(path, at or node, key, f"must be a {_KIND_NAMES[kind]}")
    try:
        value = yaml.SafeLoader("").construct_object(node) \
            if node.tag != "tag:yaml.org,2002:str" else node.value
    except yaml.YAMLError:
        raise _error(path, at or node, key, f"has a tag the safe loader refuses: {node.tag}") \
            from None
    ok = {"str": isinstance(value, str),
          "size": isinstance(value, str) or (isinstance(value, int)
                                             and not isinstance(value, bool)),
          "bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value)}[kind]
    if kind == "str" and ok and (not value.strip() or "\0" in value) and key != "metadata":
        raise _error(path, at or node, key, "must not be empty or hold a NUL character")
    if not ok:
        raise _error(path, at or node, key, f"must be a {_KIND_NAMES[kind]}, not '{node.value}'")
    return value


def _plain(path: str, node: Any, key: str) -> Any:
    """A mapping of plain data (for metadata), built from scalars, lists and mappings."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return {k: _plain(path, v, key) for k, v, _ in _mapping(path, node, f"key '{key}'")}
    if isinstance(node, yaml.SequenceNode):
        _plain_tag(path, node, f"key '{key}'")
        return [_plain(path, v, key) for v in node.value]
    for kind in ("bool", "int", "number", "str"):
        try:
            return _scalar(path, node, key, kind)
        except ConfigError:
            continue
    if node.tag == "tag:yaml.org,2002:null":
        return None
    raise _error(path, node, key, f"holds a value that is not plain data: '{node.value}'")
