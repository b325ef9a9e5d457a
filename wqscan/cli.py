"""The `wqscan` command line: parse, call the API, format. Errors become one line and an
exit code here and nowhere else."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn

from . import __version__
from .errors import EXIT_FAILED, EXIT_OK, UsageError, WqscanError, exit_code
from .model import MAX_RETRIES, PURGEABLE_STATUSES, QUEUE_STATUSES
from .text import printable, table

LAYOUT_NAMES = ("wqscan", "workspace-qdrant-mcp")  # as store.LAYOUTS, without importing it
COMMAND_NAMES = ("init", "add", "set", "list", "show", "remove", "enable", "disable",
                 "reconcile", "status", "run", "hook", "metrics", "queue")  # build_parser's


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors (one line, exit code 2), naming the
    command (not the program again) and the nearest option or choice to a misspelt one."""

    known: set[str] = set()  # every option string of every parser built

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        _Parser.known.update(action.option_strings)
        return action

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes one per add_argument and, without a width, imports shutil for it
        return self.formatter_class(prog=self.prog, width=_columns() - 2)

    def error(self, message: str) -> NoReturn:
        import difflib

        hint = None
        build_parser()  # every command's options, for the hint
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], sorted(self.known), 1)
                if word.startswith("-") and close:
                    hint = close[0]
                    break
        elif "invalid choice:" in message and "(choose from " in message:
            word = message.split("invalid choice:", 1)[1].split("(choose from", 1)[0]
            choices = message.rsplit("(choose from ", 1)[1].rstrip(")").split(", ")
            close = difflib.get_close_matches(word.strip(" '"), [c.strip("'") for c in choices],
                                              1)
            hint = close[0] if close else None
        command = self.prog.removeprefix("wqscan").strip()
        text = f"{command}: {message}" if command else message
        raise UsageError(text + (f" (did you mean {hint}?)" if hint else ""))


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size gives it, without its import."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def default_db() -> str:
    """$XDG_DATA_HOME/wqscan/wqscan.db (~/.local/share/wqscan/wqscan.db)."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(data, "wqscan", "wqscan.db")


def _resolve(args: argparse.Namespace):
    """The database path and the loaded configuration (or None): --db, then $WQSCAN_DB,
    then the configuration's `database:`, then the default."""
    from .config import config_path, load

    path = config_path(args.config)
    config = load(path) if path else None
    db = args.db or os.environ.get("WQSCAN_DB") or (config.database if config else None) \
        or default_db()
    return os.path.expanduser(db), config


class _VersionAsked(Exception):
    """--version was given, wherever it stands: main() answers it."""


class _Version(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        raise _VersionAsked


def _version(argv: list[str]) -> int:
    """Print the version, the active scanner, and what the database the arguments (or
    the environment) name holds; creates nothing."""
    from . import _scan
    from .store import Store

    print(f"wqscan {__version__} (scanner: {_scan.BACKEND})")
    pre = _Parser(add_help=False)
    pre.add_argument("--db")
    pre.add_argument("--config")
    db, _ = _resolve(pre.parse_known_args(argv)[0])
    held = Store.peek(db)
    print(f"database: {db} ({held + ' layout' if held in LAYOUT_NAMES else held})")
    return EXIT_OK


def _global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """--db, -q, -v: accepted before and after the command name."""
    d = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--db", metavar="PATH", help="database file (default: $WQSCAN_DB, else "
                   "$XDG_DATA_HOME/wqscan/wqscan.db)", **({"default": None} if top else d))
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: "
                   "$WQSCAN_CONFIG)", **({"default": None} if top else d))
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only", **d)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show tracebacks and more detail", **d)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, of that command alone, which is all a run
    needs and a quarter of the start-up time of a scan that finds nothing to do."""
    parser = _Parser(prog="wqscan", description="Keep an SQLite ingestion queue in step with "
                     "directory trees by polling.")
    _global_options(parser, top=True)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version and the active scanner, then exit")
    common = _Parser(add_help=False)
    _global_options(common, top=False)
    common.add_argument("--version", action=_Version, nargs=0, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, func: Callable[[argparse.Namespace], int], text: str) -> _Parser | None:
        if only is not None and name != only:
            return None
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(func=func)
        return p

    if p := cmd("init", cmd_init, "create or migrate the database (idempotent)"):
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--layout", choices=LAYOUT_NAMES,
                       help="queue layout of a new database (default wqscan); an existing "
                       "database keeps the layout it has")

    if p := cmd("add", cmd_add, "register a directory tree as a watch and print its id"):
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("path", help="root of the tree")
        p.add_argument("--collection", required=True, help="collection its files go to")
        p.add_argument("--id", dest="watch_id", help="watch id (default: derived from the path)")
        p.add_argument("--pattern", action="append", default=[], metavar="GLOB",
                       help="include pattern, gitignore syntax (repeatable; default: every file)")
        p.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                       help="ignore pattern added to the default list (repeatable)")
        p.add_argument("--no-default-ignores", action="store_true",
                       help="do not add the default ignore list")
        p.add_argument("--no-recursive", action="store_true", help="direct children only")
        p.add_argument("--max-depth", type=int, metavar="N",
                       help="as find's -maxdepth: the root's children have depth 1")
        p.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                       help="poll interval for the scheduler (default 60)")
        p.add_argument("--settle", type=float, default=2.0, metavar="SECONDS",
                       help="defer files modified this recently (default 2)")
        p.add_argument("--priority", action="append", default=[], metavar="GLOB=N",
                       help="priority 0..10 for ingest/update of matching files; first match wins")
        p.add_argument("--max-file-size", type=int, metavar="BYTES",
                       help="larger files are out of scope")
        p.add_argument("--no-gitignore", action="store_true", help="ignore .gitignore files")
        p.add_argument("--follow-symlinks", action="store_true",
                       help="follow symlinks that stay inside the root")
        p.add_argument("--check-stat", choices=("auto", "full", "minimal"), default="auto",
                       help="stat fields compared (default auto: minimal on network/FUSE mounts)")
        p.add_argument("--threads", type=int, metavar="N",
                       help="directories listed at once (default: 16 on network and FUSE "
                       "mounts, one per core otherwise)")
        p.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="the scheduler abandons a scan running longer (default 600)")
        p.add_argument("--disabled", action="store_true", help="add it disabled")
        p.add_argument("--metadata", metavar="JSON", help="JSON object merged into queue metadata")

    if p := cmd("set", cmd_set, "change settings of a watch, keeping its snapshot: the next scan "
                "queues exactly the files that enter or leave its scope"):
        p.add_argument("watch_id", metavar="ID")
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--collection", help="another collection: deletes are queued into the old "
                       "one and the next scan ingests every file into the new one")
        p.add_argument("--pattern", action="append", metavar="GLOB",
                       help="include pattern (repeatable): replaces the include list")
        p.add_argument("--all-files", action="store_true", help="no include pattern: every file")
        p.add_argument("--ignore", action="append", metavar="GLOB",
                       help="ignore pattern (repeatable): replaces those added to the defaults")
        p.add_argument("--no-ignores", action="store_true",
                       help="none added to the default ignore list")
        p.add_argument("--default-ignores", action=argparse.BooleanOptionalAction,
                       help="keep (or drop) the default ignore list")
        p.add_argument("--recursive", action=argparse.BooleanOptionalAction,
                       help="walk subdirectories (or direct children only)")
        p.add_argument("--max-depth", type=_or_keyword(int, "unlimited"), metavar="N|unlimited",
                       help="as find's -maxdepth")
        p.add_argument("--interval", type=float, metavar="SECONDS", help="poll interval")
        p.add_argument("--settle", type=float, metavar="SECONDS",
                       help="defer files modified this recently")
        p.add_argument("--priority", action="append", metavar="GLOB=N",
                       help="priority rule (repeatable): replaces the rules")
        p.add_argument("--no-priority", action="store_true", help="no priority rule")
        p.add_argument("--max-file-size", type=_or_keyword(int, "none"), metavar="BYTES|none",
                       help="larger files are out of scope")
        p.add_argument("--gitignore", action=argparse.BooleanOptionalAction,
                       help="honour .gitignore files (or not)")
        p.add_argument("--follow-symlinks", action=argparse.BooleanOptionalAction,
                       help="follow symlinks that stay inside the root (or not)")
        p.add_argument("--check-stat", choices=("auto", "full", "minimal"),
                       help="stat fields compared")
        p.add_argument("--threads", type=_or_keyword(int, "auto"), metavar="N|auto",
                       help="directories listed at once")
        p.add_argument("--timeout", type=_or_keyword(float, "default"), metavar="SECONDS|default",
                       help="the scheduler abandons a scan running longer")
        p.add_argument("--enabled", action=argparse.BooleanOptionalAction,
                       help="scheduled scans on (or off)")
        p.add_argument("--auto-ingest", action=argparse.BooleanOptionalAction,
                       help="write queue rows (or keep only the snapshot current)")
        p.add_argument("--metadata", metavar="JSON", help="JSON object merged into queue metadata")

    if p := cmd("list", cmd_list, "list watches with their settings"):
        p.add_argument("--json", action="store_true", help="print one JSON document")

    if p := cmd("show", cmd_show, "show one watch: settings, statistics, last scan"):
        p.add_argument("watch_id", metavar="ID")
        p.add_argument("--json", action="store_true", help="print one JSON document")

    if p := cmd("remove", cmd_remove, "unregister a watch (its snapshot and statistics go too)"):
        p.add_argument("watch_id", metavar="ID")
        p.add_argument("--emit-deletes", action="store_true",
                       help="first queue a delete for every file in its snapshot")

    if p := cmd("enable", cmd_enable, "enable scheduled scans of a watch"):
        p.add_argument("watch_id", metavar="ID")
    if p := cmd("disable", cmd_disable, "disable scheduled scans of a watch"):
        p.add_argument("watch_id", metavar="ID")

    if p := cmd("reconcile", cmd_reconcile, "scan watches once and queue what changed"):
        p.add_argument("watch_ids", nargs="*", metavar="ID",
                       help="watches to scan, even disabled ones (default: all enabled)")
        p.add_argument("--path", metavar="P", help="only the watches containing P, and only "
                       "P's subtree")
        p.add_argument("--dry-run", action="store_true",
                       help="print the operations, write nothing")
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--allow-mass-delete", action="store_true",
                       help="let the scan delete even when the mass-delete guard would stop it")
        p.add_argument("--threads", type=int, metavar="N",
                       help="directories listed at once, instead of each watch's setting")
        p.add_argument("--wait", type=float, default=0.0, metavar="S",
                       help="wait up to S seconds for a watch another process is scanning "
                       "(default 0: skip it, exit 75)")
        p.add_argument("--timeout", type=float, metavar="S",
                       help="abandon a scan running longer and exit 1 (default: each watch's "
                       "--timeout, 600 s unless set; 0: no limit)")
        p.add_argument("--until-settled", type=float, default=0.0, metavar="S",
                       help="scan again, for up to S seconds, while files too recently modified "
                       "are deferred (the git hooks use it after a checkout)")

    if p := cmd("status", cmd_status, "last scan and counters of every watch; queue depth"):
        p.add_argument("--json", action="store_true", help="print one JSON document")

    if p := cmd("run", cmd_run, "the scheduler: scan every enabled watch whenever it is due"):
        p.add_argument("--json", action="store_true",
                       help="with --once: print one JSON document of the scans when done")
        p.add_argument("--once", action="store_true", help="scan every due watch once, then exit")
        p.add_argument("--jobs", type=int, default=4, metavar="N",
                       help="scans at the same time (default 4)")
        p.add_argument("--metrics-addr", metavar="HOST:PORT",
                       help="serve Prometheus metrics on http://HOST:PORT/metrics "
                       "(HOST defaults to 127.0.0.1)")

    if p := cmd("hook", cmd_hook, "install or remove git hooks that rescan a repository after "
                "checkout, merge and rewrite"):
        p.add_argument("action", choices=("install", "uninstall"))
        p.add_argument("repo", nargs="?", default=".", metavar="REPO",
                       help="the repository (default: the current directory)")

    if p := cmd("metrics", cmd_metrics, "Prometheus text exposition of the statistics"):
        p.add_argument("--textfile", metavar="PATH",
                       help="write it atomically to PATH (node_exporter's textfile collector)")
    if p := cmd("queue", cmd_queue, "the consumer side of the queue: list, stats, claim, "
                "complete, fail, retry, purge"):
        _queue_commands(p, common)
    return parser


def _queue_commands(queue: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=_Parser)
    sub.required = True

    def act(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    def owner(p: argparse.ArgumentParser) -> None:
        p.add_argument("--owner", metavar="O", help="consumer name held in lease_owner "
                       "(default: USER@HOST, the same for every shell command)")

    p = act("list", "rows in claim order")
    p.add_argument("--status", choices=QUEUE_STATUSES, help="only rows of this status")
    p.add_argument("--collection", metavar="C", help="only rows of this collection")
    p.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N rows (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = act("stats", "rows by status and operation, due rows, expired leases")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = act("claim", "take up to N due rows under a lease and print them")
    p.add_argument("n", type=int, metavar="N")
    p.add_argument("--lease", type=float, default=300.0, metavar="S",
                   help="seconds before an unfinished row may go to another consumer "
                   "(default 300)")
    p.add_argument("--collection", metavar="C", help="only rows of this collection")
    p.add_argument("--tenant", metavar="T", help="only rows of this tenant")
    owner(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p = act("complete", "delete rows this consumer has finished")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("queue_ids", nargs="+", metavar="ID")
    owner(p)
    p = act("fail", "record a failed attempt: pending again after a backoff, or failed")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("queue_id", metavar="ID")
    p.add_argument("--error", required=True, metavar="TEXT", help="what went wrong")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES, metavar="N",
                   help=f"the failure that marks the row failed (default {MAX_RETRIES})")
    owner(p)
    p = act("retry", "return failed rows to pending (default: all of them)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("queue_ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every failed row (the default)")
    p = act("purge", "delete every done or failed row")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--status", required=True, choices=PURGEABLE_STATUSES)


# -- commands ----------------------------------------------------------------------------

def _open(args: argparse.Namespace, layout: str | None = None, create: bool = False):
    """The store, with the configuration's watches applied."""
    return _open_configured(args, layout, create)[0]


def _open_configured(args: argparse.Namespace, layout: str | None = None,
                     create: bool = False):
    """(store, configuration or None), the configuration's watches applied. Only the
    commands that define work create a database (`create`, or a configuration that lists
    watches for `run`); the others refuse a missing one."""
    from .config import apply
    from .store import Store

    db, config = _resolve(args)
    if args.command == "run" and config is not None and config.watches:
        create = True
    store = Store.open(db, layout, create=create)
    if config is not None:
        apply(store, config)
    return store, config


def _print_json(doc: Any) -> None:
    import json

    print(json.dumps(doc, indent=2, sort_keys=False, default=str))


def cmd_init(args: argparse.Namespace) -> int:
    from .store import SCHEMA_VERSION

    store = _open(args, args.layout, create=True)
    with store.write():  # wqscan's own tables, in an adopted database too
        pass
    if args.json:
        _print_json({"database": store.path, "layout": store.layout.name,
                     "schema_version": SCHEMA_VERSION})
    elif not args.quiet:
        print(f"database {store.path} ready ({store.layout.name} layout, schema version "
              f"{SCHEMA_VERSION})")
    return EXIT_OK


def _priority_rules(items: list[str]) -> list[tuple[str, int]]:
    rules = []
    for item in items:
        glob, sep, n = item.rpartition("=")
        try:
            rules.append((glob, int(n)))
        except ValueError:
            sep = ""
        if not sep or not glob:
            raise UsageError(f"bad --priority {item!r}: expected GLOB=N")
    return rules


def _metadata(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError("bad --metadata: nested too deep") from None
    except ValueError as e:
        raise UsageError(f"bad --metadata: not JSON ({e})") from None


_NO_VALUE = object()  # what `--threads auto` and the like parse to


def _seconds(value: float, option: str) -> float:
    """A duration option: 0 or more, at most the ten years every duration is bounded by."""
    from .watches import MAX_SECONDS

    if not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{option} must be between 0 and {MAX_SECONDS}, not {value}")
    return value


def _or_keyword(kind: type, keyword: str) -> Callable[[str], Any]:
    """An argument type: a number, or `keyword` for the default (None)."""
    def parse(text: str) -> Any:
        return _NO_VALUE if text == keyword else kind(text)

    parse.__name__ = f"{kind.__name__} or {keyword!r}"
    return parse


def cmd_add(args: argparse.Namespace) -> int:
    from .watches import add_watch

    metadata = None if args.metadata is None else _metadata(args.metadata)
    watch = add_watch(
        _open(args, create=True), args.path, args.collection, watch_id=args.watch_id,
        patterns=args.pattern, ignores=args.ignore,
        default_ignores=not args.no_default_ignores, recursive=not args.no_recursive,
        max_depth=args.max_depth, interval=args.interval, settle=args.settle,
        priority_rules=_priority_rules(args.priority), max_file_size=args.max_file_size,
        use_gitignore=not args.no_gitignore, follow_symlinks=args.follow_symlinks,
        check_stat=args.check_stat, enabled=not args.disabled, metadata=metadata,
        threads=args.threads, timeout=args.timeout)
    if args.json:
        _print_json(watch.to_json())
    else:
        print(watch.watch_id)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    from .watches import set_watch

    changes: dict[str, Any] = {}
    for key, value in (("patterns", args.pattern), ("ignores", args.ignore),
                       ("priority_rules", args.priority)):
        if value is not None:
            changes[key] = _priority_rules(value) if key == "priority_rules" else value
    for flag, key, value in (("--all-files", "patterns", []), ("--no-ignores", "ignores", []),
                             ("--no-priority", "priority_rules", [])):
        if getattr(args, flag[2:].replace("-", "_")):
            if key in changes:
                raise UsageError(f"set: {flag} and the option it clears, not both")
            changes[key] = value
    for key, value in (("collection", args.collection), ("default_ignores", args.default_ignores),
                       ("recursive", args.recursive), ("max_depth", args.max_depth),
                       ("interval", args.interval), ("settle", args.settle),
                       ("max_file_size", args.max_file_size),
                       ("use_gitignore", args.gitignore),
                       ("follow_symlinks", args.follow_symlinks),
                       ("check_stat", args.check_stat), ("threads", args.threads),
                       ("timeout", args.timeout), ("enabled", args.enabled),
                       ("auto_ingest", args.auto_ingest)):
        if value is not None:
            changes[key] = None if value is _NO_VALUE else value
    if args.metadata is not None:
        changes["metadata"] = _metadata(args.metadata)
    if not changes:
        raise UsageError("set: nothing to change (see wqscan set --help)")
    watch = set_watch(_open(args), args.watch_id, **changes)
    if args.json:
        _print_json(watch.to_json())
    elif not args.quiet:
        print(f"changed {args.watch_id}: " + ", ".join(sorted(changes)))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from .status import status
    from .watches import list_watches

    store = _open(args)
    watches = list_watches(store)
    if args.json:
        _print_json([w.to_json() for w in watches])
        return EXIT_OK
    last = {w["watch_id"]: w for w in status(store)["watches"]}
    rows = [("ID", "ENABLED", "COLLECTION", "INTERVAL", "LAST SCAN", "PATH")]
    rows += [(printable(w.watch_id), "yes" if w.enabled else "no", printable(w.collection),
              f"{w.poll_interval_seconds:g}s", _last_scan(last[w.watch_id]),
              printable(w.path)) for w in watches]
    _print_table(rows)
    return EXIT_OK


def _last_scan(watch: dict[str, Any]) -> str:
    """When the last scan started and how it ended; "never" only when none was tried."""
    start = watch["last_scan_start"] or watch["last_scan"]
    return f"{start} ({watch['last_result'] or 'ok'})" if start else "never"


def cmd_show(args: argparse.Namespace) -> int:
    from .status import watch_status

    doc = watch_status(_open(args), args.watch_id)
    if args.json:
        _print_json(doc)
        return EXIT_OK
    from .text import watch_lines

    for line in watch_lines(doc):
        print(line)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from .watches import remove_watch

    queued = remove_watch(_open(args), args.watch_id, args.emit_deletes)
    if not args.quiet:
        extra = f"; queued {queued} deletes" if args.emit_deletes else ""
        print(f"removed {args.watch_id}{extra}")
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    return _toggle(args, True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _toggle(args, False)


def _toggle(args: argparse.Namespace, enabled: bool) -> int:
    from .watches import set_enabled

    set_enabled(_open(args), args.watch_id, enabled)
    if not args.quiet:
        print(f"{'enabled' if enabled else 'disabled'} {args.watch_id}")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from .reconcile import reconcile
    from .watchdog import Watchdog

    def warn(watch_id: str, rel: str, message: str) -> None:
        if not args.quiet and not args.json:
            if line is not None:
                line.clear()
            print(printable(f"wqscan: warning: {watch_id}: {rel or '.'}: {message}"),
                  file=sys.stderr)

    from .watches import MAX_THREADS

    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, not {args.threads}")
    line = _ProgressLine() if sys.stderr.isatty() and not args.quiet and not args.json \
        else None
    timeout = None if args.timeout is None else _seconds(args.timeout, "--timeout")
    until_settled = _seconds(args.until_settled, "--until-settled")
    store = _open(args)
    watchdog = Watchdog(store.path, timeout)
    try:
        reports = reconcile(store, args.watch_ids, args.path, dry_run=args.dry_run,
                            allow_mass_delete=args.allow_mass_delete, on_warning=warn,
                            threads=args.threads, wait=max(0.0, args.wait),
                            on_progress=line.update if line else None,
                            until_settled=until_settled, on_watch=watchdog.arm)
    finally:
        if line is not None:
            line.clear()
    if not reports and not args.quiet and not args.json:
        print("wqscan: no enabled watch to scan (wqscan add PATH --collection NAME adds one)",
              file=sys.stderr)
    if args.json:
        _print_json({"dry_run": args.dry_run, "watches": [r.to_json() for r in reports]})
    else:
        for r in reports:
            for op in r.operations:
                print(f"{op['operation']:7} {printable(op['path'])}")
            if not r.ok:
                print(printable(f"wqscan: error: {r.watch_id}: {r.reason}"), file=sys.stderr)
            elif not args.quiet:
                t = r.totals
                print(f"{r.watch_id}: {r.ingest} ingest, {r.update} update, {r.delete} delete, "
                      f"{t.deferred} deferred; {t.files} files in {t.dirs} dirs, "
                      f"{t.errors} warnings, {r.duration:.2f} s"
                      + (" (dry run)" if args.dry_run else ""))
    return exit_code(reports=reports)


def _size(n: float) -> str:
    """Bytes for a person: 512 B, 3.4 MB, 1.5 GB."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


class _ProgressLine:
    """One line on a terminal's stderr, rewritten in place while a long scan runs."""

    def __init__(self) -> None:
        import time

        self.clock = time.monotonic
        self.start = self.clock()
        self.shown = 0.0
        self.dirty = False

    def update(self, watch_id: str, files: int, dirs: int, ops: int, hashed: int) -> None:
        now = self.clock()
        if now - self.shown < 0.1:
            return
        self.shown = now
        rate = files / max(now - self.start, 1e-3)
        sys.stderr.write(f"\r\x1b[K{watch_id}: {files} files, {dirs} dirs, {ops} operations, "
                         f"{_size(hashed)} hashed, {rate:.0f} files/s")
        sys.stderr.flush()
        self.dirty = True

    def clear(self) -> None:
        if self.dirty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def cmd_status(args: argparse.Namespace) -> int:
    from .status import status

    doc = status(_open(args))
    if args.json:
        _print_json(doc)
        return EXIT_OK
    print(f"scanner: {doc['scanner']}   database: {doc['database']}   "
          f"layout: {doc['layout']}")
    rows = [("ID", "ENABLED", "LAST SCAN", "RESULT", "DURATION", "FILES", "OPS", "FAILURES",
             "CIRCUIT")]
    for w in doc["watches"]:
        last = w["last"]
        ops = sum(last[k] or 0 for k in ("ingest", "update", "delete"))
        dur = w["last_duration_seconds"]
        rows.append((w["watch_id"], "yes" if w["enabled"] else "no",
                     w["last_scan_start"] or "never", w["last_result"] or "-",
                     f"{dur:.2f}s" if dur is not None else "-",
                     str(last["files"] if last["files"] is not None else "-"), str(ops),
                     str(w["consecutive_failures"]), w["circuit"]))
    _print_table(rows)
    for w in doc["watches"]:
        if w["last_result"] == "failed":
            print(printable(f"{w['watch_id']}: {w['last_reason']}"))
    depth = doc["queue"]
    print("queue: " + (", ".join(f"{st} {op} {n}" for st, ops in depth.items()
                                 for op, n in ops.items()) or "empty"))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .scheduler import Scheduler

    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if args.json and not args.once:
        raise UsageError("run: --json needs --once")
    address = None
    if args.metrics_addr:  # checked before the database is looked at
        host, sep, port = args.metrics_addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"bad --metrics-addr {args.metrics_addr!r}: expected HOST:PORT "
                             "with a port from 1 to 65535")
        address = (host or "127.0.0.1", int(port))
    store, config = _open_configured(args)  # create (a file that lists watches) or refuse
    db = store.path
    store.close()
    server = None
    if address is not None:
        from .metrics import serve

        try:
            server = serve(db, *address)
        except OSError as e:
            raise UsageError(f"cannot serve metrics on {args.metrics_addr}: {e.strerror}") \
                from None

    def log(line: str) -> None:
        if not args.quiet:
            from .clock import now_iso

            print(printable(f"wqscan: {now_iso()} {line}"), file=sys.stderr, flush=True)

    reload = None
    if config is not None:
        def reload(store) -> None:  # on SIGHUP: read the file again, keep the old on error
            from .config import apply, load

            try:
                apply(store, load(config.path))
                log(f"configuration {config.path} loaded")
            except WqscanError as e:
                log(f"configuration not reloaded: {e}")

    scheduler = Scheduler(db, jobs=args.jobs, once=args.once, log=log, reload=reload)
    try:
        code = scheduler.run()
    finally:
        if server is not None:
            server.shutdown()
    if args.json:
        _print_json({"scans": scheduler.outcomes,
                     "failed": any(o["result"] == "failed" for o in scheduler.outcomes)})
    return code


def cmd_hook(args: argparse.Namespace) -> int:
    from . import hooks

    if args.action == "install":
        from .watches import containing, list_watches

        top, _ = hooks.locate(args.repo)  # a repository, before the database is looked at
        with _open(args) as store:  # the database the hooks will use exists and is wqscan's
            changed = hooks.install(args.repo, store.path)
            if not containing((w for w in list_watches(store) if w.enabled), top) \
                    and not args.quiet:
                print(printable(f"wqscan: warning: no enabled watch contains {top}, so the "
                                 "hooks rescan nothing until one does (wqscan add "
                                 f"{top} --collection NAME)"), file=sys.stderr)
    else:
        changed = hooks.uninstall(args.repo)
    if not args.quiet:
        verb = "installed" if args.action == "install" else "removed"
        for path in changed:
            print(f"{verb} {path}")
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import exposition, write_textfile

    text = exposition(_open(args))
    if args.textfile:
        try:
            write_textfile(args.textfile, text)
        except OSError as e:
            raise UsageError(f"cannot write {args.textfile}: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    store = _open(args)
    views = {"list": _queue_list, "stats": _queue_stats}
    if args.queue_command in views:
        return views[args.queue_command](store, args)
    from .consumer import QueueClient

    client = QueueClient(store, owner=getattr(args, "owner", None) or _shell_owner(),
                         max_retries=getattr(args, "max_retries", MAX_RETRIES))
    actions = {"claim": _queue_claim, "complete": _queue_complete, "fail": _queue_fail,
               "retry": _queue_retry, "purge": _queue_purge}
    return actions[args.queue_command](client, args)


def _shell_owner() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _queue_list(store, args: argparse.Namespace) -> int:
    from . import queue_info
    from .consumer import QueueRow

    rows = queue_info.rows(store, args.status, args.limit or None, args.collection)
    if store.queue.claims:
        rows = [QueueRow.from_db(r).to_json() for r in rows]
    if args.json:
        _print_json(rows)
    elif rows:
        _print_table(_row_table(rows, store.queue.claims))
    return EXIT_OK


def _row_table(rows: list[dict[str, Any]], claims: bool) -> list[tuple[str, ...]]:
    """`queue list` as text: the wqscan layout's ids, statuses and leases, or the
    workspace-qdrant-mcp layout's rows keyed by path."""
    if claims:
        table = [("ID", "STATUS", "OPERATION", "PRIORITY", "RETRIES", "SCHEDULED", "OWNER",
                  "COLLECTION", "PATH")]
        return table + [(r["queue_id"], r["status"], r["operation"], str(r["priority"]),
                         str(r["retry_count"]), r["scheduled_at"],
                         printable(r["lease_owner"] or "-"), printable(r["collection_name"]),
                         printable(r["file_absolute_path"])) for r in rows]
    table = [("OPERATION", "PRIORITY", "RETRIES", "QUEUED", "COLLECTION", "PATH")]
    return table + [(r["operation"], str(r["priority"]), str(r.get("retry_count", "-")),
                     str(r["queued_timestamp"]), printable(r["collection_name"]),
                     printable(r["file_absolute_path"])) for r in rows]


def _queue_stats(store, args: argparse.Namespace) -> int:
    from . import queue_info

    doc = queue_info.stats(store)
    if args.json:
        _print_json(doc)
        return EXIT_OK
    for status, n in doc["by_status"].items():
        ops = ", ".join(f"{op} {k}" for op, k in doc["by_operation"][status].items())
        print(f"{status + ':':13}{n}" + (f" ({ops})" if ops else ""))
    print(f"{'due now:':13}{doc['due']}; later (backoff): {doc['scheduled_later']}; "
          f"expired leases: {doc['expired_leases']}")
    print(f"{'oldest:':13}{doc['oldest_pending'] or '-'}")
    return EXIT_OK


def _queue_claim(client, args: argparse.Namespace) -> int:
    rows = client.claim(args.n, args.lease, args.collection, args.tenant)
    if args.json:
        _print_json([r.to_json() for r in rows])
    else:
        for r in rows:
            print(f"{r.queue_id}\t{r.operation}\t{printable(r.file_absolute_path)}")
    return EXIT_OK


def _queue_complete(client, args: argparse.Namespace) -> int:
    from .errors import LeaseLost

    done, lost = [], []
    for queue_id in dict.fromkeys(args.queue_ids):
        try:
            client.complete(queue_id)
            done.append(queue_id)
        except LeaseLost as e:
            if not args.json:
                print(printable(f"wqscan: error: {e}"), file=sys.stderr)
            lost.append({"queue_id": queue_id, "error": str(e)})
    if args.json:
        _print_json({"completed": done, "lost": lost})
    elif not args.quiet:
        print(f"completed {len(done)}")
    return EXIT_FAILED if lost else EXIT_OK


def _queue_fail(client, args: argparse.Namespace) -> int:
    row = client.fail(args.queue_id, args.error)
    if args.json:
        _print_json(row.to_json() if row is not None else None)
    elif not args.quiet:
        if row is None:
            print(f"{args.queue_id}: cancelled out by a newer pending row of the same file")
        elif row.status == "failed":
            print(f"{row.queue_id}: failed after {row.retry_count} attempt"
                  + ("s" if row.retry_count != 1 else ""))
        else:
            print(f"{row.queue_id}: pending again at {row.scheduled_at} "
                  f"(attempt {row.retry_count} of {client.max_retries} failed)")
    return EXIT_OK


def _queue_retry(client, args: argparse.Namespace) -> int:
    if args.all and args.queue_ids:
        raise UsageError("queue retry: give IDs or --all, not both")
    n = client.retry(args.queue_ids or None)
    if args.json:
        _print_json({"returned": n})
    elif not args.quiet:
        print(f"returned {n} failed rows to pending")
    return EXIT_OK


def _queue_purge(client, args: argparse.Namespace) -> int:
    n = client.purge(args.status)
    if args.json:
        _print_json({"purged": n, "status": args.status})
    elif not args.quiet:
        print(f"purged {n} {args.status} rows")
    return EXIT_OK


def _print_table(rows: list[tuple[str, ...]]) -> None:
    for line in table(rows):
        print(line)


def _checked_argv(argv: list[str] | None) -> list[str]:
    """The arguments, refusing one that is not valid UTF-8 (the database stores text)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {i} is not valid UTF-8: "
                             f"{arg.encode('utf-8', 'surrogateescape')!r}") from None
    return argv


def _command_of(argv: list[str]) -> str | None:
    """The command name the arguments give, when it is plain to see (else None: the whole
    parser is built and argparse decides)."""
    valued = ("--db", "--config")
    args = iter(argv)
    for arg in args:
        if arg == "--" or arg == "-h" or arg.startswith("--h"):
            return None
        if arg.startswith("-"):
            if "=" not in arg and len(arg) > 2 and any(v.startswith(arg) for v in valued):
                next(args, None)
            continue
        return arg if arg in COMMAND_NAMES else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wqscan` script; returns the exit code."""
    raw = argv if argv is not None else sys.argv[1:]
    verbose = "-v" in raw or "--verbose" in raw
    try:
        argv = _checked_argv(argv)
        try:
            args = build_parser(_command_of(argv)).parse_args(argv)
        except _VersionAsked:
            return _version(argv)
        for option in ("db", "config", "textfile", "metrics_addr"):
            if getattr(args, option, None) == "":
                raise UsageError(f"--{option.replace('_', '-')} must not be empty")
        return args.func(args)
    except KeyboardInterrupt as e:
        print("wqscan: interrupted", file=sys.stderr)
        return exit_code(e)
    except BrokenPipeError as e:
        return exit_code(e)
    except Exception as e:  # one line; a bug or an unexpected OS/SQLite error says its kind
        if verbose:
            import traceback

            traceback.print_exc()
        text = str(e) if isinstance(e, WqscanError) else \
            f"{type(e).__name__}: {e} (-v shows the traceback)"
        print(printable(f"wqscan: error: {text}"), file=sys.stderr)
        return exit_code(e)
