"""Shared fixtures: the scanner twin under test (ids `c` and `py`), in process or in a child's
environment, a database, trees, no configuration from the environment."""
from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.db import Db
from helpers.twins import load_twin, twin, twin_environ  # noqa: F401  (fixture `twin`)

from wqscan import _scan
from wqscan.store import Store, Target

# Subprocesses (`python -m wqscan`, `python -c`) must import the installed package, not
# the source tree of a checkout that has no compiled scanner: no cwd on their sys.path.
os.environ["PYTHONSAFEPATH"] = "1"

# A run started as a shell's background job ignores SIGINT, and every child would inherit
# that (an exec keeps an ignored signal); the tests that interrupt a child need the
# default, which a handler here gives them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items) -> None:
    """With WQSCAN_NO_EXTENSIONS=1 (the pure-Python scanner pass) skip what the
    compiled-scanner pass already ran unchanged: tests whose subject is not the scanner,
    and tests parametrized over the twins (that pass runs their `py` case too). What is
    left runs on the scanner the selector picks: the pure one."""
    if not _scan.NO_EXTENSIONS:
        return
    free = pytest.mark.skip(reason="not about the scanner; runs in the compiled-scanner pass")
    twins = pytest.mark.skip(reason="runs with both twins in the compiled-scanner pass")
    for item in items:
        if item.get_closest_marker("scanner_free"):
            item.add_marker(free)
        elif "twin" in getattr(item, "fixturenames", ()):
            item.add_marker(twins)


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory) -> Iterator[Path]:
    """$XDG_STATE_HOME in a temporary directory for the whole run, children included: the
    git hooks the tests install log there, never in the home of whoever runs them."""
    saved = os.environ.get("XDG_STATE_HOME")
    path = tmp_path_factory.mktemp("state")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if saved is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture(params=["c", "py"])
def env(request) -> dict[str, str]:
    """The environment that makes `python -m wqscan` use one scanner twin."""
    load_twin(request.param)  # skips `c` when the test run asks for the pure scanner
    return twin_environ(request.param)


@pytest.fixture
def no_ambient_config(monkeypatch, tmp_path) -> None:
    """No database or configuration from the environment of whoever runs the tests; a
    default database, if one is ever used, lands in the test's directory."""
    monkeypatch.delenv("WQSCAN_DB", raising=False)
    monkeypatch.delenv("WQSCAN_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.open(str(tmp_path / "wq.db"))
    yield s
    s.close()


@pytest.fixture
def root(tmp_path) -> Path:
    d = tmp_path / "tree"
    d.mkdir()
    return d


# Why this session has no PostgreSQL, once a start failed: the start is tried once.
_pg_unavailable: list[str] = []


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The libpq URL of a PostgreSQL server for the session: $WQSCAN_TEST_PG as is, else a
    throwaway cluster (tests/pg_cluster.py) stopped at the end; skips, saying why, without."""
    from pg_cluster import Cluster, ClusterError

    if not _pg_unavailable:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            _pg_unavailable.append(f"psycopg is not importable ({e})")
    if _pg_unavailable:
        pytest.skip(f"PostgreSQL unavailable: {_pg_unavailable[0]}")
    url = os.environ.get("WQSCAN_TEST_PG")
    if url:
        yield url
        return
    try:
        cluster = Cluster()
    except (ClusterError, OSError) as e:
        _pg_unavailable.append(str(e))
        pytest.skip(f"PostgreSQL unavailable: {e}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_schema(pg_server: str) -> Iterator[str]:
    """A fresh schema name on pg_server, `t_` and 8 hex digits (not created: the test or
    the code under test does that); dropped with all it holds at teardown."""
    import psycopg
    from psycopg import sql

    name = f"t_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(pg_server, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "pg"])
def database(request, tmp_path) -> Db:
    """A fresh database on each store: an SQLite file, or a schema of the session's
    PostgreSQL server (skipped, saying why, when there is none)."""
    if request.param == "sqlite":
        return Db("sqlite", Target(str(tmp_path / "wq.db")))
    return Db("pg", Target(request.getfixturevalue("pg_server"),
                           request.getfixturevalue("pg_schema")))


@pytest.fixture
def dbstore(database: Db) -> Iterator[Store]:
    """A store on either engine (fixture `database`): an SQLite file or a PostgreSQL schema;
    the tests that take it use the store interface only."""
    with database.open() as s:
        yield s


@pytest.fixture(params=["held", "spilled"])
def holding(request, monkeypatch) -> str:
    """What a scan holds until the mass-delete guard decides: in memory, or (HOLD_CHANGES
    at 7) mostly in the spill file, as a scan with more than 20,000 changes does."""
    if request.param == "spilled":
        from wqscan.reconcile import batches

        monkeypatch.setattr(batches, "HOLD_CHANGES", 7)
    return request.param
