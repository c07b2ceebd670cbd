"""`AssociationSocket.recv` as the archive replaces it: a whole PDU in one buffer, read as
the bytes arrive, over a real socket pair."""

from __future__ import annotations

import os
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any, cast

from pynetdicom.transport import AssociationSocket

from app.dimse.socket_reads import _recv


def _owner(sock: socket.socket) -> AssociationSocket:
    return cast(AssociationSocket, SimpleNamespace(socket=sock))


def _send_slowly(sock: socket.socket, data: bytes, piece: int, then_close: bool) -> None:
    for start in range(0, len(data), piece):
        sock.sendall(data[start : start + piece])
        time.sleep(0.0005)
    if then_close:
        sock.close()


def test_a_pdu_arriving_in_pieces_is_read_whole() -> None:
    data = os.urandom(1 << 20)
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(10)  # as pynetdicom's sockets: each read waits under a timeout
        writer = threading.Thread(target=_send_slowly, args=(peer, data, 7001, False))
        writer.start()
        first = _recv(_owner(ours), 6)
        rest = _recv(_owner(ours), len(data) - 6)
        writer.join()
    assert bytes(first + rest) == data
    assert isinstance(rest, bytearray)  # what pynetdicom's decoders expect


def test_a_peer_that_closes_mid_pdu_gives_the_bytes_it_sent() -> None:
    ours, peer = socket.socketpair()
    with ours:
        _send_slowly(peer, b"x" * 100, 40, True)
        got: Any = _recv(_owner(ours), 1000)
    assert got == bytearray(b"x" * 100)  # the DUL reports the short PDU (Evt17)
