"""ScanHooks over an in-memory snapshot and directory cache (the walk-level tests of the
directory cache, and its benchmark)."""
from __future__ import annotations

from wqscan.scan.records import DirResult


class CacheHooks:
    """ScanHooks over an in-memory snapshot and directory cache, applied after each walk
    as reconcile commits them."""

    def __init__(self) -> None:
        self.snap: dict[str, bytes] = {}
        self.cache: dict[str, bytes] = {}
        self.read_cache = 0  # how often the walk asked for the cache
        self.reset()

    def reset(self, scope: tuple[str, ...] = ()) -> None:
        self.scope = scope
        self.results: list[DirResult] = []
        self.listed: list[tuple[str, bytes | None]] = []
        self.warnings: list[tuple[str, str]] = []
        self.repos: list[str] = []

    def rows(self) -> list[tuple[str, bytes]]:
        """The rows of the scanned part: a scope's ancestors and subtree (as the store)."""
        keys = sorted(self.snap, key=str.encode)
        if self.scope:
            inside = "/".join(self.scope) + "/"
            ancestors = {"/".join(self.scope[:i]) + "/" for i in range(1, len(self.scope))}
            keys = [k for k in keys if k == "" or k in ancestors or k.startswith(inside)]
        return [(k, self.snap[k]) for k in keys]

    def listings(self) -> list[tuple[str, bytes]]:
        self.read_cache += 1
        return [(k, self.cache[k]) for k in sorted(self.cache, key=str.encode)]

    def listing(self, key: str, entry: bytes | None) -> None:
        self.listed.append((key, entry))

    def repo(self, rel: str) -> None:
        self.repos.append(rel)

    def emit(self, result: DirResult) -> None:
        self.results.append(result)

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        self.warnings.append((rel, message))

    def progress(self, *counts: int) -> None:
        pass

    def commit(self) -> None:
        for r in self.results:
            for key in r.removed:
                del self.snap[key]
            if r.blob is not None:
                self.snap[r.key] = r.blob
        for key, entry in self.listed:
            if entry is None:
                self.cache.pop(key, None)
            else:
                self.cache[key] = entry

    def ops(self) -> dict[str, str]:
        return {c.path: c.op for r in self.results for c in r.changes}
