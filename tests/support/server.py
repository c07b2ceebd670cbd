"""Run `pacs serve` as a user would: a separate process on a free port."""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import background_process

# Process id of each running server, by base URL (for memory measurements).
PIDS: dict[str, int] = {}


def peak_rss_bytes(url: str) -> int:
    """Peak resident memory of the server process at `url` (VmHWM)."""
    status = Path(f"/proc/{PIDS[url]}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(url, timeout=1, verify=verify).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_server(
    data: Path,
    *args: str,
    env: dict[str, str] | None = None,
    https: ssl.SSLContext | None = None,
    port: int | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """Start the server with its data in `data` on `port` (default: a free one); yield its
    base URL (no /dicomweb). With `https` (the client context that trusts its certificate)
    the URL is https. Its output goes to `log` (default: server.log in `data`)."""
    port = port or free_port()
    data.mkdir(parents=True, exist_ok=True)
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data", str(data), *args
    ]  # fmt: skip
    # DIMSE off unless asked for (--dimse-port): servers run side by side in the suite. One
    # HTTP process unless asked for (PACS_HTTP_WORKERS): a worker per core in every server
    # of the suite would only add start-up time and memory on a shared machine.
    environment = {**os.environ, "PACS_DIMSE_PORT": "0", "PACS_HTTP_WORKERS": "1", **(env or {})}
    with background_process(
        command,
        log or data / "server.log",
        lambda: _answers(f"{url}/health", https or True),
        env=environment,
    ) as process:
        PIDS[url] = process.pid
        try:
            yield url
        finally:
            PIDS.pop(url, None)
