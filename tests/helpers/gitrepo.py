"""Git repositories made for a test: git run with an environment of its own (no user or
system configuration, a fixed identity, no prompts)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_TERMINAL_PROMPT": "0",
}


def git_run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `repo` with GIT_ENV, its output captured as text."""
    return subprocess.run(["git", "-C", str(repo), *args], env=GIT_ENV, check=check,
                          capture_output=True, text=True)


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; returns its stdout, stripped."""
    return git_run(cwd, *args).stdout.strip()


def commit(repo: Path, message: str, *paths: str) -> None:
    """Stage `paths` (all changes when none is named) and commit them in `repo`."""
    git(repo, "add", *(paths or ("-A",)))
    git(repo, "commit", "-qm", message)
