"""One scanner per watch at a time, across processes: a lease row per watch.

A lease names its holder as host:pid:start-time. On the same host a holder whose
process is gone (or whose pid was reused) is dead and its lease is taken over at
once; a holder on another host keeps its lease until it expires, by the store's clock
(the server's, on PostgreSQL, where hosts meet). A scan renews its lease whenever it
commits.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

from ..clock import iso_from_ns
from ..errors import WatchHeld, WqscanError
from ..store import Store

LEASE_SECONDS = 300.0
POLL_SECONDS = 0.2
DROP_RETRIES = (0.5,)  # a lease left behind dies with its process: no long wait to drop it


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 and fields[0] != b"Z" else None


def holder_id(pid: int | None = None) -> str:
    """This process (or a child of it, while it runs) as a lease holder."""
    pid = os.getpid() if pid is None else pid
    return f"{os.uname().nodename}:{pid}:{_start_time(pid)}"


def holder_alive(holder: str) -> bool | None:
    """Whether the holder's process still runs; None when it is on another host."""
    host, _, rest = holder.partition(":")
    pid, _, start = rest.partition(":")
    if host != os.uname().nodename or not pid.isdigit():
        return None
    return _start_time(int(pid)) == start


def _expiry(now_ns: int, seconds: float = LEASE_SECONDS) -> str:
    return iso_from_ns(now_ns + int(seconds * 1e9))


@contextmanager
def hold(store: Store, watch_id: str, wait: float = 0.0) -> Iterator[str]:
    """Hold the lease of a watch for the duration of the block; if another live process
    holds it, retry for `wait` seconds, then raise WatchHeld."""
    me = holder_id()
    deadline = time.monotonic() + wait
    def take() -> tuple[str, str, str] | None:
        """The lease another live process holds, or None once this one has taken it."""
        current = store.lease(watch_id)
        now_ns = store.clock_ns()
        if current is None or current[0] == me or not _held(current, now_ns):
            store.put_lease(watch_id, me, iso_from_ns(now_ns), _expiry(now_ns))
            return None
        return current

    while True:
        current = store.transact(take)
        if current is None:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise WatchHeld(f"watch {watch_id} is being scanned by another process "
                            f"({current[0]}); --wait SECONDS waits for it")
        time.sleep(min(POLL_SECONDS, left))
    try:
        yield me
    finally:
        release(store, watch_id, me)


def release(store: Store, watch_id: str, holder: str) -> None:
    """Drop the lease `holder` holds on a watch, if it still does. Best effort: a lease
    left behind dies with its process on this host, and expires for the others."""
    try:
        with store.write(retries=DROP_RETRIES):
            store.drop_lease(watch_id, holder)
    except WqscanError:
        pass


def renew(store: Store, watch_id: str, holder: str) -> None:
    """Push the expiry of a held lease forward (inside the caller's transaction)."""
    store.renew_lease(watch_id, holder, _expiry(store.clock_ns()))


def _held(lease: tuple[str, str, str], now_ns: int) -> bool:
    holder, _, expires = lease
    alive = holder_alive(holder)
    if alive is not None:
        return alive
    return expires > iso_from_ns(now_ns)
