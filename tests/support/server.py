"""Run `pacs serve` as a user would: a separate process on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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


@contextmanager
def running_server(data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start the server with its data in `data`; yield its base URL (no /dicomweb)."""
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data", str(data), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        # DIMSE off unless asked for (--dimse-port): servers run side by side in the suite.
        env={**os.environ, "PACS_DIMSE_PORT": "0", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError((data / "server.log").read_text())
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 30 s")
            time.sleep(0.05)
        PIDS[url] = process.pid
        yield url
    finally:
        PIDS.pop(url, None)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
