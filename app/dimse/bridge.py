"""How DIMSE handlers reach the archive: pynetdicom runs them in its own threads, and the
archive's services run on the server's event loop, so each call crosses over."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pynetdicom.association import Association

from app.services.archive import Archive
from app.settings import MoveDestination

T = TypeVar("T")


@dataclass(frozen=True)
class DimseConfig:
    host: str
    port: int
    ae_title: str
    # C-MOVE destinations: AE title -> host, port and whether to use DICOM TLS.
    move_destinations: Mapping[str, MoveDestination] = field(default_factory=dict)
    # Calling AE titles allowed to associate; empty: any.
    allowed_aes: tuple[str, ...] = ()
    max_associations: int = 20
    # DICOM TLS listener (0: none) and its context; whether that context requires client
    # certificates (for the log line).
    tls_port: int = 0
    tls_context: ssl.SSLContext | None = None
    tls_client_certificates: bool = False
    # Context of the associations opened to C-MOVE destinations marked tls.
    tls_move_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Bridge:
    archive: Archive
    loop: asyncio.AbstractEventLoop
    config: DimseConfig

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the archive's event loop and wait for its result (from a
        pynetdicom thread, never from the loop itself)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


def peer(assoc: Association) -> str:
    """The calling side of an association, for log lines: AE title, address and port."""
    user = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    return f"{user.ae_title}@{user.address}:{user.port}"
