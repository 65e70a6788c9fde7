"""The real server the tests run against: crates/spawner/tests/clients.rs starts a
`spawner serve` and passes SPAWNER_URL and SPAWNER_TOKEN; and a TCP relay that can cut
connections, to drop a stream mid-way."""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
from typing import Any, Dict, Iterator, List, Optional

import pytest

URL = os.environ.get("SPAWNER_URL", "")
TOKEN = os.environ.get("SPAWNER_TOKEN", "")
if not URL or not TOKEN:
    raise RuntimeError(
        "SPAWNER_URL and SPAWNER_TOKEN must name a running spawner serve "
        "(cargo nextest run -p spawner --test clients runs these tests with one)"
    )

_n = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test uses (keys, labels, pools)."""
    return f"{prefix}-{os.getpid()}-{next(_n)}"


def example_app(**extra: Any) -> Dict[str, Any]:
    """The bundled example app; `spawner` is the server's own binary."""
    return {"executable": {"command": ["spawner", "example-app"]}, **extra}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Relay:
    """A TCP relay to the server: `url` reaches it through the relay; `cut()` closes every
    connection through it (both sides), as a network failure would; `break_after_event(n)`
    has the next connection carry the server's bytes up to the end of the SSE message with
    `id: n` and no further, then die (mid-stream, whatever the chunks). `requests` holds the
    head of every request seen."""

    def __init__(self) -> None:
        host, port = URL.rsplit("//", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: List[str] = []
        self.pairs: List[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.armed: Optional[int] = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((down, up))
            break_at, self.armed = self.armed, None
            threading.Thread(target=self._pump, args=(down, up, True, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False, break_at), daemon=True).start()

    def break_after_event(self, n: int) -> None:
        self.armed = n

    def _pump(self, src: socket.socket, dst: socket.socket, client: bool, break_at: Optional[int]) -> None:
        head = b""
        seen = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if break_at is not None:
                    before = len(seen)
                    seen += data
                    m = re.search(rb"(^|\n)id: %d\n(?:[^\n]+\n)*\n" % break_at, seen)
                    if m:
                        dst.sendall(data[: m.end() - before])
                        break
                if client and len(head) < 4096:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end >= 0:
                        self.requests.append(head[:end].decode("latin1"))
                        head = b""
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for down, up in pairs:
            for s in (down, up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.close()
