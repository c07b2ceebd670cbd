"""The associations the archive opens for C-MOVE turn Nagle's algorithm off: without it each
sub-operation waited for the destination's delayed ACK (C-MOVE at 28 instances/s)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from pynetdicom.presentation import build_context

from app.dimse.association import associate
from app.dimse.contexts import VERIFICATION
from tests.support.dcmtk import require_dcmtk, storescp


def test_cmove_sub_associations_set_tcp_nodelay(tmp_path: Path) -> None:
    require_dcmtk()

    async def nodelay(port: int) -> int:
        assoc = await associate(
            "127.0.0.1",
            port,
            calling_ae="PACS",
            called_ae="STORESCP",
            contexts=[build_context(VERIFICATION)],
            answer_within=10,
            max_pdu=1 << 16,
        )
        try:
            sock = assoc.writer.get_extra_info("socket")
            return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        finally:
            await assoc.release(5)

    with storescp(tmp_path / "received") as port:
        assert asyncio.run(nodelay(port)) != 0
