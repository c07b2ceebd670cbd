"""The DICOM port's listener: pynetdicom's association server with connection budgets, so
that a flood of idle connections never locks out a real modality.

pynetdicom hands every accepted TCP connection to an association at once: two threads, one
of them (the DUL) polling its socket every millisecond, and counted against
`maximum_associations` before it has sent a byte. 300 connections that never send an
A-ASSOCIATE-RQ therefore refuse every modality ("local limit exceeded") and keep the process
(and, through the GIL, the HTTP server) busy polling. Here, instead:

- a new connection waits for its first byte in a thread blocked in poll() (no polling loop)
  for at most ARTIM seconds (PS3.8 9.1.5); one that sends nothing is closed and never
  becomes an association, so it neither counts against the associations nor costs CPU. Once
  it has sent something, pynetdicom's own ARTIM (`ae.acse_timeout`) and a socket timeout
  bound the rest of the request;
- at most `per_address` connections from one address and `total` in all (waiting or
  associated) are open; more are closed at once, with a throttled warning;
- the listen backlog is `backlog` (socketserver's default is 5);
- every accepted socket has TCP_NODELAY: a DIMSE response is a small write the peer waits
  for, and Nagle's algorithm would hold it back until the peer's delayed ACK (tens of ms
  per C-FIND, per C-STORE response);
- no `gc.collect()` every 60 connections (pynetdicom's `service_actions`): a full collection
  of a process holding thousands of HTTP connections stops everything for hundreds of
  milliseconds, and the collector frees ended associations on its own.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from app.throttled_log import ThrottledLog

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)
silences = ThrottledLog(log, level=logging.INFO)


@dataclass(frozen=True)
class ConnectionLimits:
    # Seconds a new connection has to send its first byte (ARTIM).
    request_timeout: float
    # Open connections (waiting or associated) from one address, and in all.
    per_address: int
    total: int
    backlog: int


class Listener(ThreadedAssociationServer):
    """Made by `ae.make_server(..., server_class=Listener, limits=...)`."""

    # Waiting connections are not joined at shutdown: they end within ARTIM on their own.
    daemon_threads = True

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        self.limits = limits
        self.request_queue_size = limits.backlog  # read by server_activate() in __init__
        self._lock = threading.Lock()
        # Connections accepted and not yet handed to pynetdicom, by address.
        self._waiting: Counter[str] = Counter()
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        """Nothing (see the module's docstring)."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit a connection within the budgets (socketserver closes a refused one)."""
        address = str(client_address[0])
        associated = [a.requestor.address for a in self.active_associations]
        with self._lock:
            from_address = self._waiting[address] + associated.count(address)
            if from_address >= self.limits.per_address:
                why = (
                    f"DICOM connection refused: {from_address} open from this address "
                    f"(PACS_DIMSE_MAX_CONNECTIONS_PER_ADDRESS={self.limits.per_address})"
                )
            elif sum(self._waiting.values()) + len(associated) >= self.limits.total:
                why = (
                    "DICOM connection refused: the server's budget of connections is used "
                    f"(PACS_DIMSE_MAX_CONNECTIONS={self.limits.total})"
                )
            else:
                self._waiting[address] += 1
                return True
        refusals.log(why, address)
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: wait for its first byte, then let pynetdicom
        start the association (which is counted by `active_associations` from then on)."""
        address = str(client_address[0])
        try:
            no_delay(request)
            if why := _silence(request, self.limits.request_timeout):
                silences.log(f"DICOM connection closed: {why}", address)
                self.shutdown_request(request)
            else:
                # pynetdicom's reads block: one stalled in the middle of a PDU would hang
                # the association for ever. Until it is accepted, a read or a write may
                # take ARTIM (then the peer's idle timeout: `_on_accepted` in server.py).
                request.settimeout(self.limits.request_timeout)
                super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._waiting[address] -= 1
                if self._waiting[address] <= 0:
                    del self._waiting[address]


def no_delay(sock: socket.socket) -> None:
    """Send each write at once (no Nagle); a socket already closed by the peer is let be."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _silence(sock: socket.socket, timeout: float) -> str:
    """Wait up to `timeout` seconds for the first byte: empty once there is one, else why
    there is none (pynetdicom would log a connection reset with a traceback at ERROR).
    poll(), not select(): the process holds thousands of HTTP sockets, and select() cannot
    watch a descriptor above 1023."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    try:
        if not poller.poll(timeout * 1000):
            return f"no A-ASSOCIATE-RQ within {timeout:g} s (PACS_DIMSE_REQUEST_TIMEOUT)"
        # The raw socket's bytes, also under TLS (an SSLSocket refuses flags).
        if socket.socket.recv(sock, 1, socket.MSG_PEEK):
            return ""
    except OSError:
        pass
    return "closed by the peer before an A-ASSOCIATE-RQ"
