"""The command line's arguments: one parser per command, built only for the command that
runs; its errors are UsageErrors naming the command and the nearest valid option."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn

from ..errors import UsageError
from ..model import MAX_RETRIES, PURGEABLE_STATUSES, QUEUE_STATUSES, parse_size

LAYOUT_NAMES = ("wqscan", "workspace-qdrant-mcp")  # as store.LAYOUTS, without importing it


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors (one line, exit code 2), naming the
    command (not the program again) and the nearest option or choice to a misspelt one."""

    known: set[str] = set()  # every option string of every parser built

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        Parser.known.update(action.option_strings)
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
                option = word.split("=")[0]
                if option in self.known:  # another command's option: no near miss
                    hint = f"{option} is not an option of this command; see --help"
                    break
                close = difflib.get_close_matches(option, sorted(self.known), 1)
                if word.startswith("-") and close:
                    hint = f"did you mean {close[0]}?"
                    break
        elif "invalid choice:" in message and "(choose from " in message:
            word = message.split("invalid choice:", 1)[1].split("(choose from", 1)[0]
            choices = message.rsplit("(choose from ", 1)[1].rstrip(")").split(", ")
            close = difflib.get_close_matches(word.strip(" '"), [c.strip("'") for c in choices],
                                              1)
            hint = f"did you mean {close[0]}?" if close else None
        command = self.prog.removeprefix("wqscan").strip()
        text = f"{command}: {message}" if command else message
        raise UsageError(text + (f" ({hint})" if hint else ""))


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


class VersionAsked(Exception):
    """--version was given, wherever it stands: main() answers it."""


class _Version(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        raise VersionAsked


NO_VALUE = object()  # what `--threads auto` and the like parse to


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _or_keyword(kind: Callable[[str], Any], keyword: str) -> Callable[[str], Any]:
    """An argument type: a number, or `keyword` for the default (None)."""
    def parse(text: str) -> Any:
        return NO_VALUE if text == keyword else kind(text)

    parse.__name__ = f"{kind.__name__} or {keyword!r}"
    return parse


def _global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """--db, -q, -v: accepted before and after the command name."""
    d = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--db", metavar="PATH|URL", help="database file, or postgresql://USER@HOST"
                   "/DB (default: $WQSCAN_DB, else $XDG_DATA_HOME/wqscan/wqscan.db)",
                   **({"default": None} if top else d))
    p.add_argument("--pg-schema", metavar="NAME", help="PostgreSQL schema of wqscan's tables "
                   "(default: $WQSCAN_PG_SCHEMA, else wqscan)", **({"default": None} if top else d))
    p.add_argument("--allow-network-db", action="store_true", help="use a database file on an "
                   "NFS, SMB or FUSE mount (unsafe for SQLite)", **d)
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: "
                   "$WQSCAN_CONFIG)", **({"default": None} if top else d))
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only", **d)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show tracebacks and more detail", **d)


def _init_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--layout", choices=LAYOUT_NAMES,
                   help="queue layout of a new database (default wqscan); an existing "
                   "database keeps the layout it has")


def _add_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("path", help="root of the tree")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a path that does not exist yet (a share not mounted): its "
                   "scans fail until it is there")
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
    p.add_argument("--max-file-size", type=_size, metavar="SIZE",
                   help="larger files are out of scope (bytes, or 10MB, 1.5G, ...)")
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


def _set_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
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
    p.add_argument("--max-depth", type=_or_keyword(int, "unlimited"), metavar="N|unlimited",
                   help="as find's -maxdepth")
    p.add_argument("--interval", type=float, metavar="SECONDS", help="poll interval")
    p.add_argument("--settle", type=float, metavar="SECONDS",
                   help="defer files modified this recently")
    p.add_argument("--priority", action="append", metavar="GLOB=N",
                   help="priority rule (repeatable): replaces the rules")
    p.add_argument("--no-priority", action="store_true", help="no priority rule")
    p.add_argument("--max-file-size", type=_or_keyword(_size, "none"),
                   metavar="SIZE|none", help="larger files are out of scope (bytes, or 10MB, "
                   "1.5G, ...)")
    p.add_argument("--check-stat", choices=("auto", "full", "minimal"),
                   help="stat fields compared")
    p.add_argument("--threads", type=_or_keyword(int, "auto"), metavar="N|auto",
                   help="directories listed at once")
    p.add_argument("--timeout", type=_or_keyword(float, "default"), metavar="SECONDS|default",
                   help="the scheduler abandons a scan running longer")
    p.add_argument("--metadata", metavar="JSON", help="JSON object merged into queue metadata")
    for flag, text in (  # each with its --no- form
            ("--default-ignores", "keep (or drop) the default ignore list"),
            ("--recursive", "walk subdirectories (or direct children only)"),
            ("--gitignore", "honour .gitignore files (or not)"),
            ("--follow-symlinks", "follow symlinks that stay inside the root (or not)"),
            ("--enabled", "scheduled scans on (or off)"),
            ("--auto-ingest", "write queue rows (or keep only the snapshot current)")):
        p.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)


def _list_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _show_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _remove_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")
    p.add_argument("--emit-deletes", action="store_true",
                   help="first queue a delete for every file in its snapshot")


def _enable_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")


def _disable_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")


def _reconcile_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
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
    p.add_argument("--log", metavar="FILE", help="append this run's output to FILE (moved "
                   "to FILE.1 first when it has grown past 1 MiB)")
    p.add_argument("--hook", metavar="NAME", help="record this run as started by git hook "
                   "NAME (the hooks `wqscan hook install` writes pass it; `status` shows it)")


def _status_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _run_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="with --once: print one JSON document of the scans when done")
    p.add_argument("--once", action="store_true", help="scan every due watch once, then exit")
    p.add_argument("--jobs", type=int, default=4, metavar="N",
                   help="scans at the same time (default 4)")
    p.add_argument("--metrics-addr", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics "
                   "(HOST defaults to 127.0.0.1)")


def _hook_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("install", "uninstall"))
    p.add_argument("repo", nargs="?", default=".", metavar="REPO",
                   help="the repository (default: the current directory)")


def _metrics_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--textfile", metavar="PATH",
                   help="write it atomically to PATH (node_exporter's textfile collector)")


def _queue_args(queue: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=Parser)
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
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="when no row is due, wait up to S seconds for one (PostgreSQL: woken "
                   "by the reconcile that queues it)")
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


#: name, help, and the function adding its arguments (given the options every command has)
COMMANDS: tuple[tuple[str, str, Callable[[Parser, Parser], None]], ...] = (
    ("init", "create or migrate the database (idempotent)", _init_args),
    ("add", "register a directory tree as a watch and print its id", _add_args),
    ("set", "change settings of a watch, keeping its snapshot: the next scan queues exactly "
     "the files that enter or leave its scope", _set_args),
    ("list", "list watches with their settings", _list_args),
    ("show", "show one watch: settings, statistics, last scan", _show_args),
    ("remove", "unregister a watch (its snapshot and statistics go too)", _remove_args),
    ("enable", "enable scheduled scans of a watch", _enable_args),
    ("disable", "disable scheduled scans of a watch", _disable_args),
    ("reconcile", "scan watches once and queue what changed", _reconcile_args),
    ("status", "last scan and counters of every watch; queue depth", _status_args),
    ("run", "the scheduler: scan every enabled watch whenever it is due", _run_args),
    ("hook", "install or remove git hooks that rescan a repository after checkout, merge "
     "and rewrite", _hook_args),
    ("metrics", "Prometheus text exposition of the statistics", _metrics_args),
    ("queue", "the consumer side of the queue: list, stats, claim, complete, fail, retry, "
     "purge", _queue_args),
)
COMMAND_NAMES = tuple(name for name, _, _ in COMMANDS)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, of that command alone, which is all a run
    needs and a quarter of the start-up time of a scan that finds nothing to do."""
    parser = Parser(prog="wqscan", description="Keep an SQLite ingestion queue in step with "
                     "directory trees by polling.")
    _global_options(parser, top=True)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version and the active scanner, then exit")
    common = Parser(add_help=False)
    _global_options(common, top=False)
    common.add_argument("--version", action=_Version, nargs=0, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, text, arguments in COMMANDS:
        if only is None or name == only:
            arguments(sub.add_parser(name, parents=[common], help=text, description=text),
                      common)
    return parser


def command_of(argv: list[str]) -> str | None:
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
