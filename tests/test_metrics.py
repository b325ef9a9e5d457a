"""`wqscan metrics` (the statistics of each watch): Prometheus text exposition
checked with a real parser (prometheus_client), values that match the database after known
scans, label escaping, `--textfile` written atomically, and `run --metrics-addr`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import apsw
import pytest
from helpers.cli import child_env, one_line, run
from helpers.db import queue, scan, watch
from helpers.procs import proc_state
from helpers.trees import OLD_NS, write
from prometheus_client.parser import text_string_to_metric_families

from wqscan.cli import main
from wqscan.clock import parse_iso
from wqscan.store import Store

pytestmark = [pytest.mark.scanner_free, pytest.mark.usefixtures("no_ambient_config")]

COUNTERS = ("wqscan_events_received_total", "wqscan_events_processed_total",
            "wqscan_events_filtered_total", "wqscan_queue_errors_total", "wqscan_scans_total")
GAUGES = ("wqscan_scan_duration_seconds", "wqscan_last_scan_timestamp_seconds",
          "wqscan_files_scanned", "wqscan_circuit_open", "wqscan_last_scan_success")
PATIENCE = 30.0
POLL = 0.02


# -- helpers -------------------------------------------------------------------------------

def metrics_text(capsys, db: Path) -> str:
    rc, out, err = run(capsys, "--db", str(db), "metrics")
    assert rc == 0, err
    assert err == ""
    return out


def parse(text: str) -> dict[str, tuple[str, dict[tuple, float]]]:
    """{sample family name as exposed: (type, {label items: value})}, through the real parser;
    a name may appear as one family only."""
    out: dict[str, tuple[str, dict[tuple, float]]] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        assert name not in out, f"family {name} exposed twice"
        samples = {}
        for s in fam.samples:
            assert s.name == name, (s.name, name)
            key = tuple(sorted(s.labels.items()))
            assert key not in samples, f"duplicate sample {name}{key}"
            samples[key] = s.value
        out[name] = (fam.type, samples)
    return out


def by_watch(families, name: str) -> dict[str, float]:
    """{watch_id: value} of a per-watch family; every sample has exactly that one label."""
    samples = families[name][1]
    assert all(len(k) == 1 and k[0][0] == "watch_id" for k in samples), samples
    return {k[0][1]: v for k, v in samples.items()}


def depth(families) -> dict[tuple[str, str], float]:
    """{(status, operation): rows} of wqscan_queue_depth."""
    samples = families["wqscan_queue_depth"][1]
    out = {}
    for k, v in samples.items():
        labels = dict(k)
        assert set(labels) == {"status", "operation"}, labels
        out[labels["status"], labels["operation"]] = v
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def known_state(tmp_path: Path) -> tuple[Path, dict]:
    """A database after known scans: `docs` (3 ingests, one claimed by a consumer and then
    modified: 1 update; a .txt file filtered twice), `idle` (never scanned) and `broken` (its
    root gone: 5 failed scans, circuit open). Returns (db, the stats rows by watch)."""
    db = tmp_path / "wq.db"
    tree = tmp_path / "docs"
    for name in ("a.md", "b.md", "c.md", "notes.txt"):
        write(tree / name, f"content of {name}")
    lost = tmp_path / "lost"
    lost.mkdir()
    (tmp_path / "idle").mkdir()
    store = Store.open(str(db))
    try:
        wid = watch(store, tree, "docs", watch_id="docs", patterns=["*.md"], interval=3600)
        watch(store, tmp_path / "idle", "idle", watch_id="idle", interval=3600)
        watch(store, lost, "lost", watch_id="broken", interval=3600)
        assert scan(store, wid).ingest == 3
        with store.write():  # a consumer claims a.md
            store.conn.execute(
                "UPDATE ingestion_queue SET status = 'in_progress', lease_owner = 'consumer', "
                "lease_expires_at = '2999-01-01T00:00:00.000Z' WHERE file_absolute_path = ?",
                (os.path.realpath(tree / "a.md"),))
        write(tree / "a.md", "changed content of a.md", OLD_NS + 10**12)
        report = scan(store, wid)
        assert (report.ingest, report.update, report.delete) == (0, 1, 0)
        lost.rmdir()
        for _ in range(5):
            assert not scan(store, "broken").ok
        stats = {w: store.stats_row(w) or {} for w in ("docs", "idle", "broken")}
    finally:
        store.close()
    return db, stats


# -- the exposition ------------------------------------------------------------------------

def test_every_family_parses_with_its_type(capsys, tmp_path):
    """The exposition parses with a real parser and has every family, with the right type."""
    db, _ = known_state(tmp_path)
    text = metrics_text(capsys, db)
    assert text.endswith("\n")
    families = parse(text)
    for name in COUNTERS:
        assert families[name][0] == "counter", name
    for name in (*GAUGES, "wqscan_queue_depth"):
        assert families[name][0] == "gauge", name
    assert set(families) == {*COUNTERS, *GAUGES, "wqscan_queue_depth"}
    for name in (*COUNTERS, *GAUGES, "wqscan_queue_depth"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text, name


def test_values_match_the_database(capsys, tmp_path):
    """After 3 ingests, a claim and 1 update every value matches the database."""
    db, stats = known_state(tmp_path)
    families = parse(metrics_text(capsys, db))
    received = by_watch(families, "wqscan_events_received_total")
    assert received == {"docs": 4, "idle": 0, "broken": 0}
    assert by_watch(families, "wqscan_events_processed_total") == \
        {"docs": 4, "idle": 0, "broken": 0}
    assert by_watch(families, "wqscan_events_filtered_total") == \
        {"docs": 2, "idle": 0, "broken": 0}  # notes.txt, seen by both scans
    assert by_watch(families, "wqscan_queue_errors_total") == {"docs": 0, "idle": 0, "broken": 0}
    for name, column in (("wqscan_events_received_total", "events_received"),
                         ("wqscan_events_processed_total", "events_processed"),
                         ("wqscan_events_filtered_total", "events_filtered"),
                         ("wqscan_queue_errors_total", "queue_errors")):
        assert by_watch(families, name)["docs"] == stats["docs"][column], name

    assert by_watch(families, "wqscan_files_scanned") == {"docs": 3, "broken": 0}
    duration = by_watch(families, "wqscan_scan_duration_seconds")
    assert set(duration) == {"docs", "broken"}  # a watch never scanned has no last scan
    assert duration["docs"] == pytest.approx(stats["docs"]["last_scan_duration"])
    assert 0 < duration["docs"] < 60
    stamp = by_watch(families, "wqscan_last_scan_timestamp_seconds")
    assert set(stamp) == {"docs", "broken"}
    for w in stamp:
        assert stamp[w] == pytest.approx(parse_iso(stats[w]["last_scan_start"]) / 1e9, abs=1e-3)
        assert abs(stamp[w] - time.time()) < 600
    assert by_watch(families, "wqscan_circuit_open") == {"docs": 0, "idle": 0, "broken": 1}
    # a failed scan says so; a watch never scanned has no sample
    assert by_watch(families, "wqscan_last_scan_success") == {"docs": 1, "broken": 0}
    scans = {dict(k)["watch_id"] + ":" + dict(k)["result"]: v
             for k, v in families["wqscan_scans_total"][1].items()}
    assert scans == {"docs:ok": 2, "docs:failed": 0, "idle:ok": 0, "idle:failed": 0,
                     "broken:ok": 0, "broken:failed": 5}

    assert depth(families) == {("pending", "ingest"): 2, ("pending", "update"): 1,
                               ("in_progress", "ingest"): 1}


def test_empty_database_still_declares_every_family(capsys, tmp_path):
    """With no watches and an empty queue every family is still declared, without samples."""
    assert run(capsys, "--db", str(tmp_path / "empty.db"), "init")[0] == 0
    families = parse(metrics_text(capsys, tmp_path / "empty.db"))
    assert set(families) == {*COUNTERS, *GAUGES, "wqscan_queue_depth"}
    assert all(samples == {} for _, samples in families.values())


def test_circuit_closes_after_a_success(capsys, tmp_path):
    """wqscan_circuit_open returns to 0 after the broken watch's next successful scan."""
    db, _ = known_state(tmp_path)
    assert by_watch(parse(metrics_text(capsys, db)), "wqscan_circuit_open")["broken"] == 1
    (tmp_path / "lost").mkdir()
    rc, _, err = run(capsys, "--db", str(db), "reconcile", "broken")
    assert rc == 0, err
    assert by_watch(parse(metrics_text(capsys, db)), "wqscan_circuit_open")["broken"] == 0


def test_label_values_are_escaped(capsys, tmp_path):
    """Quotes, backslashes and newlines in a (foreign) watch id are escaped and read back."""
    db = tmp_path / "wq.db"
    (tmp_path / "t").mkdir()
    weird = 'we"ird\\id\nline'
    Store.open(str(db)).close()
    conn = apsw.Connection(str(db))
    try:
        conn.execute("INSERT INTO watch_folders (watch_id, path, collection, patterns, "
                     "ignore_patterns, recursive, debounce_seconds, enabled) "
                     "VALUES (?, ?, 'c', '[]', '[]', 1, 0, 1)", (weird, str(tmp_path / "t")))
    finally:
        conn.close()
    text = metrics_text(capsys, db)
    assert 'watch_id="we\\"ird\\\\id\\nline"' in text
    for line in text.splitlines():  # no sample line is split by the raw newline
        assert line.startswith(("# ", "wqscan_")), line
    families = parse(text)
    for name in (*COUNTERS, "wqscan_circuit_open"):
        if name != "wqscan_scans_total":
            assert by_watch(families, name) == {weird: 0}, name
    assert {dict(k)["watch_id"] for k in families["wqscan_scans_total"][1]} == {weird}


def test_queue_errors_count_failed_writes(tmp_path):
    """A queue write refused by a busy database counts in wqscan_queue_errors_total."""
    tree = tmp_path / "tree"
    for d in range(40):
        os.makedirs(tree / f"d{d:02d}")
        for f in range(250):  # 10,000 files: two streamed batches of 5,000
            p = tree / f"d{d:02d}" / f"f{f:03d}.txt"
            p.write_bytes(b"%d/%d" % (d, f))
            os.utime(p, ns=(OLD_NS, OLD_NS))
    db = tmp_path / "wq.db"
    store = Store.open(str(db))
    try:
        watch(store, tree, "c", watch_id="busy")
    finally:
        store.close()
    proc = subprocess.Popen([sys.executable, "-m", "wqscan", "--db", str(db), "reconcile",
                             "busy"], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    blocker = apsw.Connection(str(db))
    blocker.set_busy_timeout(0)
    try:
        queued = freeze_with_write_lock(proc, blocker)
        # Hold the write lock through the scan's retries (0.5 + 1 + 2 s) and
        # release it before those of recording the failure run out: the stimulus of this
        # test is a lock held for a known time, not a wait for a condition.
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(5.5)
        blocker.execute("ROLLBACK")
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    assert "locked" in one_line(err)
    store = Store.open(str(db))
    try:
        stats = store.stats_row("busy")
        assert stats["last_result"] == "failed", stats
        assert "locked" in stats["last_reason"], stats
        assert len(queue(store, None)) == queued  # the refused batch left no row
        assert stats["queue_errors"] == 1, stats  # the one write refused
    finally:
        store.close()
    db_families = parse(metrics_subprocess(db))
    assert by_watch(db_families, "wqscan_queue_errors_total")["busy"] == 1


def freeze_with_write_lock(proc: subprocess.Popen, blocker: apsw.Connection) -> int:
    """SIGSTOP a reconcile after it took its lease and before its last batch, at a moment
    it holds no write transaction, and take the write lock with `blocker` (left open).
    Returns the queue rows committed so far."""
    deadline = time.monotonic() + PATIENCE
    while True:
        assert proc.poll() is None, "the scan ended before it could be caught"
        assert time.monotonic() < deadline, "never caught between its lease and last batch"
        if not blocker.execute("SELECT count(*) FROM wq_leases").fetchall()[0][0]:
            time.sleep(0.001)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        while proc_state(proc.pid) not in ("T", "t", None):
            assert time.monotonic() < deadline, "the scan did not stop"
            time.sleep(0.001)
        try:
            blocker.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:  # frozen inside a batch: let it commit, try again
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.001)
            continue
        queued = blocker.execute("SELECT count(*) FROM ingestion_queue").fetchall()[0][0]
        assert queued < 10000, "frozen only after its last batch"
        return queued


def metrics_subprocess(db: Path) -> str:
    """`wqscan metrics` run as its own process."""
    r = subprocess.run([sys.executable, "-m", "wqscan", "--db", str(db), "metrics"],
                       env=child_env(), capture_output=True, text=True, timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- --textfile ----------------------------------------------------------------------------

def test_textfile_holds_the_same_text(capsys, tmp_path):
    """--textfile writes what `metrics` prints, world-readable, with no file beside it."""
    db, _ = known_state(tmp_path)
    text = metrics_text(capsys, db)
    out_dir = tmp_path / "collector"
    out_dir.mkdir()
    target = out_dir / "wqscan.prom"
    rc, out, err = run(capsys, "--db", str(db), "metrics", "--textfile", str(target))
    assert (rc, out, err) == (0, "", "")
    assert target.read_text() == text
    assert os.listdir(out_dir) == ["wqscan.prom"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_textfile_replaces_the_file_whole(capsys, tmp_path):
    """--textfile replaces the file by rename: an open reader keeps the whole old text."""
    db, _ = known_state(tmp_path)
    out_dir = tmp_path / "collector"
    out_dir.mkdir()
    target = out_dir / "wqscan.prom"
    old = "# old exposition\n" + "old_metric 1\n" * 20000
    target.write_text(old)
    with open(target) as reader:
        rc, _, err = run(capsys, "--db", str(db), "metrics", "--textfile", str(target))
        assert rc == 0, err
        assert reader.read() == old
    assert target.read_text() == metrics_text(capsys, db)
    assert os.listdir(out_dir) == ["wqscan.prom"]


WRITER = """
import sys
from wqscan.cli import main
db, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
for _ in range(n):
    rc = main(["--db", db, "metrics", "--textfile", path])
    if rc:
        sys.exit(rc)
"""


def test_concurrent_reader_never_sees_a_partial_file(capsys, tmp_path):
    """A reader racing 200 rewrites by another process always reads the whole file."""
    db = tmp_path / "wq.db"
    store = Store.open(str(db))
    try:
        with store.write():
            for i in range(60):  # a file of some size: many watches
                (tmp_path / f"t{i}").mkdir()
                store.conn.execute(
                    "INSERT INTO watch_folders (watch_id, path, collection, patterns, "
                    "ignore_patterns, recursive, debounce_seconds, enabled) "
                    "VALUES (?, ?, 'c', '[]', '[]', 1, 0, 1)",
                    (f"watch-number-{i:03d}", str(tmp_path / f"t{i}")))
                store.add_stats(f"watch-number-{i:03d}", {"events_received": i})
    finally:
        store.close()
    expected = metrics_text(capsys, db)
    assert len(expected) > 16384
    out_dir = tmp_path / "collector"
    out_dir.mkdir()
    target = out_dir / "wqscan.prom"
    assert main(["--db", str(db), "metrics", "--textfile", str(target)]) == 0
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(target), "200"],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    reads, replaced, last_inode, bad = 0, 0, None, []
    try:
        assert writer.stdout.readline() == "ready\n"
        while writer.poll() is None:
            with open(target) as f:
                inode = os.fstat(f.fileno()).st_ino
                data = f.read()
            replaced += inode != last_inode
            last_inode = inode
            reads += 1
            if data != expected:
                bad.append(data)
        out, err = writer.communicate(timeout=PATIENCE)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0, err
    assert not bad, f"{len(bad)} of {reads} reads saw a partial file, e.g. {len(bad[0])} bytes"
    assert replaced >= 20, (reads, replaced)  # the reads did overlap the rewrites
    assert target.read_text() == expected
    assert os.listdir(out_dir) == ["wqscan.prom"]


def test_textfile_in_missing_directory(capsys, tmp_path):
    """--textfile into a missing directory exits 2 with one line and creates nothing."""
    db, _ = known_state(tmp_path)
    target = tmp_path / "no" / "such" / "dir" / "wqscan.prom"
    rc, out, err = run(capsys, "--db", str(db), "metrics", "--textfile", str(target))
    assert rc == 2 and out == ""
    assert str(target) in one_line(err)
    assert not (tmp_path / "no").exists()


def test_textfile_onto_a_directory(capsys, tmp_path):
    """--textfile naming a directory exits 2 with one line and leaves no temporary file."""
    db, _ = known_state(tmp_path)
    out_dir = tmp_path / "collector"
    (out_dir / "wqscan.prom").mkdir(parents=True)
    rc, out, err = run(capsys, "--db", str(db), "metrics", "--textfile",
                       str(out_dir / "wqscan.prom"))
    assert rc == 2 and out == ""
    one_line(err)
    assert os.listdir(out_dir) == ["wqscan.prom"]
    assert os.listdir(out_dir / "wqscan.prom") == []


# -- run --metrics-addr --------------------------------------------------------------------

def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        e.close()
        return e.code, "", ""


def start_run(db: Path, addr: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wqscan", "--db", str(db), "run",
                             "--metrics-addr", addr], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_served(proc: subprocess.Popen, url: str) -> tuple[int, str, str]:
    """Poll `url` until the server answers; fail if `proc` ends first or time runs out."""
    deadline = time.monotonic() + PATIENCE
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run exited {proc.returncode} before serving: {err}")
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"{url} never answered")
            time.sleep(POLL)


def stop_run(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def test_run_serves_metrics(capsys, tmp_path):
    """run --metrics-addr serves the `metrics` text on /metrics, 404 elsewhere."""
    db, _ = known_state(tmp_path)
    store = Store.open(str(db))
    try:  # only `docs` and `idle` stay: both scanned recently, so nothing is due
        with store.write():
            store.conn.execute("DELETE FROM watch_folders WHERE watch_id = 'broken'")
            store.conn.execute("DELETE FROM wq_watch_stats WHERE watch_id = 'broken'")
            store.conn.execute("UPDATE watch_folders SET enabled = 0 WHERE watch_id = 'idle'")
    finally:
        store.close()
    expected = metrics_text(capsys, db)
    port = free_port()
    proc = start_run(db, f"127.0.0.1:{port}")
    try:
        status, ctype, body = wait_served(proc, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        assert body == expected
        parse(body)
        assert get(f"http://127.0.0.1:{port}/metrics?x=1")[0] == 200
        for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
            assert get(f"http://127.0.0.1:{port}{path}")[0] == 404, path
    finally:
        out, err = stop_run(proc)
    assert proc.returncode == 0, err


def test_metrics_addr_defaults_to_loopback(tmp_path):
    """`--metrics-addr :PORT` listens on 127.0.0.1 only."""
    db = tmp_path / "wq.db"
    Store.open(str(db)).close()
    port = free_port()
    proc = start_run(db, f":{port}")
    try:
        status, _, body = wait_served(proc, f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "wqscan_queue_depth" in body
        listening = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    addr, hexport = local.rsplit(":", 1)
                    if state == "0A" and int(hexport, 16) == port:
                        listening.add(addr)
        assert listening == {"0100007F"}, listening
    finally:
        out, err = stop_run(proc)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("addr", ["nonsense", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:-1",
                                  "127.0.0.1:99999"])
def test_bad_metrics_addr(capsys, tmp_path, addr):
    """A malformed --metrics-addr exits 2 with one line, before the database is created."""
    db = tmp_path / "wq.db"
    rc, out, err = run(capsys, "--db", str(db), "run", "--once", "--metrics-addr", addr)
    assert rc == 2, err
    assert addr in one_line(err)
    assert not db.exists()


def test_metrics_addr_in_use(capsys, tmp_path):
    """A --metrics-addr whose port is taken exits 2 with one line."""
    db = tmp_path / "wq.db"
    Store.open(str(db)).close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        addr = f"127.0.0.1:{s.getsockname()[1]}"
        rc, out, err = run(capsys, "--db", str(db), "run", "--once", "--metrics-addr", addr)
    assert rc == 2, err
    assert addr in one_line(err)
