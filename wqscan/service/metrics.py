"""Prometheus text exposition of the per-watch statistics and the queue depth."""
from __future__ import annotations

import os
import tempfile
import time
from typing import Iterable

from ..clock import parse_iso
from ..store import Store, Target
from ..watches import list_watches
from .breaker import circuit_open

# (name, type, help, statistics column or None when computed)
_PER_WATCH = (
    ("wqscan_events_received_total", "counter", "Changes detected by scans.",
     "events_received"),
    ("wqscan_events_processed_total", "counter", "Operations written to the queue.",
     "events_processed"),
    ("wqscan_events_filtered_total", "counter", "Entries seen but out of scope.",
     "events_filtered"),
    ("wqscan_queue_errors_total", "counter", "Failed queue writes.", "queue_errors"),
    ("wqscan_scan_duration_seconds", "gauge", "Duration of the last scan.",
     "last_scan_duration"),
    ("wqscan_last_scan_timestamp_seconds", "gauge", "Start of the last scan (Unix time).",
     None),
    ("wqscan_files_scanned", "gauge", "In-scope files seen by the last scan.", "last_files"),
    ("wqscan_circuit_open", "gauge", "1 while the circuit breaker rests the watch.", None),
    ("wqscan_last_scan_success", "gauge", "1 if the last scan succeeded, 0 if it failed.",
     None),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def exposition(store: Store) -> str:
    """The whole exposition, one family after another, ending in a newline."""
    now_ns = time.time_ns()
    rows = [(w.watch_id, store.stats_row(w.watch_id) or {}) for w in list_watches(store)]
    out: list[str] = []
    for name, kind, text, column in _PER_WATCH:
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for wid, stats in rows:
            value = _value(name, column, stats, now_ns)
            if value is not None:
                out.append(f'{name}{{watch_id="{_label(wid)}"}} {_number(value)}')
    out += ["# HELP wqscan_scans_total Scans by result (ok, failed).",
            "# TYPE wqscan_scans_total counter"]
    for wid, stats in rows:
        for result in ("ok", "failed"):
            out.append(f'wqscan_scans_total{{watch_id="{_label(wid)}",result="{result}"}} '
                       f'{stats.get("scans_" + result, 0)}')
    out += ["# HELP wqscan_queue_depth Rows of ingestion_queue by status and operation.",
            "# TYPE wqscan_queue_depth gauge"]
    out += [f'wqscan_queue_depth{{status="{_label(st)}",operation="{_label(op)}"}} {n}'
            for st, op, n in store.queue.depth()]
    return "\n".join(out) + "\n"


def _value(name: str, column: str | None, stats: dict, now_ns: int) -> float | int | None:
    if name == "wqscan_last_scan_timestamp_seconds":
        start = stats.get("last_scan_start")
        return parse_iso(start) / 1e9 if start else None
    if name == "wqscan_last_scan_success":
        result = stats.get("last_result")
        return None if result is None else int(result == "ok")
    if name == "wqscan_circuit_open":
        return int(circuit_open(stats, now_ns))
    value = stats.get(column) if column else None
    if value is None:
        return 0 if name.endswith("_total") else None
    return value


def write_textfile(path: str, text: str) -> None:
    """Write atomically (a temporary file in the same directory, then a rename), as
    node_exporter's textfile collector requires."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".wqscan-metrics-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def serve(db: Target, host: str, port: int):
    """An HTTP server (in a daemon thread) answering GET /metrics; returns the server."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            with Store.open(db, create=False) as store:
                body = exposition(store).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Iterable) -> None:
            pass  # requests are not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="wqscan-metrics").start()
    return server
