"""The tenant and branch each file of a watch was last queued with.

A delete carries the pair its file was queued under, so that a consumer keyed by tenant
and branch finds what to delete: after `git checkout HEAD~200`, the files that went away
were ingested on `main`, not on the commit now checked out. Kept as the watch's usual pair
(key `*`), and per snapshot directory the pair of the directory where it differs from
that and the names whose pair differs from the directory's: a watch of one repository on
one branch needs one row.
"""
from __future__ import annotations

import json
from typing import Sequence

from ..store import Store

Label = tuple[str, str]  # (tenant_id, branch)
WATCH = "*"  # the key of the watch's usual pair (directory keys are "" or end in "/")


class Labels:
    """The labels of one watch's directories, loaded as needed and written back with the
    batch that changed them."""

    def __init__(self, store: Store, watch_id: str) -> None:
        self.store = store
        self.wid = watch_id
        self.maps: dict[str, dict[str, Label]] = {}
        self.changed: set[str] = set()
        self.dropped: set[str] = set()

    def load(self, keys: Sequence[str]) -> None:
        """Read the labels of these directories (keys) unless read already, and the
        watch's usual pair."""
        missing = [k for k in (WATCH, *keys) if k not in self.maps]
        found = self.store.labels(self.wid, missing) if missing else {}
        for key in missing:
            self.maps[key] = _decode(found.get(key))

    def _usual(self, key: str, label: Label) -> Label:
        """The pair of directory `key` (its own, else the watch's); the first pair queued
        becomes the watch's."""
        own = self.maps.get(key, {}).get("")
        if own is not None:
            return own
        watch = self.maps.setdefault(WATCH, {})
        if "" not in watch:
            watch[""] = label
            self.changed.add(WATCH)
        return watch[""]

    def of(self, key: str, name: str) -> Label | None:
        """The pair `name` in directory `key` was last queued with, if known (loaded)."""
        labels = self.maps.get(key, {})
        return labels.get(name) or labels.get("") or self.maps.get(WATCH, {}).get("")

    def queued(self, key: str, name: str, label: Label) -> None:
        """`name` was queued with `label`."""
        labels = self.maps.setdefault(key, {})
        if label == self._usual(key, label):
            if labels.pop(name, None) is not None:
                self.changed.add(key)
        else:
            labels[name] = label
            self.changed.add(key)

    def queued_dir(self, key: str, label: Label) -> None:
        """Every file of a directory new to the snapshot was queued with `label`."""
        if label != self._usual(key, label):
            self.maps.setdefault(key, {})[""] = label
            self.changed.add(key)

    def gone(self, key: str, name: str) -> None:
        """`name` left the snapshot."""
        labels = self.maps.get(key)
        if labels is not None and labels.pop(name, None) is not None:
            self.changed.add(key)

    def drop(self, key: str) -> None:
        """The directory left the snapshot."""
        self.maps[key] = {}
        self.changed.discard(key)
        self.dropped.add(key)

    def write(self) -> None:
        """Write what changed since the last write (inside the caller's transaction; it
        may run again if the transaction is retried): `written` forgets it once committed."""
        rows = [(k, json.dumps({n: list(v) for n, v in self.maps[k].items()},
                               separators=(",", ":"))) for k in sorted(self.changed)]
        self.store.write_labels(self.wid, sorted(self.dropped - self.changed), rows)

    def written(self) -> None:
        """What `write` wrote is committed: forget it."""
        self.changed, self.dropped = set(), set()
        # a scan meets each directory once: what is written is not needed again
        self.maps = {WATCH: self.maps[WATCH]} if WATCH in self.maps else {}


def _decode(text: str | None) -> dict[str, Label]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {n: (str(v[0]), str(v[1])) for n, v in value.items()
            if isinstance(v, list) and len(v) == 2}
