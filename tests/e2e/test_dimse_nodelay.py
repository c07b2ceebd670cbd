"""The associations the archive opens for C-MOVE turn Nagle's algorithm off: without it each
sub-operation waited for the destination's delayed ACK (C-MOVE at 28 instances/s)."""

from __future__ import annotations

import socket
from pathlib import Path

from pynetdicom import AE

from app.dimse.contexts import VERIFICATION
from app.dimse.retrieve import OUTGOING_HANDLERS
from tests.support.dcmtk import require_dcmtk, storescp


def test_cmove_sub_associations_set_tcp_nodelay(tmp_path: Path) -> None:
    require_dcmtk()
    with storescp(tmp_path / "received") as port:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP", evt_handlers=OUTGOING_HANDLERS)
        try:
            assert assoc.is_established
            transport = assoc.dul.socket
            assert transport is not None and transport.socket is not None
            sock = transport.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            assoc.release()
