"""The commands that scan and report: reconcile, status, run, hook, metrics."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import EXIT_OK, UsageError, WqscanError, exit_code
from ..settings import BY_NAME
from .common import open_configured, open_store, print_json, print_table, seconds
from .text import ProgressLine, printable


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ..reconcile import reconcile
    from ..service.deadline import Deadline

    def warn(watch_id: str, rel: str, message: str) -> None:
        if not args.quiet and not args.json:
            if line is not None:
                line.clear()
            print(printable(f"wqscan: warning: {watch_id}: {rel or '.'}: {message}"),
                  file=sys.stderr)

    problem = BY_NAME["threads"].check(args.threads)
    if problem:
        raise UsageError(problem)
    started = _start_log(args) if args.log else None
    line = ProgressLine() if sys.stderr.isatty() and not args.quiet and not args.json \
        else None
    timeout = None if args.timeout is None else seconds(args.timeout, "--timeout")
    until_settled = seconds(args.until_settled, "--until-settled")
    try:
        with open_store(args) as store:
            deadline = Deadline(store.target, timeout)
            reports = reconcile(store, args.watch_ids, args.path, dry_run=args.dry_run,
                                allow_mass_delete=args.allow_mass_delete, on_warning=warn,
                                threads=args.threads, wait=max(0.0, args.wait),
                                on_progress=line.update if line else None,
                                until_settled=until_settled, on_watch=deadline.arm)
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
