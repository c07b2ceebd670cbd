"""Start a helper process for a test, wait until it answers, and always stop it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def background_process(
    command: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    *,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` with its output in `log_path` until `ready()` is true; yield it, then
    stop it (terminate, kill after 10 s). A process that dies or is not ready in time fails
    with its log."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited:\n{log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} not ready in {timeout} s: {log_path}")
                time.sleep(0.05)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
