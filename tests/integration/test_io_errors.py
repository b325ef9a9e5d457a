"""A filesystem that answers with I/O errors: on a real FUSE mount that
fails chosen paths with EIO (faultfs.py), a scan fails as a whole (status, the circuit
breaker and the metrics say so) and writes nothing, deleting no entry; once the
filesystem answers again, the next scan queues exactly what changed.

Needs root, /dev/fuse and the lab (see conftest.py); skipped otherwise."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import apsw
import pytest
from helpers.cli import wqscan
from helpers.ondisk import read_dicts, read_rows
from helpers.trees import OLD_NS, write

from integration.lab import cleanup, lab_env, lab_python

pytestmark = [pytest.mark.network]

FAULTFS = Path(__file__).resolve().parent / "faultfs.py"


@pytest.fixture
def faulty(tmp_path, lab):
    """(source tree, mount point, faults file) of a running faultfs mount."""
    src, mnt, faults = tmp_path / "src", tmp_path / "mnt", tmp_path / "faults"
    for name in ("ok/a.txt", "ok/b.txt", "bad/c.txt", "d.txt", "e.txt"):
        write(src / name, name)
    mnt.mkdir()
    env = lab_env(tmp_path / "lab-state")
    py = lab_python(lab, env, tmp_path / "scratch")
    log = open(tmp_path / "faultfs.log", "wb")
    server = subprocess.Popen([py, str(FAULTFS), str(src), str(mnt), str(faults)],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while not os.path.ismount(mnt):
            assert server.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "faultfs.log").read_text()
            time.sleep(0.05)
        yield src, mnt, faults
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        server.terminate()
        server.wait(10)
        log.close()
        cleanup(env)


def test_io_errors_fail_the_scan_and_delete_nothing(tmp_path, faulty):
    src, mnt, faults = faulty
    db = tmp_path / "wq.db"
    assert wqscan(db, "add", str(mnt), "--collection", "c", "--id", "share", "--settle", "0",
               "--check-stat", "minimal").returncode == 0
    r = wqscan(db, "reconcile")
    assert r.returncode == 0, r.stderr
    assert len(read_rows(db, "SELECT 1 FROM ingestion_queue")) == 5
    with apsw.Connection(str(db)) as conn:
        conn.execute("DELETE FROM ingestion_queue")

    (src / "ok" / "b.txt").unlink()  # a real change, seen while other paths fail
    write(src / "d.txt", "d, changed", OLD_NS + 10**9)
    faults.write_text("bad EIO\ne.txt EIO\n")
    r = wqscan(db, "reconcile")
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("wqscan: error:")]
    assert len(err) == 1 and "I/O error" in err[0] and "no entry deleted" in err[0], r.stderr
    assert read_rows(db, "SELECT * FROM ingestion_queue") == []
    (stats,) = read_dicts(db, "SELECT * FROM wq_watch_stats")
    assert (stats["last_result"], stats["consecutive_failures"]) == ("failed", 1)
    metrics = wqscan(db, "metrics").stdout
    assert 'wqscan_last_scan_success{watch_id="share"} 0' in metrics
    assert 'wqscan_scans_total{watch_id="share",result="failed"} 1' in metrics

    faults.write_text("")
    r = wqscan(db, "reconcile")
    assert r.returncode == 0, r.stderr
    assert sorted(read_rows(db, "SELECT file_absolute_path, operation FROM ingestion_queue")) \
        == [(f"{mnt}/d.txt", "update"), (f"{mnt}/ok/b.txt", "delete")]


def test_a_root_that_cannot_be_listed_fails_the_scan_by_name(tmp_path, faulty):
    """The root answers stat and access but listing it fails (EIO): the scan fails with one
    line naming the root and the error, and writes nothing."""
    _, mnt, faults = faulty
    db = tmp_path / "wq.db"
    assert wqscan(db, "add", str(mnt), "--collection", "c", "--id", "share", "--settle", "0",
               ).returncode == 0
    assert wqscan(db, "reconcile").returncode == 0
    with apsw.Connection(str(db)) as conn:
        conn.execute("DELETE FROM ingestion_queue")
    faults.write_text(". EIO list\n")
    r = wqscan(db, "reconcile")
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("wqscan: error:")]
    assert err == [f"wqscan: error: share: root {mnt} unreadable: Input/output error"], r.stderr
    assert read_rows(db, "SELECT * FROM ingestion_queue") == []


@pytest.mark.scanner_free  # it picks each scanner itself: once, in the compiled pass
@pytest.mark.parametrize("mode", ["c", "c-python-hash", "py"])
def test_a_read_error_is_a_warning_or_fails_the_scan_as_the_twins_agree(tmp_path, faulty,
                                                                         mode):
    """A file whose contents cannot be read (the lookup and open work): an errno of a
    failing filesystem (EIO) fails the scan and writes nothing; another (EBADMSG) is a
    warning, the file waits for the next scan and the rest is queued. Alike for the
    compiled twin, its fallback through xxhash's Python API, and the pure twin."""
    src, mnt, faults = faulty
    env = {"c": {}, "c-python-hash": {"WQSCAN_XXH_PYTHON": "1"},
           "py": {"WQSCAN_NO_EXTENSIONS": "1"}}[mode]
    db = tmp_path / "wq.db"

    def run(*args: str) -> subprocess.CompletedProcess:
        return wqscan(db, *args, env={**os.environ, **env})

    assert run("add", str(mnt), "--collection", "c", "--id", "share", "--settle", "0",
               "--check-stat", "minimal", "--threads", "1").returncode == 0
    faults.write_text("d.txt EIO read\n")
    r = run("reconcile")
    assert r.returncode == 1 and "I/O error" in r.stderr, (r.stdout, r.stderr)
    assert read_rows(db, "SELECT * FROM ingestion_queue") == []

    faults.write_text("d.txt EBADMSG read\n")
    r = run("reconcile")
    assert r.returncode == 0, r.stderr
    assert "d.txt: cannot read" in r.stderr, r.stderr
    queued = sorted(p for (p,) in read_rows(db, "SELECT file_absolute_path FROM ingestion_queue"))
    assert queued == [f"{mnt}/{n}" for n in ("bad/c.txt", "e.txt", "ok/a.txt", "ok/b.txt")]

    faults.write_text("")
    r = run("reconcile")
    assert r.returncode == 0, r.stderr
    assert read_rows(db, "SELECT operation FROM ingestion_queue WHERE file_absolute_path = ?",
                     (f"{mnt}/d.txt",)) == [("ingest",)]
