"""The `wqscan` command line: parse, call the API, format. Errors become one line and an
exit code here and nowhere else."""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import EXIT_OK, Terminated, UsageError, WqscanError, exit_code
from .arguments import (
    COMMAND_NAMES,
    LAYOUT_NAMES,
    NO_VALUE,
    Parser,
    VersionAsked,
    build_parser,
    command_of,
)
from .text import ProgressLine, printable, table

if TYPE_CHECKING:
    from ..queue.writes import Enqueued

__all__ = ["main", "build_parser", "command_of", "COMMAND_NAMES"]


def _resolve(args: argparse.Namespace):
    """The database (a Target) and the loaded configuration (or None): --db, then
    $WQSCAN_DB, then the configuration's `database:`, then the default file."""
    from ..store import DEFAULT_PG_SCHEMA, Target
    from ..watches.config import config_path, load
    from .paths import default_db

    path = config_path(args.config)
    config = load(path) if path else None
    db = args.db or os.environ.get("WQSCAN_DB") or (config.database if config else None) \
        or default_db()
    target = Target(db, getattr(args, "pg_schema", None) or os.environ.get("WQSCAN_PG_SCHEMA")
                    or DEFAULT_PG_SCHEMA, bool(getattr(args, "allow_network_db", False)))
    if not target.is_pg:
        target = target._replace(db=os.path.expanduser(db))
    return target, config


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
    target, _ = _resolve(pre.parse_known_args(argv)[0])
    held = Store.peek(target)
    print(f"database: {target.engine} {target.name} "
          f"({held + ' layout' if held in LAYOUT_NAMES else held})")
    return EXIT_OK


# -- commands ----------------------------------------------------------------------------

def open_store(args: argparse.Namespace, layout: str | None = None, create: bool = False):
    """The store, with the configuration's watches applied."""
    return open_configured(args, layout, create)[0]


def open_configured(args: argparse.Namespace, layout: str | None = None,
                     create: bool = False):
    """(store, configuration or None), the configuration's watches applied. Only what
    defines work creates a database: the commands that do (`create`), and a configuration
    that lists watches (the cron form `wqscan --config F reconcile` on a new machine);
    otherwise a missing database is refused (a mistyped $WQSCAN_DB is not an empty
    queue)."""
    from ..store import Store
    from ..watches.config import apply

    target, config = _resolve(args)
    if config is not None and config.watches:
        create = True
    store = Store.open(target, layout, create=create)
    if config is not None:
        apply(store, config)
    return store, config


def print_json(doc: Any) -> None:
    import json

    print(json.dumps(doc, indent=2, sort_keys=False, default=str))


def cmd_init(args: argparse.Namespace) -> int:
    from ..store import SCHEMA_VERSION

    with open_store(args, args.layout, create=True) as store, store.write():
        pass  # wqscan's own tables, in an adopted database too
    if args.json:
        print_json({"database": store.path, "layout": store.layout.name,
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
            raise UsageError(f"bad --priority '{item}': expected GLOB=N")
    return rules


def _metadata(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError("bad --metadata: nested too deep") from None
    except ValueError as e:
        raise UsageError(f"bad --metadata: not JSON ({e})") from None


def _seconds(value: float, option: str) -> float:
    """A duration option: 0 or more, at most the ten years every duration is bounded by."""
    from ..watches import MAX_SECONDS

    if not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{option} must be between 0 and {MAX_SECONDS}, not {value}")
    return value


def cmd_add(args: argparse.Namespace) -> int:
    from ..watches import add_watch

    metadata = None if args.metadata is None else _metadata(args.metadata)
    with open_store(args, create=True) as store:
        watch = add_watch(
            store, args.path, args.collection, watch_id=args.watch_id,
            patterns=args.pattern, ignores=args.ignore,
            default_ignores=not args.no_default_ignores, recursive=not args.no_recursive,
            max_depth=args.max_depth, interval=args.interval, settle=args.settle,
            priority_rules=_priority_rules(args.priority), max_file_size=args.max_file_size,
            use_gitignore=not args.no_gitignore, follow_symlinks=args.follow_symlinks,
            check_stat=args.check_stat, enabled=not args.disabled, metadata=metadata,
            threads=args.threads, timeout=args.timeout, must_exist=not args.allow_missing)
    if args.json:
        print_json(watch.to_json())
    else:
        print(watch.watch_id)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    from ..watches import set_watch

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
            changes[key] = None if value is NO_VALUE else value
    if args.metadata is not None:
        changes["metadata"] = _metadata(args.metadata)
    if not changes:
        raise UsageError("set: nothing to change (see wqscan set --help)")
    with open_store(args) as store:
        edit = set_watch(store, args.watch_id, **changes)
    if args.json:
        print_json(edit.watch.to_json())
    elif not args.quiet and not edit.changed:
        print(f"nothing changed: {args.watch_id} already has those settings")
    elif not args.quiet:
        print(printable(f"changed {args.watch_id}: " + ", ".join(edit.changed)
                        + (f"; {_deletes(edit.deletes)} into the old collection "
                           f"{edit.old_collection}" if "collection" in edit.changed else "")))
    return EXIT_OK


def _deletes(done: "Enqueued") -> str:
    """What queued deletes did, in words: '3 deletes queued, 1 pending ingest cancelled'."""
    queued = done.changed - done.cancelled
    text = f"{queued} delete{'s' if queued != 1 else ''} queued"
    if done.cancelled:
        text += (f", {done.cancelled} pending ingest{'s' if done.cancelled != 1 else ''} "
                 "cancelled (never consumed)")
    return text


def cmd_list(args: argparse.Namespace) -> int:
    from ..service.status import status
    from ..watches import list_watches

    with open_store(args) as store:
        watches = list_watches(store)
        if args.json:
            print_json([w.to_json() for w in watches])
            return EXIT_OK
        last = {w["watch_id"]: w for w in status(store)["watches"]}
    rows = [("ID", "ENABLED", "COLLECTION", "INTERVAL", "LAST SCAN", "PATH")]
    rows += [(printable(w.watch_id), "yes" if w.enabled else "no", printable(w.collection),
              f"{w.poll_interval_seconds:g}s", _last_scan(last[w.watch_id]),
              printable(w.path)) for w in watches]
    print_table(rows)
    return EXIT_OK


def _last_scan(watch: dict[str, Any]) -> str:
    """When the last scan started and how it ended; "never" only when none was tried."""
    start = watch["last_scan_start"] or watch["last_scan"]
    return f"{start} ({watch['last_result'] or 'ok'})" if start else "never"


def cmd_show(args: argparse.Namespace) -> int:
    from ..service.status import watch_status

    with open_store(args) as store:
        doc = watch_status(store, args.watch_id)
    if args.json:
        print_json(doc)
        return EXIT_OK
    from .text import watch_lines

    for line in watch_lines(doc):
        print(line)
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from ..watches import remove_watch

    with open_store(args) as store:
        done = remove_watch(store, args.watch_id, args.emit_deletes)
    if not args.quiet:
        print(f"removed {args.watch_id}" + (f"; {_deletes(done)}" if args.emit_deletes else ""))
    return EXIT_OK


def cmd_enable(args: argparse.Namespace) -> int:
    return _toggle(args, True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _toggle(args, False)


def _toggle(args: argparse.Namespace, enabled: bool) -> int:
    from ..watches import set_enabled

    with open_store(args) as store:
        set_enabled(store, args.watch_id, enabled)
    if not args.quiet:
        print(f"{'enabled' if enabled else 'disabled'} {args.watch_id}")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ..reconcile import reconcile
    from ..service.deadline import Watchdog

    def warn(watch_id: str, rel: str, message: str) -> None:
        if not args.quiet and not args.json:
            if line is not None:
                line.clear()
            print(printable(f"wqscan: warning: {watch_id}: {rel or '.'}: {message}"),
                  file=sys.stderr)

    from ..watches import MAX_THREADS

    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, not {args.threads}")
    started = _start_log(args) if args.log else None
    line = ProgressLine() if sys.stderr.isatty() and not args.quiet and not args.json \
        else None
    timeout = None if args.timeout is None else _seconds(args.timeout, "--timeout")
    until_settled = _seconds(args.until_settled, "--until-settled")
    try:
        with open_store(args) as store:
            watchdog = Watchdog(store.target, timeout)
            reports = reconcile(store, args.watch_ids, args.path, dry_run=args.dry_run,
                                allow_mass_delete=args.allow_mass_delete, on_warning=warn,
                                threads=args.threads, wait=max(0.0, args.wait),
                                on_progress=line.update if line else None,
                                until_settled=until_settled, on_watch=watchdog.arm)
            if args.hook and not args.dry_run:
                from ..clock import now_iso
                from ..reconcile.report import record_hook_run

                record_hook_run(store, reports, args.hook, args.path, args.log,
                                started or now_iso())
    finally:
        if line is not None:
            line.clear()
    if not reports and not args.quiet and not args.json:
        print("wqscan: no enabled watch to scan (wqscan add PATH --collection NAME adds one)",
              file=sys.stderr)
    if args.json:
        print_json({"dry_run": args.dry_run, "watches": [r.to_json() for r in reports]})
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
    code = exit_code(reports=reports)
    if args.log:
        from ..clock import now_iso

        print(f"wqscan: {now_iso()} exit {code}", file=sys.stderr)
    return code


def _start_log(args: argparse.Namespace) -> str:
    """Send the run's output to the end of --log, headed by what runs; returns the time it
    started."""
    from ..clock import now_iso
    from .paths import append_output_to

    try:
        append_output_to(args.log)
    except OSError as e:
        raise UsageError(f"cannot write the log {args.log}: {e.strerror}") from None
    started = now_iso()
    print(printable(f"wqscan: {started} reconcile" + (f" by git {args.hook}" if args.hook
                                                       else "")
                    + (f" of {args.path}" if args.path else "") + f" (pid {os.getpid()})"),
          file=sys.stderr, flush=True)
    return started


def cmd_status(args: argparse.Namespace) -> int:
    from ..service.status import status

    with open_store(args) as store:
        doc = status(store)
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(f"scanner: {doc['scanner']}   database: {doc['database']}   "
          f"store: {doc['store']}   layout: {doc['layout']}")
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
    print_table(rows)
    for w in doc["watches"]:
        if w["last_result"] == "failed":
            print(printable(f"{w['watch_id']}: {w['last_reason']}"))
        hook = w["last_hook_run"]
        if hook is not None:
            print(printable(
                f"{w['watch_id']}: last scan by git {hook['hook']} at {hook['started_at']}: "
                f"{hook['result']}" + (f" ({hook['reason']})" if hook["reason"] else "")
                + (f"; log: {hook['log']}" if hook["log"] else "")))
    depth = doc["queue"]
    print("queue: " + (", ".join(f"{st} {op} {n}" for st, ops in depth.items()
                                 for op, n in ops.items()) or "empty"))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ..service.scheduler import Scheduler

    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if args.json and not args.once:
        raise UsageError("run: --json needs --once")
    address = None
    if args.metrics_addr:  # checked before the database is looked at
        host, sep, port = args.metrics_addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"bad --metrics-addr '{args.metrics_addr}': expected HOST:PORT "
                             "with a port from 1 to 65535")
        address = (host or "127.0.0.1", int(port))
    store, config = open_configured(args)
    db = store.target
    store.close()
    server = None
    if address is not None:
        from ..service.metrics import serve

        try:
            server = serve(db, *address)
        except OSError as e:
            raise UsageError(f"cannot serve metrics on {args.metrics_addr}: {e.strerror}") \
                from None

    def log(line: str) -> None:
        if not args.quiet:
            from ..clock import now_iso

            print(printable(f"wqscan: {now_iso()} {line}"), file=sys.stderr, flush=True)

    reload = None
    if config is not None:
        def reread(store) -> None:  # on SIGHUP: read the file again, keep the old on error
            from ..watches.config import apply, load

            try:
                apply(store, load(config.path))
                log(f"configuration {config.path} loaded")
            except WqscanError as e:
                log(f"configuration not reloaded: {e}")

        reload = reread

    scheduler = Scheduler(db, jobs=args.jobs, once=args.once, log=log, reload=reload)
    try:
        code = scheduler.run()
    finally:
        if server is not None:
            server.shutdown()
    if args.json:
        print_json({"scans": scheduler.outcomes,
                     "failed": any(o["result"] == "failed" for o in scheduler.outcomes)})
    return code


def cmd_hook(args: argparse.Namespace) -> int:
    from . import hooks

    if args.action == "install":
        from ..watches import below, containing, list_watches
        from .paths import default_hook_log

        top, _ = hooks.locate(args.repo)  # a repository, before the database is looked at
        with open_store(args) as store:  # the database the hooks will use exists and is wqscan's
            done = hooks.install(args.repo, store.target, default_hook_log())
            enabled = [w for w in list_watches(store) if w.enabled]
            if not containing(enabled, top) and not below(enabled, top) and not args.quiet:
                print(printable(f"wqscan: warning: no enabled watch contains {top}, so the "
                                 "hooks rescan nothing until one does (wqscan add "
                                 f"{top} --collection NAME)"), file=sys.stderr)
        if not args.quiet:
            for path in done.written:
                print(printable(f"installed {path}"))
            if done.repointed_from is not None:
                print(f"re-pointed the hooks from database {done.repointed_from} to "
                      f"{done.database}")
            print(printable(f"their scans log to {done.log} (wqscan status shows the last)"))
        return EXIT_OK
    changed = hooks.uninstall(args.repo)
    if not args.quiet:
        for path in changed:
            print(printable(f"removed {path}"))
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..service.metrics import exposition, write_textfile

    with open_store(args) as store:
        text = exposition(store)
    if args.textfile:
        try:
            write_textfile(args.textfile, text)
        except OSError as e:
            raise UsageError(f"cannot write {args.textfile}: {e.strerror}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    from .queue_commands import queue_command

    return queue_command(args)


def print_table(rows: list[tuple[str, ...]]) -> None:
    for line in table(rows):
        print(line)


def _checked_argv(argv: list[str] | None) -> list[str]:
    """The arguments, refusing one that is not valid UTF-8 (the database stores text)."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {i} is not valid UTF-8: {arg}") from None
    return argv


_HANDLERS = {"init": cmd_init, "add": cmd_add, "set": cmd_set, "list": cmd_list,
             "show": cmd_show, "remove": cmd_remove, "enable": cmd_enable,
             "disable": cmd_disable, "reconcile": cmd_reconcile, "status": cmd_status,
             "run": cmd_run, "hook": cmd_hook, "metrics": cmd_metrics, "queue": cmd_queue}


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
    try:
        argv = _checked_argv(argv)
        try:
            args = build_parser(command_of(argv)).parse_args(argv)
        except VersionAsked:
            return _version(argv)
        for option in ("db", "config", "textfile", "metrics_addr"):
            if getattr(args, option, None) == "":
                raise UsageError(f"--{option.replace('_', '-')} must not be empty")
        return _HANDLERS[args.command](args)
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
