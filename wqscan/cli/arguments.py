"""The command line's arguments: one parser per command, built only for the command that
runs; its errors are UsageErrors naming the command and the nearest valid option."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn

from ..errors import UsageError
from ..model import MAX_RETRIES, PURGEABLE_STATUSES, QUEUE_STATUSES
from ..settings import SETTINGS, Setting, parse_size

LAYOUT_NAMES = ("wqscan", "workspace-qdrant-mcp")  # as store.LAYOUTS, without importing it


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors (one line, exit code 2), naming the
    command (not the program again) and the nearest option or choice to a misspelt one."""

    def __init__(self, *args: Any, all_options: Callable[[], set[str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.all_options = all_options  # every command's options, for the hint of an error

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes one per add_argument and, without a width, imports shutil for it
        return self.formatter_class(prog=self.prog, width=_columns() - 2)

    def error(self, message: str) -> NoReturn:
        import difflib

        hint = None
        known = self.all_options() if self.all_options else set()
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                option = word.split("=")[0]
                if option in known:  # another command's option: no near miss
                    hint = f"{option} is not an option of this command; see --help"
                    break
                close = difflib.get_close_matches(option, sorted(known), 1)
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


class Version(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        raise VersionAsked


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _priority_rule(item: str) -> tuple[str, int]:
    """`GLOB=N`, as --priority takes it."""
    glob, sep, n = item.rpartition("=")
    try:
        number = int(n)
    except ValueError:
        sep = ""
    if not sep or not glob:
        raise UsageError(f"bad --priority '{item}': expected GLOB=N")
    return glob, number


def _metadata(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError("bad --metadata: nested too deep") from None
    except ValueError as e:
        raise UsageError(f"bad --metadata: not JSON ({e})") from None


_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "seconds": float, "size": _size,
                                           "rules": _priority_rule, "json": _metadata}


def _or_keyword(kind: Callable[[str], Any], keyword: str) -> Callable[[str], Any]:
    """An argument type: a number, or `keyword` for the default (None)."""
    def parse(text: str) -> Any:
        return None if text == keyword else kind(text)

    parse.__name__ = f"{kind.__name__} or {keyword!r}"
    return parse


def global_options(p: argparse.ArgumentParser, top: bool) -> None:
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


def init_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--layout", choices=LAYOUT_NAMES,
                   help="queue layout of a new database (default wqscan); an existing "
                   "database keeps the layout it has")


def add_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("path", help="root of the tree")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a path that does not exist yet (a share not mounted): its "
                   "scans fail until it is there")
    p.add_argument("--id", dest="watch_id", help="watch id (default: derived from the path)")
    for s in SETTINGS:
        flag, text = s.add_flag or s.flag, s.add_help or s.help
        if flag == "-":
            continue
        if s.kind == "bool":
            p.add_argument(flag, dest=s.name, action="store_false" if s.default else
                           "store_true", help=text)
        elif s.kind in ("globs", "rules"):
            p.add_argument(flag, dest=s.name, action="append", default=[],
                           type=_TYPES.get(s.kind), metavar=s.metavar, help=text)
        else:
            p.add_argument(flag, dest=s.name, required=s.name == "collection",
                           **_valued(s, s.default), help=text)


def set_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    for s in SETTINGS:  # only the options given reach the namespace
        if s.kind == "bool":
            p.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=s.help)
        elif s.kind in ("globs", "rules"):
            p.add_argument(s.flag, dest=s.name, action="append", type=_TYPES.get(s.kind),
                           default=argparse.SUPPRESS, metavar=s.metavar, help=s.help)
            p.add_argument(s.clear_flag, dest=f"clear_{s.name}", action="store_true",
                           help=s.clear_help)
        else:
            p.add_argument(s.flag, dest=s.name, **_valued(s, argparse.SUPPRESS, s.unset),
                           help=s.help)


def _valued(s: Setting, default: Any, unset: str = "") -> dict[str, Any]:
    """The argparse keywords of an option that takes a value: its type (or `unset`, the
    word for no value), choices and metavar."""
    if s.kind == "choice":
        return {"choices": s.choices, "default": default}
    kind = _TYPES.get(s.kind)
    if unset and kind is not None:
        return {"type": _or_keyword(kind, unset), "metavar": f"{s.metavar}|{unset}",
                "default": default}
    return {"type": kind, "metavar": s.metavar, "default": default}


def list_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def show_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def remove_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")
    p.add_argument("--emit-deletes", action="store_true",
                   help="first queue a delete for every file in its snapshot")


def enable_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")


def disable_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("watch_id", metavar="ID")


def reconcile_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
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


def status_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="with --once: print one JSON document of the scans when done")
    p.add_argument("--once", action="store_true", help="scan every due watch once, then exit")
    p.add_argument("--jobs", type=int, default=4, metavar="N",
                   help="scans at the same time (default 4)")
    p.add_argument("--metrics-addr", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics "
                   "(HOST defaults to 127.0.0.1)")


def hook_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("install", "uninstall"))
    p.add_argument("repo", nargs="?", default=".", metavar="REPO",
                   help="the repository (default: the current directory)")


def metrics_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--textfile", metavar="PATH",
                   help="write it atomically to PATH (node_exporter's textfile collector)")


def queue_args(queue: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=Parser)
    sub.required = True

    def act(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text,
                              all_options=getattr(queue, "all_options", None))

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
