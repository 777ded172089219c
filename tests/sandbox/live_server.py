"""A real uvicorn server in a thread, configured as `shoplab sandbox serve` configures it (for tests that
need real sockets: raw requests, body limits, ShoppingBench's own client)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from sandbox.server import server_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: Any, log_level: str = "warning") -> Iterator[int]:
    """Serve `app` on a free loopback port until the block ends; yields the port."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
