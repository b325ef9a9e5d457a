"""A PostgreSQL connection cut at the worst moment: a proxy on a Unix socket of its own
that passes bytes both ways between clients and a server, and cuts every connection of
a client at its next COMMIT (or other `marker`), either before the server gets it (the
transaction is aborted) or after the server answered it (committed, the answer lost)."""
from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

PORT = 5432
COMMIT = b"COMMIT\x00"  # in the client's Parse and in the server's CommandComplete


class CuttingProxy:
    """Proxies `server_dir`'s socket at `url`; `cut = "request"` or `"answer"` cuts the
    next COMMIT, or the next message holding `marker` (then sets `cut` back to None and
    `done` to what it cut). `requests` holds what clients sent, chunk by chunk."""

    def __init__(self, server_dir: str) -> None:
        self.server = os.path.join(server_dir, f".s.PGSQL.{PORT}")
        self.dir = Path(tempfile.mkdtemp(prefix="wqscan-proxy-", dir="/tmp"))
        self.cut: str | None = None
        self.done: str | None = None
        self.marker = COMMIT
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.dir / f".s.PGSQL.{PORT}"))
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"postgresql://wqscan@/postgres?host={quote(str(self.dir), safe='/')}&port={PORT}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.server)
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "request", pair),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "answer", pair),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, side: str,
              pair: tuple[socket.socket, socket.socket]) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if data and side == "request":
                self.requests.append(data)
            if data and self.marker in data:
                with self._lock:
                    cutting = self.cut == side
                    if cutting:
                        self.cut, self.done = None, side
                if cutting:
                    data = b""
            if not data:
                for s in pair:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
                return
            try:
                dst.sendall(data)
            except OSError:
                return
