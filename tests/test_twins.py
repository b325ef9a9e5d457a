"""The two scanner twins: same API, the extension really loaded, one blob layout, and the
very same walk results (DirResults, totals, hook calls) on a tricky tree over many scans."""
from __future__ import annotations

import dataclasses
import importlib.machinery
import inspect
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.memhooks import MemHooks
from helpers.trees import OLD_NS, write
from helpers.twins import TWIN_NAMES, load_twin
from hypothesis import given, settings
from hypothesis import strategies as st

from wqscan import _scan, _scan_py
from wqscan.scan.records import (BLOB_VERSION, EAGER_ALL, DirResult, ScanParams, ScanTotals,
                                   SnapEntry)

SEC = 10**9
T0 = OLD_NS + 1000 * SEC  # start of the first scan of the sequence
TWINS = ("c", "py")


# -- 1. parity of the API ------------------------------------------------------------------

def test_same_public_names():
    """Both twins export exactly TWIN_NAMES, and the selector re-exports them."""
    c, py = load_twin("c"), load_twin("py")
    assert set(c.__all__) == set(py.__all__) == set(TWIN_NAMES)
    for name in TWIN_NAMES:
        assert callable(getattr(c, name)) and callable(getattr(py, name))
        assert name in _scan.__all__


@pytest.mark.parametrize("name", TWIN_NAMES)
def test_same_signatures(name):
    """Each public function has the same parameter names and kinds in both twins."""
    c, py = load_twin("c"), load_twin("py")
    sig_c, sig_py = inspect.signature(getattr(c, name)), inspect.signature(getattr(py, name))
    assert [(p.name, p.kind) for p in sig_c.parameters.values()] == \
        [(p.name, p.kind) for p in sig_py.parameters.values()]
    assert getattr(c, name).__doc__ and getattr(py, name).__doc__


# -- 2. the extension really loaded ----------------------------------------------------------

def test_extension_loaded():
    """Unless WQSCAN_NO_EXTENSIONS asks for Python, the selector uses the compiled twin."""
    if os.environ.get("WQSCAN_NO_EXTENSIONS", "") not in ("", "0"):
        assert _scan.NO_EXTENSIONS
        assert _scan.BACKEND == "python"
        assert _scan.walk is _scan_py.walk
        pytest.skip("WQSCAN_NO_EXTENSIONS asks for the pure-Python scanner")
    from wqscan import _scan_c

    assert not _scan.NO_EXTENSIONS
    assert _scan.BACKEND == "cython"
    assert _scan.walk.__module__ == "wqscan._scan_c"
    assert (_scan.walk, _scan.encode_entries, _scan.decode_entries) == \
        (_scan_c.walk, _scan_c.encode_entries, _scan_c.decode_entries)
    assert _scan_c.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _in_subprocess(env_value: str, *args: str) -> str:
    env = {**os.environ, "WQSCAN_NO_EXTENSIONS": env_value}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("value, backend, module", [
    ("1", "python", "wqscan._scan_py"),
    ("yes", "python", "wqscan._scan_py"),
    ("0", "cython", "wqscan._scan_c"),
    ("", "cython", "wqscan._scan_c"),
])
def test_variable_selects_backend(value, backend, module):
    """WQSCAN_NO_EXTENSIONS (set and not '0') selects the pure twin in a fresh process."""
    if backend == "cython":
        load_twin("c")  # skips when this run itself asks for Python
    out = _in_subprocess(value, "-c", "from wqscan import _scan; "
                         "print(_scan.BACKEND, _scan.walk.__module__)")
    assert out == f"{backend} {module}"


@pytest.mark.parametrize("value, backend", [("1", "python"), ("", "cython")])
def test_version_and_status_name_backend(tmp_path, value, backend):
    """`wqscan --version` and `wqscan status --json` say which twin is active."""
    if backend == "cython":
        load_twin("c")
    out = _in_subprocess(value, "-m", "wqscan", "--version")
    assert out.splitlines()[0].endswith(f"(scanner: {backend})")
    _in_subprocess(value, "-m", "wqscan", "--db", str(tmp_path / "s.db"), "init")
    out = _in_subprocess(value, "-m", "wqscan", "--db", str(tmp_path / "s.db"), "status",
                         "--json")
    assert json.loads(out)["scanner"] == backend


# -- 3. the blob codec -----------------------------------------------------------------------

_NAME = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=40)
_I64 = st.integers(-(2**63), 2**63 - 1)
_FILE = st.builds(lambda *a: SnapEntry(*a), _NAME, _I64, _I64, _I64,
                  st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=16),
                  st.booleans())
_ENTRIES = st.lists(_FILE, max_size=25)


@pytest.mark.parametrize("which", TWINS)
@settings(max_examples=300, deadline=None)
@given(entries=_ENTRIES)
def test_codec_round_trip(which, entries):
    """decode_entries(encode_entries(e)) == e for files of any names and stat data."""
    twin = load_twin(which)
    blob = twin.encode_entries(entries)
    assert isinstance(blob, bytes) and blob[0] == BLOB_VERSION
    assert twin.decode_entries(blob) == entries


@settings(max_examples=300, deadline=None)
@given(entries=_ENTRIES)
def test_codec_cross_twin(entries):
    """Both twins write the same bytes, and each decodes the other's blob identically."""
    c, py = load_twin("c"), load_twin("py")
    blob_c, blob_py = c.encode_entries(entries), py.encode_entries(entries)
    assert blob_c == blob_py
    assert py.decode_entries(blob_c) == entries
    assert c.decode_entries(blob_py) == entries


@pytest.mark.parametrize("which", TWINS)
def test_codec_empty_and_wrong_version(which):
    """An empty row decodes to nothing; a blob of another layout version is refused."""
    twin = load_twin(which)
    assert twin.encode_entries([]) == bytes([BLOB_VERSION])
    assert twin.decode_entries(b"") == []
    assert twin.decode_entries(bytes([BLOB_VERSION])) == []
    blob = twin.encode_entries([SnapEntry("f", 1, 2, 3, 4, b"h" * 16)])
    with pytest.raises(ValueError):
        twin.decode_entries(bytes([BLOB_VERSION + 1]) + blob[1:])


_UNENCODABLE = {
    "hash-empty": [SnapEntry("f", 1, 2, 3, 4, b"")],
    "hash-15-bytes": [SnapEntry("f", 1, 2, 3, 4, b"h" * 15)],
    "hash-17-bytes": [SnapEntry("f", 1, 2, 3, 4, b"h" * 17)],
    "name-65536-bytes": [SnapEntry("n" * 65536, 1, 2, 3, 4, b"h" * 16)],
    "size-2**63": [SnapEntry("f", 2**63, 2, 3, 4, b"h" * 16)],
}


@pytest.mark.parametrize("case", sorted(_UNENCODABLE))
@pytest.mark.parametrize("which", TWINS)
def test_codec_refuses_what_the_layout_cannot_hold(which, case):
    """An entry the layout cannot represent raises instead of writing a wrong blob."""
    twin = load_twin(which)
    with pytest.raises((ValueError, OverflowError, struct.error)):
        twin.encode_entries(_UNENCODABLE[case])


_DECODE_CUTS = """
import sys
from wqscan import _scan_c, _scan_py
from wqscan.scan.records import SnapEntry
twin = _scan_c if sys.argv[1] == "c" else _scan_py
a = SnapEntry("abc", 1, 2, 3, 4, b"h" * 16, True)
b = SnapEntry("defg", 5, 6, 7, 8, b"i" * 16)
blob = _scan_py.encode_entries([a, b])
ends = {1, len(_scan_py.encode_entries([a])), len(blob)}
for cut in range(2, len(blob)):
    if cut in ends:
        continue
    try:
        got = twin.decode_entries(blob[:cut])
    except Exception as e:
        print(cut, "raised", type(e).__name__)
    else:
        print(cut, "returned", repr(got)[:60])
"""


@pytest.mark.parametrize("which", TWINS)
def test_decode_truncated_blob_raises(which):
    """A blob cut inside an entry is refused, never read past its end (run in a subprocess)."""
    load_twin(which)
    done = subprocess.run([sys.executable, "-c", _DECODE_CUTS, which], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"decoder crashed: {done.returncode} {done.stderr[-500:]}"
    lines = done.stdout.splitlines()
    assert len(lines) > 40
    returned = [line for line in lines if " returned " in line]
    assert returned == []


# -- 4. the same walk ------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    name: str
    totals: ScanTotals
    results: list[DirResult]
    repos: list
    warnings: list
    snapshot: dict[str, bytes]

    def ops(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in self.results:
            for c in r.changes:
                assert c.path not in out, f"{c.path} changed twice in one scan"
                out[c.path] = c.op
        return out


def _build(root: Path, outside: Path) -> None:
    """Nested dirs, byte-order traps, UTF-8 names, symlinks, a fifo, a bad name, racy and
    fresh files."""
    for rel in ("a/x.txt", "a/a", "a/sub/deep.txt", "a-b", "a.b", "a0", "a!", "b.skip",
                "é.txt", "日本語/文書.md", "z😀", "x/a", "x/a-b", "x/a0", "x/a.d/in.txt",
                "x/ä/ö.txt", "x/a\u00e9"):
        write(root / rel, f"<{rel}>")
    (root / "empty").mkdir()
    os.symlink("..", root / "a" / "up")  # to its own ancestor
    os.symlink("a0", root / "link")
    os.symlink("a", root / "dlink")
    os.symlink(outside, root / "out")
    os.mkfifo(root / "fifo")
    write(root / "racy.txt", "racy", T0 - SEC)  # hashed, but recorded as racy
    write(root / "fresh.txt", "fresh", T0 - SEC // 10)  # within settle: deferred
    bad = os.path.join(os.fsencode(root), b"bad-\xff\xfe")
    fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"not utf-8")
    os.close(fd)
    os.utime(bad, ns=(T0 - 100 * SEC, T0 - 100 * SEC))


SINCE_LAST_SCAN = "since the last scan"  # eager_from_ns as reconcile sets it: the time of
# the last scan (every file before the first)


class _Twin:
    """One twin scanning the shared tree with its own in-memory snapshot."""

    def __init__(self, which: str, base: ScanParams) -> None:
        self.mod = load_twin(which)
        self.base = base
        self.hooks = MemHooks()
        self.steps: list[Step] = []
        self.last_ns = EAGER_ALL

    def scan(self, name: str, k: int, scope: tuple[str, ...]) -> None:
        params = self.base._replace(start_ns=T0 + k * 10 * SEC, scope=scope)
        if params.eager_from_ns == SINCE_LAST_SCAN:
            params, self.last_ns = params._replace(eager_from_ns=self.last_ns), time.time_ns()
        h = self.hooks
        h.reset()
        h.scope = scope
        totals = self.mod.walk(params, h)
        h.commit()
        self.steps.append(Step(name, totals, h.results, h.repos, h.warnings, dict(h.snap)))


def _run_both(tmp_path: Path, base: ScanParams) -> dict[str, list[Step]]:
    """First scan, rescan, modify, delete, rename a directory, scoped scans, a full scan:
    each twin scans each state of the tree in turn; the tree changes between scans."""
    root = tmp_path / "tree"
    outside = tmp_path / "outside"
    write(outside / "o.txt", "outside")
    root.mkdir()
    _build(root, outside)
    twins = {w: _Twin(w, base._replace(root=str(root))) for w in TWINS}

    def both(name: str, k: int, scope: tuple[str, ...] = ()) -> None:
        for t in twins.values():
            t.scan(name, k, scope)

    both("first", 0)
    both("rescan", 1)
    write(root / "a0", "A0", OLD_NS + SEC)  # same size, new content
    os.utime(root / "a.b", ns=(OLD_NS + SEC, OLD_NS + SEC))  # touched, same content
    write(root / "a-b", "a-b has grown")
    os.chmod(root / "x" / "a", 0o600)  # ctime only
    both("modify", 2)
    (root / "日本語" / "文書.md").unlink()
    (root / "a!").unlink()
    (root / "a.b").unlink()
    write(root / "a.b" / "inner.txt", "file became a directory")
    shutil.rmtree(root / "x" / "a.d")
    both("delete", 3)
    os.rename(root / "a", root / "a1")
    both("rename-dir", 4)
    (root / "a1" / "x.txt").unlink()
    (root / "a-b").unlink()
    both("scoped", 5, ("a1",))
    shutil.rmtree(root / "a1" / "sub")
    both("scoped-missing-ancestor", 6, ("a1", "sub", "deep.txt"))
    both("full", 7)
    return {w: t.steps for w, t in twins.items()}


VARIANTS = {
    "default": {},
    "follow-symlinks": {"follow_symlinks": True},
    "max-depth-2": {"max_depth": 2},
    "minimal": {"minimal": True},
    "max-size-6": {"max_size": 6},
    "threads-4": {"threads": 4},
    # workers hash every file as they list it, needed or not: the merge counts only the
    # hashes it takes, so totals match the pure twin's at every step
    "threads-4-hash-ahead-all": {"threads": 4, "eager_from_ns": EAGER_ALL},
    "threads-4-hash-ahead-since-last-scan": {"threads": 4, "eager_from_ns": SINCE_LAST_SCAN},
    "include-md-txt": {"include": ("*.txt", "*.md", "!a/**")},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_twins_walk_identically(tmp_path, variant):
    """Same DirResults, totals, hook calls and snapshot from both twins at every step."""
    base = ScanParams(root="", start_ns=T0, settle_ns=SEC // 2, ignore=("*.skip",),
                      **VARIANTS[variant])
    runs = _run_both(tmp_path, base)
    for c, py in zip(runs["c"], runs["py"], strict=True):
        assert c.results == py.results, c.name
        assert c.totals == py.totals, c.name
        assert c.repos == py.repos, c.name
        assert c.warnings == py.warnings, c.name
        assert c.snapshot == py.snapshot, c.name
    assert any(s.results for s in runs["py"])


def test_python_hash_fallback_walks_identically():
    """Without the xxhash C symbols (forced by WQSCAN_XXH_PYTHON=1) the compiled twin hashes
    through xxhash's Python API on the calling thread: the parity tests above pass in that
    mode too, in a process of their own."""
    _scan_c = load_twin("c")  # the pure-Python pass has no compiled twin to check

    if os.environ.get("WQSCAN_XXH_PYTHON"):
        assert not _scan_c.XXH_SYMBOLS
        pytest.skip("this process is the fallback run")
    assert _scan_c.XXH_SYMBOLS
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
         "twins_walk_identically or python_hash_fallback or eager_hashing", __file__],
        env={**os.environ, "WQSCAN_XXH_PYTHON": "1"}, capture_output=True, text=True,
        cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(rf"^{len(VARIANTS) + 1} passed, 1 skipped", done.stdout, re.M), \
        done.stdout[-500:]


def test_walk_sequence_expected_operations(tmp_path):
    """The operations of the sequence are the expected ones (so parity is not vacuous)."""
    base = ScanParams(root="", start_ns=T0, settle_ns=SEC // 2, ignore=("*.skip",))
    runs = _run_both(tmp_path, base)
    expected = {
        "first": {p: "ingest" for p in (
            "a/x.txt", "a/a", "a/sub/deep.txt", "a-b", "a.b", "a0", "a!", "é.txt",
            "日本語/文書.md", "z😀", "x/a", "x/a-b", "x/a0", "x/a.d/in.txt", "x/ä/ö.txt",
            "x/a\u00e9", "racy.txt")},
        "rescan": {"fresh.txt": "ingest"},
        "modify": {"a0": "update", "a-b": "update"},
        "delete": {"日本語/文書.md": "delete", "a!": "delete", "a.b": "delete",
                   "a.b/inner.txt": "ingest", "x/a.d/in.txt": "delete"},
        "rename-dir": {"a/x.txt": "delete", "a/a": "delete", "a/sub/deep.txt": "delete",
                       "a1/x.txt": "ingest", "a1/a": "ingest", "a1/sub/deep.txt": "ingest"},
        "scoped": {"a1/x.txt": "delete"},
        "scoped-missing-ancestor": {"a1/sub/deep.txt": "delete"},
        "full": {"a-b": "delete"},
    }
    for which in TWINS:
        got = {s.name: s.ops() for s in runs[which]}
        assert got == expected, which
        first = runs[which][0]
        assert first.totals.deferred == 1 and first.totals.errors == 1
        assert any("not valid UTF-8" in m for _, m in first.warnings)
        # rows and names come in byte order, a directory's key being its name plus "/"
        names = [e.name for e in _scan_py.decode_entries(first.snapshot[""])]
        assert names == sorted(names, key=str.encode)
        results = [r.key for r in first.results]
        assert results == sorted(results, key=str.encode)
        assert results.index("a-b/") if "a-b/" in results else True
        assert results.index("a/") < results.index("x/")
        racy = {e.name: e.racy for e in _scan_py.decode_entries(first.snapshot[""])}
        assert racy["racy.txt"] and not racy["a0"]
        last = runs[which][-1].snapshot
        assert not any(k.startswith(("a/", "a1/sub/", "x/a.d/")) for k in last), which


def test_dangling_symlink_out_of_root_same_warnings(tmp_path):
    """A followed symlink that dangles outside the root is reported the same by both twins."""
    root = tmp_path / "tree"
    write(root / "f.txt", "f")
    os.symlink(tmp_path / "missing" / "target", root / "dangling-out")
    os.symlink("missing-inside", root / "dangling-in")
    write(tmp_path / "real-outside.txt", "o")
    os.symlink(tmp_path / "real-outside.txt", root / "out")
    params = ScanParams(root=str(root), start_ns=T0, follow_symlinks=True)
    got = {}
    for which in TWINS:
        hooks = MemHooks()
        totals = load_twin(which).walk(params, hooks)
        got[which] = (totals, hooks.results, hooks.warnings)
    assert ("out", "symlink leads outside the watch root; skipped") in got["py"][2]
    assert got["c"][0] == got["py"][0]
    assert got["c"][1] == got["py"][1]
    assert got["c"][2] == got["py"][2]


def test_eager_hashing_first_scan_matches(tmp_path):
    """A threaded first scan that hashes while listing gives what the pure twin gives."""
    root = tmp_path / "tree"
    for i in range(300):
        write(root / f"d{i % 7}" / f"s{i % 3}" / f"f{i}.txt", f"content {i}" * (i % 5 + 1))
    got = {}
    for which, extra in (("py", {}), ("c", {"threads": 3, "eager_from_ns": EAGER_ALL})):
        hooks = MemHooks()
        params = ScanParams(root=str(root), start_ns=T0, **extra)
        totals = load_twin(which).walk(params, hooks)
        got[which] = (totals, hooks.results)
    assert got["c"] == got["py"]
    assert got["py"][0].hashed == 300



_LIMITED_WALK = """
import json, resource, sys
from wqscan import _scan_c
from wqscan.scan.records import EAGER_ALL, ScanParams
class Hooks:
    def __init__(self): self.log = []
    def rows(self): return []
    def repo(self, rel): self.log.append(("repo", rel))
    def progress(self, *counts): pass
    def emit(self, result): self.log.append(("emit", repr(result)))
    def warn(self, rel, message, err=0): self.log.append(("warn", rel, message, err))
soft = int(sys.argv[2])
if soft:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
hooks = Hooks()
params = ScanParams(root=sys.argv[1], start_ns=%d, threads=2, eager_from_ns=EAGER_ALL)
totals = _scan_c.walk(params, hooks)
print(json.dumps([repr(totals), hooks.log]))
""" % T0


def test_c_twin_same_walk_whatever_the_descriptor_budget(tmp_path):
    """The compiled twin opens a subdirectory from its parent's descriptor while it has
    budget (a quarter of RLIMIT_NOFILE) and by its path beyond: a walk with no budget (64),
    a small one (100: 9) and the default one gives the very same results."""
    root = tmp_path / "tree"
    for a in range(5):
        for b in range(5):
            for c in range(4):
                write(root / f"a{a}" / f"b{b}" / f"c{c}" / "f.txt", f"{a}{b}{c}")
            write(root / f"a{a}" / f"b{b}" / "g.txt", f"{a}{b}")
    got = {soft: subprocess.run([sys.executable, "-c", _LIMITED_WALK, str(root), str(soft)],
                                capture_output=True, text=True, check=True).stdout
           for soft in (64, 100, 0)}
    assert got[64] == got[100] == got[0]
    assert "files=125" in json.loads(got[0])[0]

# -- 5. the same filters -----------------------------------------------------------------------

_GLOB = st.text("ab/*?[]!^-\\.é:", min_size=1, max_size=10)
_SUBJECT = st.text("ab/.é-[]!*?\\:", max_size=10)


@settings(max_examples=3000, deadline=None)
@given(glob=_GLOB, subject=_SUBJECT)
def test_glob_match_twins_agree(glob, subject):
    """The compiled matcher and the regex translation agree on every glob and subject."""
    c, py = load_twin("c"), load_twin("py")
    assert c.glob_match(glob, subject) == py.glob_match(glob, subject)


@settings(max_examples=1000, deadline=None)
@given(lines=st.lists(st.text(" ab/*?[]!#\\\r-", max_size=8), max_size=6))
def test_gitignore_rules_twins_agree(lines):
    """Both twins read the same rules out of a .gitignore file."""
    c, py = load_twin("c"), load_twin("py")
    data = "\n".join(lines).encode()
    assert c.gitignore_rules(data) == py.gitignore_rules(data)


@pytest.mark.parametrize("glob,subject,expected", [
    ("*.md", "a.md", True), ("*.md", "a/b.md", False), ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True), ("**/b", "x/y/b", True), ("**", "x/y", True),
    ("a/**", "a/x/y", True), ("a**b", "a/b", False), ("a**b", "axxb", True),
    ("[a-c]?", "bz", True), ("[!a-c]", "d", True), ("[!a-c]", "/", False),
    ("[[:digit:]]x", "7x", True), ("\\*", "*", True), ("\\*", "a", False),
    ("caf?", "café", True), ("[é]", "é", True), ("a[", "a[", True), ("?", "/", False),
])
@pytest.mark.parametrize("which", TWINS)
def test_glob_match_examples(which, glob, subject, expected):
    """Worked examples of the glob rules (gitignore's, in pathname mode)."""
    assert load_twin(which).glob_match(glob, subject) is expected


@settings(max_examples=1500, deadline=None)
@given(pattern=st.text("ab*?/!.", min_size=1, max_size=7),
       parts=st.lists(st.text("ab.", min_size=1, max_size=3).filter(lambda s: s not in (".", "..")),
                      min_size=1, max_size=3))
def test_rules_agree_with_pathspec(pattern, parts):
    """Where no ancestor directory matches, a rule matches a file exactly when pathspec's
    gitwildmatch does (pathspec also matches files below a matching directory)."""
    import pathspec

    from wqscan.scan.filters import RuleSet, parse_rule

    rule = parse_rule(pattern)
    if rule is None or rule.negate:
        return
    if "***" in pattern:  # git's wildmatch reads a run of 3+ stars as `**` (so does wqscan);
        return  # pathspec 1.1 does not, and the two disagree on, e.g., `***/???` and `aaa`
    try:
        spec = pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception:
        return
    path = "/".join(parts)
    ancestors = ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]
    if any(spec.match_file(a) for a in ancestors):
        return
    ours = RuleSet([rule]).last(parts[-1], path, False) >= 0
    assert ours == spec.match_file(path)
