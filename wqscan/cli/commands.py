"""The commands, listed once: each one's name, help, the function adding its arguments and
the function running it. The parser, the dispatch and the test that every command is
documented derive from it."""
from __future__ import annotations

import argparse
from importlib import import_module
from typing import Callable, NamedTuple

from . import arguments as a
from .arguments import LAYOUT_NAMES, Parser

__all__ = ["COMMANDS", "COMMAND_NAMES", "LAYOUT_NAMES", "build_parser", "command_of",
           "handler"]


class Command(NamedTuple):
    """One command: `run` names its handler as "module:function" of this package, imported
    only when that command runs (start-up time)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]
    run: str


COMMANDS: tuple[Command, ...] = (
    Command("init", "create or migrate the database (idempotent)", a.init_args,
            "watch_commands:cmd_init"),
    Command("add", "register a directory tree as a watch and print its id", a.add_args,
            "watch_commands:cmd_add"),
    Command("set", "change settings of a watch, keeping its snapshot: the next scan queues "
            "exactly the files that enter or leave its scope", a.set_args,
            "watch_commands:cmd_set"),
    Command("list", "list watches with their settings", a.list_args, "watch_commands:cmd_list"),
    Command("show", "show one watch: settings, statistics, last scan", a.show_args,
            "watch_commands:cmd_show"),
    Command("remove", "unregister a watch (its snapshot and statistics go too)", a.remove_args,
            "watch_commands:cmd_remove"),
    Command("enable", "enable scheduled scans of a watch", a.enable_args,
            "watch_commands:cmd_enable"),
    Command("disable", "disable scheduled scans of a watch", a.disable_args,
            "watch_commands:cmd_disable"),
    Command("reconcile", "scan watches once and queue what changed", a.reconcile_args,
            "scan_commands:cmd_reconcile"),
    Command("status", "last scan and counters of every watch; queue depth", a.status_args,
            "scan_commands:cmd_status"),
    Command("run", "the scheduler: scan every enabled watch whenever it is due", a.run_args,
            "scan_commands:cmd_run"),
    Command("hook", "install or remove git hooks that rescan a repository after checkout, "
            "merge and rewrite", a.hook_args, "scan_commands:cmd_hook"),
    Command("metrics", "Prometheus text exposition of the statistics", a.metrics_args,
            "scan_commands:cmd_metrics"),
    Command("queue", "the consumer side of the queue: list, stats, claim, complete, fail, "
            "retry, purge", a.queue_args, "queue_commands:cmd_queue"),
)
COMMAND_NAMES = tuple(c.name for c in COMMANDS)


def handler(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command `name`."""
    run = next(c.run for c in COMMANDS if c.name == name)
    module, _, function = run.partition(":")
    return getattr(import_module(f"{__package__}.{module}"), function)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, of that command alone, which is all a run
    needs and a quarter of the start-up time of a scan that finds nothing to do."""
    parser = Parser(prog="wqscan", description="Keep an ingestion queue (an SQLite file, or "
                    "PostgreSQL) in step with directory trees by polling.",
                    all_options=all_options)
    a.global_options(parser, top=True)
    parser.add_argument("--version", action=a.Version, nargs=0,
                        help="print the version and the active scanner, then exit")
    common = Parser(add_help=False)
    a.global_options(common, top=False)
    common.add_argument("--version", action=a.Version, nargs=0, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for c in COMMANDS:
        if only is None or c.name == only:
            c.arguments(sub.add_parser(c.name, parents=[common], help=c.help,
                                       description=c.help, all_options=all_options), common)
    return parser


def all_options() -> set[str]:
    """Every option string of every command, for the hint of a misspelt one."""
    found: set[str] = set()
    todo: list[argparse.ArgumentParser] = [build_parser()]
    while todo:
        for action in todo.pop()._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


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
