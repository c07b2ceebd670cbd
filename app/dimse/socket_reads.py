"""pynetdicom's `AssociationSocket.recv`, reading a PDU in as few system calls as the
network allows.

pynetdicom 3.0 reads 4,096 bytes per `recv()` and appends them to a growing bytearray: a
512 KB dataset in one P-DATA PDU is 128 system calls, each of which gives up the GIL and
waits to get it back from the archive's other threads, and 128 copies. Here the PDU's bytes
go straight into one buffer of its final size, as many at a time as have arrived.
`use_large_reads()` replaces the method process-wide, as `use_poll()` replaces `ready`.
"""

from __future__ import annotations

from pynetdicom.transport import AssociationSocket


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """As pynetdicom's: `nr_bytes` bytes, fewer if the peer closed the connection first;
    blocking (the socket's timeout applies to each read)."""
    sock = self.socket
    if sock is None:
        raise OSError("the association's socket is closed")
    buffer = bytearray(nr_bytes)
    nr_read = 0
    with memoryview(buffer) as view:
        while nr_read < nr_bytes:
            got = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
            if not got:
                break
            nr_read += got
    del buffer[nr_read:]  # the view is released: the buffer may shrink
    return buffer


def use_large_reads() -> None:
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
