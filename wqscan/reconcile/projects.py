"""The tenant and branch of each directory a scan queues files from: those of its nearest
project root (a directory holding `.git`), else of the project the watch root lies in."""
from __future__ import annotations

import os
from typing import Callable

from ..scan import gitinfo


class Projects:
    """The project roots one walk met, and the project of each directory asked for (each
    root described once, each directory's root found once)."""

    def __init__(self, root: str, warn: Callable[[str, str], None]) -> None:
        self.root = root
        self.warn = warn  # told when git cannot describe a project
        self.git_dirs: set[str] = set()  # directories (relative) holding `.git`
        self.projects: dict[str, gitinfo.Project] = {}
        self.project_of_dir: dict[str, str] = {}
        self.above_root = gitinfo.project_root_above(root)

    def add(self, rel: str) -> None:
        """Directory `rel` holds a `.git` entry."""
        self.git_dirs.add(rel)

    def of(self, rel_dir: str) -> gitinfo.Project:
        """Tenant and branch for files of a directory: its nearest project root's."""
        root = self.project_of_dir.get(rel_dir)
        if root is None:
            d = rel_dir
            while True:
                if d in self.git_dirs:
                    root = os.path.join(self.root, d) if d else self.root
                    break
                if not d:
                    root = self.above_root
                    break
                d = d.rpartition("/")[0]
            self.project_of_dir[rel_dir] = root
        project = self.projects.get(root)
        if project is None:
            project = self.projects[root] = gitinfo.describe(root, self.warn)
        return project
