"""A real HTTP receiver of webhooks for the tests: a threading http.server on loopback that
records each POST (headers, body, whether its signature verifies) and answers, per path,
with the statuses it is told to (`script[path]` first, then `status[path]`, else 200),
after `delay` seconds each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from app.broker.webhook_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    signed: bool  # the signature verifies with the secret the receiver knows
    status: int  # what it answered
    client: tuple[str, int] = ("", 0)  # the sender's address and port: its connection


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.status: dict[str, int] = {}
        self.script: dict[str, list[int]] = {}  # answered first, in order
        self.delay = 0.0
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.url = ""

    def handle(
        self, path: str, headers: dict[str, str], raw: bytes, client: tuple[str, int]
    ) -> int:
        time.sleep(self.delay)
        with self._lock:
            script = self.script.get(path)
            status = script.pop(0) if script else self.status.get(path, 200)
            signed = verify(
                self.secret,
                headers.get(TIMESTAMP_HEADER.lower(), ""),
                raw,
                headers.get(SIGNATURE_HEADER.lower(), ""),
            )
            body = orjson.loads(raw)
            self.received.append(Received(path, headers, body, signed, status, client))
        return status

    def delivered(self, path: str | None = None) -> list[Received]:
        """What it took (a 2xx), in the order it came."""
        with self._lock:
            return [
                r
                for r in self.received
                if 200 <= r.status < 300 and (path is None or r.path == path)
            ]

    def wait_for(self, count: int, timeout: float, path: str | None = None) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(found := self.delivered(path)) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} after {timeout} s"
            time.sleep(0.05)
        return found


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(self.path, headers, raw, self.client_address[:2])
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
