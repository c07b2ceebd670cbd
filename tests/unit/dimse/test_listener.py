"""The DICOM listener's accepted sockets (app/dimse/listener.py), with a real listener and a
real association from pynetdicom."""

from __future__ import annotations

import socket
import threading

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification

from app.dimse.listener import ConnectionLimits, Listener


def test_accepted_sockets_send_without_nagle() -> None:
    # Without TCP_NODELAY every small response (a C-STORE or C-FIND status) waited for the
    # peer's delayed ACK: 53 ms per C-FIND instead of 15.
    seen: list[int] = []

    def on_open(event: Event) -> None:
        raw = event.assoc.dul.socket.socket  # type: ignore[union-attr]
        seen.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    scp = AE("PACS")
    scp.add_supported_context(Verification)
    limits = ConnectionLimits(request_timeout=5, per_address=10, total=10, backlog=16)
    server = scp.make_server(
        ("127.0.0.1", 0),
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
        server_class=Listener,
        limits=limits,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scp._servers.append(server)  # as start_server(block=False) does; shutdown() removes it
    try:
        scu = AE("SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="PACS")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    assert seen and all(seen), seen
