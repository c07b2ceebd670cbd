"""Several HTTP worker processes on one listening socket (PACS_HTTP_WORKERS), so that HTTP
work uses every core (one Python process runs on one at a time).

The first process binds the HTTP socket, starts the other workers (`pacs serve` again, with
the socket inherited: `--http-socket-fd`), then serves on it too. Each process accepts in a
thread of its own (`Acceptor`), and one that holds more connections than another lets the
others accept first (`LoadTable`, in memory the processes share): a burst of connections is
shared out. (Event loops polling the shared socket all woke, and the first to run took every
connection of the burst: a viewer's 4 connections all went to one process, and one core
stayed idle.)
DIMSE, the background jobs (orphan sweep, blob deletion retries, stable studies, the
outbox) and the removal of unfinished uploads at start stay in the first process: workers
serve HTTP only. They share the index (SQLite in WAL mode, each write a BEGIN IMMEDIATE
transaction that waits for the others, or PostgreSQL) and the blob store, as nodes of one
archive do.

Stopping: SIGTERM or SIGINT to the first process stops its server gracefully (connections
finish), then it sends SIGTERM to each worker and waits for it (SIGKILL after
`STOP_GRACE` seconds). A worker whose first process died without that gets SIGTERM from
the kernel (PR_SET_PDEATHSIG): no worker outlives it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from app.throttled_log import ThrottledLog

SOCKET_FD_FLAG = "--http-socket-fd"
PARENT_FLAG = "--http-parent-pid"
LOAD_FLAG = "--http-load-table"  # <fd>,<slot>: the shared LoadTable and this worker's slot
STOP_GRACE = 30.0
_PR_SET_PDEATHSIG = 1
# How often a waiting acceptor looks whether its server stops (SO_RCVTIMEO bounds accept()).
ACCEPT_WAKE_SECONDS = 0.5
# After a failed accept (no file descriptor left, say): wait before the next.
_ACCEPT_RETRY = 0.1
# How long a process holding more connections than another waits for the others to accept
# a new connection before it accepts again itself (a busy process takes that long to answer).
MAX_DEFER = 0.05
_DEFER_STEP = 0.0005
# A slot not refreshed for this long belongs to a process that stopped: it is not counted.
_STALE_SECONDS = 4 * ACCEPT_WAKE_SECONDS

log = logging.getLogger("pacs")
# Out of file descriptors, accept() fails until connections close: a line per 10 s.
_accept_failures = ThrottledLog(log)


def serve_first(app: Any, options: dict[str, Any], count: int, argv: Sequence[str]) -> int:
    """Serve `app` in this process and `count - 1` workers started with `argv` (this
    process's `pacs` arguments). An exit status."""
    config = uvicorn.Config(app, **options)
    sock = config.bind_socket()  # exits with uvicorn's message when the port is taken
    sock.listen(config.backlog)
    load = LoadTable.create(count)
    workers: list[subprocess.Popen[bytes]] = []
    received = _remember_stop_signals()
    try:
        for slot in range(1, count):
            command = [sys.executable, "-P", "-m", "app.cli", *argv]
            command += [SOCKET_FD_FLAG, str(sock.fileno()), PARENT_FLAG, str(os.getpid())]
            command += [LOAD_FLAG, f"{load.fd},{slot}"]
            fds = (sock.fileno(), load.fd)
            workers.append(subprocess.Popen(command, pass_fds=fds, env=_same_code()))
        log.info("HTTP: %d worker processes (PACS_HTTP_WORKERS)", count)
        if received:  # stopped while the workers started
            return 0
        server = AcceptingServer(config, sock, load.slot(0))
        server.run()
        return 0 if server.started else 3
    finally:
        stop(workers)
        sock.close()


def _same_code() -> dict[str, str]:
    """The environment for a worker that runs this very `app` package: without it (-P
    leaves the working folder out of the path, PYTHONPATH puts ours first) a worker started
    in another checkout's folder ran that checkout's code."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def serve_worker(app: Any, options: dict[str, Any], fd: int, parent: int, load_table: str) -> int:
    """Serve `app` on the inherited listening socket `fd` until SIGTERM or SIGINT;
    `load_table` is the LOAD_FLAG value."""
    _die_with(parent)
    _remember_stop_signals()
    sock = socket.socket(fileno=fd)
    table_fd, slot = (int(n) for n in load_table.split(","))
    load = LoadTable(table_fd).slot(slot)
    server = AcceptingServer(uvicorn.Config(app, **options), sock, load)
    server.run()
    return 0 if server.started else 3


class LoadTable:
    """Per HTTP process: its open connections and when it last said so (monotonic ms), in
    a memory file the first process creates and its workers inherit."""

    _FIELDS = 2

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.memory = mmap.mmap(fd, 0)
        self.values = memoryview(self.memory).cast("q")
        self.slots = len(self.values) // self._FIELDS

    @classmethod
    def create(cls, slots: int) -> LoadTable:
        fd = os.memfd_create("pacs-http-load", 0)
        os.ftruncate(fd, slots * cls._FIELDS * 8)
        return cls(fd)

    def slot(self, index: int) -> Slot:
        return Slot(self, index)


class Slot:
    """One process's entry of a LoadTable."""

    def __init__(self, table: LoadTable, index: int) -> None:
        self.table = table
        self.index = index

    def publish(self, connections: int) -> None:
        values, at = self.table.values, self.index * LoadTable._FIELDS
        values[at] = connections
        values[at + 1] = _now_ms()

    def leave(self) -> None:
        self.table.values[self.index * LoadTable._FIELDS + 1] = 0

    def busier_than_another(self) -> bool:
        """Whether another serving process holds fewer connections than this one."""
        values, fields = self.table.values, LoadTable._FIELDS
        own = values[self.index * fields]
        fresh = _now_ms() - int(_STALE_SECONDS * 1000)
        return any(
            values[i * fields] < own and values[i * fields + 1] > fresh
            for i in range(self.table.slots)
            if i != self.index
        )


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class Acceptor(threading.Thread):
    """Accepts connections on the shared listening socket, one blocking accept() at a time,
    and hands each to `hand_over` on the event loop `loop`."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        hand_over: Callable[[socket.socket], None],
        *,
        load: Slot,
        connections: Callable[[], int],
        accepted: Callable[[], None],
    ) -> None:
        super().__init__(name="http-acceptor", daemon=True)
        self.load = load
        self.connections = connections  # this process's, handed over or not
        self.accepted = accepted  # called for each connection, in this thread
        # Blocking for every process (the flag belongs to the shared open file): accept()
        # waits in the kernel's queue of acceptors, woken at most every ACCEPT_WAKE_SECONDS.
        sock.setblocking(True)
        wake = struct.pack("ll", int(ACCEPT_WAKE_SECONDS), int(ACCEPT_WAKE_SECONDS % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wake)
        self.sock = sock
        self.loop = loop
        self.hand_over = hand_over
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.load.publish(self.connections())
            deadline = time.monotonic() + MAX_DEFER
            while self.load.busier_than_another() and time.monotonic() < deadline:
                time.sleep(_DEFER_STEP)
                self.load.publish(self.connections())
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # the wake-up timeout, a signal, a client gone before accept
            except OSError as exc:
                if self.stopping.is_set():
                    return
                _accept_failures.log("HTTP: cannot accept a connection", str(exc.strerror or exc))
                time.sleep(_ACCEPT_RETRY)
                continue
            self.accepted()
            try:
                self.loop.call_soon_threadsafe(self.hand_over, conn)
            except RuntimeError:  # the loop has closed: the server is gone
                conn.close()
                return
        self.load.leave()

    def stop(self) -> None:
        self.stopping.set()
        self.load.leave()


class AcceptingServer(uvicorn.Server):
    """uvicorn's server, with connections from an `Acceptor` instead of its own listener."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, load: Slot) -> None:
        super().__init__(config)
        self.sock = sock
        self.load = load
        self.acceptor: Acceptor | None = None
        # Accepted, not yet set up (counted with the open ones); changed from two threads.
        self._pending = 0
        self._pending_lock = threading.Lock()

    def _pending_by(self, change: int) -> None:
        with self._pending_lock:
            self._pending += change

    def _connections(self) -> int:
        return len(self.server_state.connections) + self._pending

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan; no listener of uvicorn's own
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        def hand_over(conn: socket.socket) -> None:
            conn.setblocking(False)
            connect = loop.connect_accepted_socket(protocol, conn, ssl=config.ssl)
            task = loop.create_task(connect)
            task.add_done_callback(lambda done: set_up(done, conn))

        def set_up(done: asyncio.Task[Any], conn: socket.socket) -> None:
            self._pending_by(-1)
            _closed_if_failed(done, conn)

        self.acceptor = Acceptor(
            self.sock,
            loop,
            hand_over,
            load=self.load,
            connections=self._connections,
            accepted=lambda: self._pending_by(1),
        )
        self.acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.acceptor is not None:
            self.acceptor.stop()  # no new connections; those open finish below
        await super().shutdown(sockets)


def _closed_if_failed(done: asyncio.Task[Any], conn: socket.socket) -> None:
    """A connection whose set-up failed (a TLS handshake, say) is closed, the error noted."""
    if done.cancelled() or done.exception() is None:
        return
    log.info("HTTP: connection set-up failed: %s", type(done.exception()).__name__)
    conn.close()


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
