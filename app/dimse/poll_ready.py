"""pynetdicom's `AssociationSocket.ready`, with poll() instead of select().

select() cannot watch a file descriptor above 1023 (FD_SETSIZE): pynetdicom catches the
ValueError and reads it as "connection closed". The archive's one process also holds the
HTTP server's connections, so once a few hundred browsers or a flood of idle clients are
connected, every new association (accepted, or opened for C-MOVE) got a descriptor above
1023 and was dropped at once. `use_poll()` replaces the property, process-wide (as
pynetdicom's own `_config` switches are), with the same logic on poll(), which has no such
limit.
"""

from __future__ import annotations

import select
import ssl

from pynetdicom.transport import AssociationSocket


def _ready(self: AssociationSocket) -> bool:
    """As pynetdicom 3.0's `ready`: whether there is data to read; Evt17 when the socket is
    broken."""
    if self.socket is None or self._is_connected is False:
        return False
    poller = select.poll()
    try:
        poller.register(self.socket, select.POLLIN)
        ready = bool(poller.poll(0))  # POLLHUP and POLLERR too, as select() reports them
    except (OSError, ValueError):
        self.event_queue.put("Evt17")  # Transport connection closed
        return False
    # An SSLSocket may hold decrypted data that poll() does not see.
    if isinstance(self.socket, ssl.SSLSocket):
        return ready or bool(self.socket.pending())
    return ready


def use_poll() -> None:
    AssociationSocket.ready = property(_ready)  # type: ignore[method-assign, assignment]
