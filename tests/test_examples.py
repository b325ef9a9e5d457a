"""The cron and systemd forms in examples/, tested as written: a failed scan
still reaches the metrics file, and the units pass `systemd-analyze verify`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.trees import write

pytestmark = pytest.mark.scanner_free

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def cron_command() -> str:
    """The command of examples/crontab's one entry (its five time fields dropped)."""
    (line,) = [ln for ln in (EXAMPLES / "crontab").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    return line.split(None, 5)[5]


def wqscan_bin() -> str:
    """The directory of the installed `wqscan` script (beside this Python, or on PATH)."""
    found = shutil.which("wqscan", path=os.path.dirname(sys.executable)) or \
        shutil.which("wqscan")
    if found is None:
        pytest.skip("the wqscan script is not installed beside this Python nor on PATH")
    return os.path.dirname(found)


@pytest.mark.parametrize("healthy", [True, False], ids=["ok", "failed"])
def test_crontab_line_refreshes_metrics_whatever_the_outcome(tmp_path, healthy):
    """Run by sh as cron would: the configuration applies to both commands, the metrics
    file is written also when the scan failed (and says so), and the line's exit status is
    the scan's."""
    home = tmp_path / "home"
    tree = tmp_path / "tree"
    write(tree / "a.md", "a")
    config = home / ".config" / "wqscan" / "wqscan.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"watches:\n  - id: docs\n    path: {tree if healthy else tmp_path / 'gone'}"
                      "\n    collection: docs\n    settle: 0\n")
    env = {"HOME": str(home), "PATH": f"{wqscan_bin()}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(["sh", "-c", cron_command()], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == (0 if healthy else 1), done.stderr
    prom = (home / ".local" / "share" / "wqscan" / "wqscan.prom").read_text()
    assert f'wqscan_last_scan_success{{watch_id="docs"}} {1 if healthy else 0}' in prom
    result = "ok" if healthy else "failed"
    assert f'wqscan_scans_total{{watch_id="docs",result="{result}"}} 1' in prom


def test_systemd_units_verify_and_refresh_metrics_after_a_failure(tmp_path):
    """The three units pass `systemd-analyze verify` (with the installed wqscan in place of
    /usr/local/bin/wqscan, their only change), and the timer's service refreshes the
    metrics in ExecStopPost=, which runs also when the scan failed."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs it)")
    binary = os.path.join(wqscan_bin(), "wqscan")
    units = []
    for name in ("wqscan.service", "wqscan.timer", "wqscan-once.service"):
        text = (EXAMPLES / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/wqscan", binary))
        units.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    once = (EXAMPLES / "wqscan-once.service").read_text()
    assert re.search(r"^ExecStopPost=\S+wqscan metrics --textfile ", once, re.M), once
    assert not re.search(r"^ExecStartPost=", once, re.M), once
