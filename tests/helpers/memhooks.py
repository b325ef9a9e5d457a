"""ScanHooks over an in-memory snapshot (the twins' parity tests), and with a directory
cache too (the directory cache's walk-level tests and its benchmark)."""
from __future__ import annotations

from wqscan.scan.records import DirResult


class MemHooks:
    """ScanHooks over an in-memory snapshot that logs every call."""

    def __init__(self) -> None:
        self.snap: dict[str, bytes] = {}
        self.reset()

    def reset(self, scope: tuple[str, ...] = ()) -> None:
        """Forget the last walk's calls; the next walks `scope`."""
        self.repos: list[str] = []
        self.progressed: list[tuple[int, ...]] = []
        self.results: list[DirResult] = []
        self.warnings: list[tuple[str, str]] = []
        self.scope = scope

    def rows(self) -> list[tuple[str, bytes]]:
        keys = sorted(self.snap, key=str.encode)
        if self.scope:
            inside = "/".join(self.scope) + "/"
            ancestors = {"/".join(self.scope[:i]) + "/" if i else ""
                         for i in range(len(self.scope))}
            keys = [k for k in keys if k in ancestors or k.startswith(inside)]
        return [(k, self.snap[k]) for k in keys]

    def repo(self, rel: str) -> None:
        self.repos.append(rel)

    def progress(self, *counts: int) -> None:
        self.progressed.append(counts)

    def emit(self, result: DirResult) -> None:
        self.results.append(result)

    def warn(self, rel: str, message: str, err: int = 0) -> None:
        self.warnings.append((rel, message))

    def commit(self) -> None:
        """Apply the emitted results, as reconcile commits them."""
        for r in self.results:
            for key in r.removed:
                del self.snap[key]
            if r.blob is not None:
                self.snap[r.key] = r.blob


class CacheHooks(MemHooks):
    """MemHooks with a directory cache, applied after each walk as reconcile writes it."""

    def __init__(self) -> None:
        self.cache: dict[str, bytes] = {}
        self.read_cache = 0  # how often the walk asked for the cache
        super().__init__()

    def reset(self, scope: tuple[str, ...] = ()) -> None:
        super().reset(scope)
        self.listed: list[tuple[str, bytes | None]] = []

    def listings(self) -> list[tuple[str, bytes]]:
        self.read_cache += 1
        return [(k, self.cache[k]) for k in sorted(self.cache, key=str.encode)]

    def listing(self, key: str, entry: bytes | None) -> None:
        self.listed.append((key, entry))

    def commit(self) -> None:
        super().commit()
        for key, entry in self.listed:
            if entry is None:
                self.cache.pop(key, None)
            else:
                self.cache[key] = entry

    def ops(self) -> dict[str, str]:
        return {c.path: c.op for r in self.results for c in r.changes}
