"""Run moto's S3 server on loopback, as the S3 tests' stand-in for a real bucket service."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.server import free_port

# Dummy credentials: moto accepts any, and passing them explicitly keeps the tests
# independent of whatever AWS configuration the machine has.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


def moto_available() -> bool:
    return importlib.util.find_spec("moto.server") is not None


@contextmanager
def running_moto(log_dir: Path) -> Iterator[str]:
    """Start `moto.server` on a free port; yield its endpoint URL, stop it afterwards."""
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        # Keep the host's AWS settings (profiles, endpoints) out of the server.
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError((log_dir / "moto.log").read_text())
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not start in 30 s")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
