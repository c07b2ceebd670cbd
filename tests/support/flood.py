"""Many idle TCP connections from other loopback addresses (Linux routes all of 127/8 to the
loopback interface, so a client socket may be bound to 127.0.0.2, 127.0.0.3, ...), and a
latency probe."""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import statistics
import struct
import time
from collections.abc import Iterable

HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: pacs\r\n\r\n"
# A request whose headers never end (no blank line).
PARTIAL_REQUEST = b"GET /health HTTP/1.1\r\nHost: pacs\r\nX-Slow: "


def loopback_addresses(first: int, count: int) -> list[str]:
    """127.0.0.<first> ... (first >= 2: 127.0.0.1 stays the genuine clients')."""
    return [f"127.0.{n // 256}.{n % 256}" for n in range(first, first + count)]


def raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= needed, (
        f"the test needs {needed} open files; the hard limit is {hard} (ulimit -Hn)"
    )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect(
    port: int, sources: Iterable[str], per_source: int, timeout: float = 20
) -> list[socket.socket]:
    """Open `per_source` connections from each source address to 127.0.0.1:`port`, in
    batches (a burst of thousands would overflow the listen queue); return those that
    connected."""
    pending = [(source, n) for source in sources for n in range(per_source)]
    connected: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    for start in range(0, len(pending), 500):
        batch = []
        for source, _ in pending[start : start + 500]:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", port))
            batch.append(sock)
        connected += _wait(batch, selectors.EVENT_WRITE, deadline)
    return connected


def _wait(socks: list[socket.socket], event: int, deadline: float) -> list[socket.socket]:
    """The sockets of `socks` that became ready for `event` without error by `deadline`;
    the others are closed."""
    ready: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, event)
        left = len(socks)
        while left and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                left -= 1
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    ready.append(sock)
                else:
                    sock.close()
        for key in list(selector.get_map().values()):
            assert isinstance(key.fileobj, socket.socket)
            key.fileobj.close()
    return ready


def request_all(socks: list[socket.socket], timeout: float = 30) -> int:
    """Send `/health` on each connection and read its answer's head, leaving the
    connection open (keep-alive); return how many were answered 200."""
    for sock in socks:
        sock.send(HEALTH_REQUEST)
    answered = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ, b"")
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    chunk = b""
                got = key.data + chunk
                if not chunk or b"\r\n\r\n" in got:
                    selector.unregister(sock)
                    answered += got.startswith(b"HTTP/1.1 200")
                else:
                    selector.modify(sock, selectors.EVENT_READ, got)
    return answered


def close_all(socks: list[socket.socket]) -> None:
    """Close with a reset (SO_LINGER 0): a normal close would leave thousands of ports in
    TIME_WAIT on 127.0.0.2+ for a minute, and a later test's server binding 0.0.0.0 to one
    of those port numbers would fail with "address already in use"."""
    linger = struct.pack("ii", 1, 0)
    for sock in socks:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has not closed (nothing to read, no EOF)."""
    count = 0
    for sock in socks:
        timeout = sock.gettimeout()
        sock.settimeout(0)  # a peek that never waits
        try:
            count += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
        finally:
            sock.settimeout(timeout)
    return count


def health_latencies(port: int, requests: int, timeout: float = 2) -> list[float]:
    """Seconds per `GET /health` (a new connection each, from 127.0.0.1); a failed or
    non-200 request counts as `timeout`. Stops early after 5 failures in a row."""
    latencies: list[float] = []
    failures = 0
    for _ in range(requests):
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            connection.request("GET", "/health")
            ok = connection.getresponse().status == 200
            connection.close()
        except OSError:
            ok = False
        latencies.append(time.perf_counter() - start if ok else timeout)
        failures = 0 if ok else failures + 1
        if failures == 5:
            break
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) in seconds."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]
