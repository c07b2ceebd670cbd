"""Several HTTP worker processes on one listening socket (PACS_HTTP_WORKERS), so that HTTP
work uses every core (one Python process runs on one at a time).

The first process binds the HTTP socket, starts the other workers (`pacs serve` again, with
the socket inherited: `--http-socket-fd`), then serves on it too; the kernel hands each new
connection to whichever process accepts it first. DIMSE, the orphan sweep, the outbox (the
change log to Kafka) and the removal of unfinished uploads at start stay in the first
process: workers serve HTTP only. They
share the index (SQLite in WAL mode, each write a BEGIN IMMEDIATE transaction that waits
for the others, or PostgreSQL) and the blob store, as nodes of one archive do.

Stopping: SIGTERM or SIGINT to the first process stops its server gracefully (connections
finish), then it sends SIGTERM to each worker and waits for it (SIGKILL after
`STOP_GRACE` seconds). A worker whose first process died without that gets SIGTERM from
the kernel (PR_SET_PDEATHSIG): no worker outlives it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

SOCKET_FD_FLAG = "--http-socket-fd"
PARENT_FLAG = "--http-parent-pid"
STOP_GRACE = 30.0
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("pacs")


def serve_first(app: Any, options: dict[str, Any], count: int, argv: Sequence[str]) -> int:
    """Serve `app` in this process and `count - 1` workers started with `argv` (this
    process's `pacs` arguments). An exit status."""
    config = uvicorn.Config(app, **options)
    sock = config.bind_socket()  # exits with uvicorn's message when the port is taken
    workers: list[subprocess.Popen[bytes]] = []
    received = _remember_stop_signals()
    try:
        for _ in range(count - 1):
            command = [sys.executable, "-m", "app.cli", *argv]
            command += [SOCKET_FD_FLAG, str(sock.fileno()), PARENT_FLAG, str(os.getpid())]
            workers.append(subprocess.Popen(command, pass_fds=(sock.fileno(),)))
        log.info("HTTP: %d worker processes (PACS_HTTP_WORKERS)", count)
        if received:  # stopped while the workers started
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        return 0 if server.started else 3
    finally:
        stop(workers)
        sock.close()


def serve_worker(app: Any, options: dict[str, Any], fd: int, parent: int) -> int:
    """Serve `app` on the inherited listening socket `fd` until SIGTERM or SIGINT."""
    _die_with(parent)
    _remember_stop_signals()
    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])
    return 0 if server.started else 3


def stop(workers: Sequence[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """SIGTERM to every worker still running, then wait for each; SIGKILL after `grace`."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("HTTP worker %d did not stop within %g s: killed", worker.pid, grace)
            worker.kill()
            worker.wait()


def _remember_stop_signals() -> list[int]:
    """SIGTERM and SIGINT recorded instead of ending the process at once. uvicorn handles
    both while it serves, then restores these handlers and raises the signal again: the
    first process must still stop its workers, and a worker has nothing left to do."""
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: received.append(number))
    return received


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent exits (Linux); exit now
    if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)
