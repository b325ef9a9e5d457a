"""The `wqscan` entry point: parse, run the command, and turn every error into one line
and an exit code, here and nowhere else."""
from __future__ import annotations

import gc
import sys
from typing import Any

from .. import __version__
from ..errors import EXIT_OK, Terminated, UsageError, WqscanError, exit_code
from .arguments import Parser, VersionAsked
from .commands import LAYOUT_NAMES, build_parser, command_of, handler
from .common import resolve
from .text import printable


def _version(argv: list[str]) -> int:
    """Print the version, the active scanner, and what the database the arguments (or
    the environment) name holds; creates nothing."""
    from .. import _scan
    from ..store import Store

    print(f"wqscan {__version__} (scanner: {_scan.BACKEND})")
    pre = Parser(add_help=False)
    pre.add_argument("--db")
    pre.add_argument("--pg-schema")
    pre.add_argument("--config")
    target, _ = resolve(pre.parse_known_args(argv)[0])
    held = Store.peek(target)
    print(f"database: {target.engine} {target.name} "
          f"({held + ' layout' if held in LAYOUT_NAMES else held})")
    return EXIT_OK


def _checked_argv(argv: list[str] | None) -> list[str]:
    """The arguments, refusing one that is not valid UTF-8 (the database stores text)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {i} is not valid UTF-8: {arg}") from None
    return argv


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `wqscan` script; returns the exit code."""
    import signal

    raw = argv if argv is not None else sys.argv[1:]
    verbose = "-v" in raw or "--verbose" in raw
    try:  # SIGTERM unwinds as Ctrl-C does (`run` has handlers of its own)
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: a caller's thread keeps the caller's ways
        previous = None
    try:
        return _main(argv, verbose)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None, verbose: bool) -> int:
    own_process = argv is None  # the `wqscan` script, not a caller in its own process
    try:
        argv = _checked_argv(argv)
        try:
            args = build_parser(command_of(argv)).parse_args(argv)
        except VersionAsked:
            return _version(argv)
        for option in ("db", "config", "textfile", "metrics_addr"):
            if getattr(args, option, None) == "":
                raise UsageError(f"--{option.replace('_', '-')} must not be empty")
        if own_process:  # what start-up made lives to the end: the collector need not go
            gc.freeze()  # through it again at each collection of a walk (docs/performance.md)
        return handler(args.command)(args)
    except KeyboardInterrupt as e:
        print(f"wqscan: {'terminated' if isinstance(e, Terminated) else 'interrupted'}",
              file=sys.stderr)
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
