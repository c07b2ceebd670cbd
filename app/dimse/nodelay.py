"""TCP_NODELAY on the DICOM connections the archive opens (C-MOVE destinations) and on
those of its answer-only listener.

A DIMSE exchange is a request then a wait for the answer: with Nagle's algorithm the last
short segment of a message waits for the peer's delayed ACK (up to 40 ms on Linux), once per
sub-operation. pynetdicom sets no socket option beyond SO_REUSEADDR, so an EVT_CONN_OPEN
handler sets it as soon as the connection is up, before the first PDU.
"""

from __future__ import annotations

import contextlib
import socket

from pynetdicom.events import Event


def set_no_delay(event: Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle's algorithm off on the association's socket."""
    transport = event.assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if sock is None:
        return
    # Closed by the peer already, or not TCP: nothing to speed up.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
