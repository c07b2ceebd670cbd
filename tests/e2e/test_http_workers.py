"""Issue 11: `pacs serve` with several HTTP worker processes (PACS_HTTP_WORKERS) on one
port: each serves connections, and none outlives the first process, whether it is stopped
(SIGTERM) or killed (SIGKILL)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from tests.support.processes import background_process
from tests.support.server import PIDS, free_port, running_server


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, NotADirectoryError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _connections_by_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established connections on the server's `port` held by each of `pids`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    held = {}
    for pid in pids:
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.append(os.readlink(fd))
            except OSError:
                continue
        held[pid] = sum(link.removeprefix("socket:[").rstrip("]") in inodes for link in links)
    return held


def _health(port: int) -> tuple[socket.socket, bytes]:
    """A kept-open connection that got its answer to GET /health."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock, sock.recv(4096)


def test_two_http_workers_both_serve_and_stop_with_the_first(tmp_path: Path) -> None:
    with running_server(tmp_path / "a", env={"PACS_HTTP_WORKERS": "2"}) as url:
        first = PIDS[url]
        port = int(url.rsplit(":", 1)[1])
        (worker,) = _children(first)
        held: dict[int, int] = {}
        for _ in range(20):  # the kernel hands connections to whichever accepts first
            opened = [_health(port) for _ in range(16)]
            assert all(answer.startswith(b"HTTP/1.1 200") for _, answer in opened)
            held = _connections_by_process(port, [first, worker])
            for sock, _ in opened:
                sock.close()
            if all(held.values()):
                break
            time.sleep(0.2)  # the worker may still be starting
        assert all(held.values()), f"connections by process: {held}"
    assert not _wait_gone([first, worker]), "a process outlived `pacs serve`"


def _burst(port: int, count: int) -> list[socket.socket]:
    """`count` connections opened at once, then each answered GET /health."""
    opened = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for sock in opened:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in opened:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return opened


def test_a_burst_of_connections_is_shared_by_the_workers(tmp_path: Path) -> None:
    """Regression: the process whose event loop woke first took every connection of a burst
    (a viewer's 4 connections all on one process, the other core idle)."""
    with running_server(tmp_path / "c", env={"PACS_HTTP_WORKERS": "2"}) as url:
        first = PIDS[url]
        port = int(url.rsplit(":", 1)[1])
        (worker,) = _children(first)
        _serving(port, first, worker)  # until the worker accepts too
        for _ in range(3):
            time.sleep(0.2)  # the closed ones are gone from both processes
            opened = _burst(port, 8)
            held = _connections_by_process(port, [first, worker])
            for sock in opened:
                sock.close()
            assert min(held.values()) >= 3, f"8 connections by process: {held}"


def _serving(port: int, first: int, worker: int, timeout: float = 30) -> dict[int, int]:
    """Connections held by each process once the worker accepts too (or the timeout)."""
    deadline = time.monotonic() + timeout
    held: dict[int, int] = {}
    while time.monotonic() < deadline:
        opened = _burst(port, 2)
        held = _connections_by_process(port, [first, worker])
        for sock in opened:
            sock.close()
        if all(held.values()):
            break
        time.sleep(0.2)
    return held


def test_workers_run_the_first_process_code_whatever_the_working_folder(tmp_path: Path) -> None:
    """Regression: workers were started with `python -m app.cli`, which imports the `app` of
    the working folder first: `pacs serve` started in another checkout ran its code there."""
    decoy = tmp_path / "checkout" / "app"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    marker = tmp_path / "decoy-ran"
    (decoy / "cli.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    pacs = Path(sys.executable).parent / "pacs"
    port = free_port()
    serve = f"{pacs} serve --port {port} --data {tmp_path / 'data'} --dimse-port 0"
    command = ["sh", "-c", f"cd {shlex.quote(str(decoy.parent))} && exec {serve}"]
    env = {**os.environ, "PACS_HTTP_WORKERS": "2"}

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    with background_process(command, tmp_path / "server.log", ready, env=env) as process:
        (worker,) = _children(process.pid)
        held = _serving(port, process.pid, worker)
        assert not marker.exists(), "a worker ran the working folder's app package"
        assert all(held.values()), f"connections by process: {held}"


def test_http_workers_do_not_outlive_a_killed_first_process(tmp_path: Path) -> None:
    with running_server(tmp_path / "b", env={"PACS_HTTP_WORKERS": "2"}) as url:
        first = PIDS[url]
        (worker,) = _children(first)
        os.kill(first, signal.SIGKILL)
        assert not _wait_gone([worker]), "a worker outlived its killed first process"
