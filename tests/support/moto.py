"""Run moto's S3 server on loopback, as the S3 tests' stand-in for a real bucket service."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import background_process
from tests.support.server import free_port

# Dummy credentials: moto accepts any, and passing them explicitly keeps the tests
# independent of whatever AWS configuration the machine has.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


def moto_available() -> bool:
    return importlib.util.find_spec("moto.server") is not None


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


@contextmanager
def running_moto(log_dir: Path) -> Iterator[str]:
    """Start `moto.server` on a free port; yield its endpoint URL, stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # Keep the host's AWS settings (profiles, endpoints) out of the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with background_process(
        command, log_dir / "moto.log", lambda: _answers(f"{url}/moto-api/"), env=env
    ):
        yield url
