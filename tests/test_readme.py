"""The README and docs/ as a new user reads them: the consumer walkthrough of
docs/consuming.md runs as written and prints what it shows; the default database path
and the example configuration say what wqscan does."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wqscan.watches.config import load

pytestmark = pytest.mark.scanner_free

TOP = Path(__file__).resolve().parent.parent
README = (TOP / "README.md").read_text()
CONSUMING = (TOP / "docs" / "consuming.md").read_text()
DURATION = re.compile(r"\d+\.\d\d s$", re.M)  # the one thing that differs run to run


def walkthrough() -> list[tuple[str, str]]:
    """(command, expected output) of the `$ ` lines of the worked consumer's transcript."""
    block = CONSUMING.split("**A worked consumer**", 1)[1].split("```sh\n", 1)[1]
    block = block.split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return [(cmd, "".join(o + "\n" for o in out)) for cmd, out in steps]


def test_consumer_walkthrough_runs_as_written(tmp_path):
    """Every command of the transcript, run by one shell from the checkout (with /tmp/demo
    moved under the test's own directory), prints exactly the lines shown."""
    demo = str(tmp_path / "demo")
    marker = "@@wqscan-readme-step@@"
    script = "set -e\n" + "".join(f"echo {marker}\n{cmd.replace('/tmp/demo', demo)}\n"
                                  for cmd, _ in walkthrough())
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
           "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", script], cwd=TOP, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    outputs = done.stdout.split(marker + "\n")[1:]
    for (cmd, expected), got in zip(walkthrough(), outputs, strict=True):
        got = DURATION.sub("N s", got.replace(demo, "/tmp/demo"))
        assert got == DURATION.sub("N s", expected), cmd


def test_default_database_path_names_xdg_data_home():
    first = README.split("## What it does", 1)[0]
    assert "$XDG_DATA_HOME/wqscan/wqscan.db" in first


def test_example_configuration_does_not_switch_databases():
    """examples/wqscan.yaml loads, and names no database: with `--config` alone, the usual
    database stays in use."""
    assert load(str(TOP / "examples" / "wqscan.yaml")).database is None


def test_ci_finds_the_lab_only_beside_the_checkout_or_where_told():
    """.ci/run looks for the network lab at ../shared/lab or $WQSCAN_LAB, and nowhere that
    only one machine has."""
    script = (TOP / ".ci" / "run").read_text()
    lines = [ln for ln in script.splitlines() if "for lab in" in ln]
    assert lines == ['for lab in "${WQSCAN_LAB:-}" "$(cd .. && pwd)/shared/lab"; do'], lines
    assert "/work/" not in script


def test_ci_runs_the_readme_test_command_verbatim():
    """The README's second command is the one .ci/run runs, byte for byte."""
    first = README.split("```sh\n", 1)[1].split("```", 1)[0]
    command = first.split("# 2. install the test extras and run the tests\n", 1)[1].strip()
    assert command == "pip install '.[test]' && pytest"
    assert command in (TOP / ".ci" / "run").read_text().splitlines()


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule, for plain text)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", ["README.md", *sorted(
    f"docs/{p.name}" for p in (TOP / "docs").glob("*.md"))])
def test_links_lead_somewhere(doc):
    """Every relative link of the README and docs/ names a file that exists and, with a
    `#`, a heading it holds."""
    source = TOP / doc
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (source.parent / path).resolve() if path else source
        assert linked.exists(), f"{doc}: {target}"
        if fragment:
            headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
            assert fragment in {anchor(h) for h in headings}, f"{doc}: {target}"


def test_docs_name_every_example():
    """Each file of examples/ is described in docs/."""
    docs = "".join(p.read_text() for p in (TOP / "docs").glob("*.md"))
    for example in (TOP / "examples").iterdir():
        assert example.name in docs, example.name


def test_readme_python_api_imports():
    """The names the README lists as the Python API import as it says."""
    from wqscan import QueueClient  # noqa: F401
    from wqscan.reconcile import reconcile  # noqa: F401
    from wqscan.store import Store, Target  # noqa: F401
    from wqscan.watches import (add_watch, get_watch, list_watches,  # noqa: F401
                                remove_watch, set_watch)
