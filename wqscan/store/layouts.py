"""The two queue layouts as objects: everything that differs between wqscan's own
`ingestion_queue` (docs/consuming.md) and workspace-qdrant-mcp's
(docs/workspace-qdrant-mcp.md), answered by the one object the store builds when it opens
a database."""
from __future__ import annotations

from typing import Any, NamedTuple

from ..model import QUEUE_STATUSES

WQSCAN = "wqscan"
WQM = "workspace-qdrant-mcp"
LAYOUTS = (WQSCAN, WQM)


class Layout(NamedTuple):
    """The queue layout found in a database, and what the store and its callers need to
    know of it (the answers that differ are the subclasses' class attributes)."""

    own: bool  # created by wqscan: every object in it is wqscan's to migrate
    watch_columns: frozenset[str]  # the columns watch_folders has
    queue_columns: frozenset[str]  # the columns ingestion_queue has
    pending_index: str = ""  # wqscan layout: the unique index of pending rows
    claim_index: str = ""
    active_index: str = ""
    queue_triggers: bool = False  # ingestion_queue has triggers: changes are not all rows
    # columns of watch_folders that are NOT NULL without a default (another's table)
    required_watch_columns: tuple[str, ...] = ()

    name = ""  # WQSCAN or WQM: in messages and `status`
    keyed_by_path = False  # one row per path, whatever its collection
    claims = False  # the consumer API (claim, complete, fail) works on it
    # a merged row is rewritten even when its operation stays (takes the new metadata)
    rewrites_unchanged = False
    # previous_hash is what the consumer last saw: an update back to it leaves nothing to do
    seen_is_consumers = False
    statuses = ()  # the statuses its rows can have

    @property
    def queue_metadata(self) -> bool:
        """Whether ingestion_queue has the optional metadata column."""
        return "metadata" in self.queue_columns

    @property
    def adds_queue_indexes(self) -> bool:
        """Whether wqscan adds its own `wq_` indexes to a queue it did not create."""
        return False

    def stamp(self, iso: str) -> str:
        """A time (ISO-8601 UTC with ms) as the layout's own tables hold times."""
        return iso

    def claims_refused(self, path: str) -> str:
        """Why the consumer API does not work on this layout ('' where it does)."""
        return ""

    def depth_in(self, stored: Any) -> Any:
        """A `recursive_depth` as the layout's table holds it, in wqscan's terms: find's
        -maxdepth (the root's children have depth 1), None for unlimited."""
        return stored

    def depth_out(self, depth: int | None) -> Any:
        """A depth in wqscan's terms as the layout's table holds it."""
        return depth


class WqscanLayout(Layout):
    """wqscan's queue: one row per operation with its own id, status and lease; at most
    one pending row per file and collection."""

    __slots__ = ()
    name = WQSCAN
    keyed_by_path = False
    claims = True
    rewrites_unchanged = True
    # its consumers index what rows name, so previous_hash is what they last saw
    seen_is_consumers = True
    statuses: tuple[str, ...] = QUEUE_STATUSES

    @property
    def adds_queue_indexes(self) -> bool:
        return not self.own


class WqmLayout(Layout):
    """workspace-qdrant-mcp's queue: one row per path whose presence means "to do", with no
    id, status or lease; that project's daemon consumes it."""

    __slots__ = ()
    name = WQM
    keyed_by_path = True
    claims = False  # no status or lease columns to claim with
    rewrites_unchanged = False  # a rewrite could only be lost to its delete
    # Its consumer indexes each file as it is when it takes the row, so the hash wqscan
    # last recorded is not necessarily the one it holds: a row is never dropped on it.
    seen_is_consumers = False
    statuses: tuple[str, ...] = ("pending",)  # every row is waiting

    def stamp(self, iso: str) -> str:
        """`YYYY-MM-DD HH:MM:SS` (UTC), as that project's tables hold times."""
        return f"{iso[:10]} {iso[11:19]}"

    def depth_in(self, stored: Any) -> Any:
        """-1 is unlimited and N is N levels below the root (wqscan's depth minus one); a
        malformed value is left for the watch parser to report."""
        if stored is None or isinstance(stored, bool) or not isinstance(stored, int):
            return stored
        return None if stored < 0 else stored + 1

    def depth_out(self, depth: int | None) -> Any:
        return -1 if depth is None else depth - 1

    def claims_refused(self, path: str) -> str:
        return (f"database {path} has the {self.name} layout, which that project's daemon "
                "consumes: it has no status or lease columns to claim rows with (wqscan "
                "queue list and stats work)")
