"""The DICOM application entity: listens for associations beside the HTTP server.

pynetdicom runs the listener and each association in threads of its own; the handlers
(`store.py`, `find.py`, `retrieve.py`) reach the archive through the server's event loop
(`bridge.py`). Each association is logged when requested, accepted or rejected (with the
reason), released or aborted; each operation logs a summary line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from app.auth.ae_policy import DimseService
from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from app.dimse.bridge import Bridge, DimseConfig, peer, policy_of
from app.dimse.contexts import prefer_receiver_syntaxes, supported_contexts
from app.dimse.find import handle_find
from app.dimse.retrieve import handle_get, handle_move
from app.dimse.status import Status
from app.dimse.store import handle_store
from app.services.archive import Archive

log = logging.getLogger(__name__)

# Largest PDU we receive: big enough for throughput, small enough to bound memory per
# association (pynetdicom holds one PDU at a time).
MAX_PDU = 1 << 20
# How long associations in progress may run on when the server stops.
STOP_GRACE_SECONDS = 5.0


class DimseServer:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        config = bridge.config
        self.ae = AE(ae_title=config.ae_title)
        self.ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self.ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        self.ae.maximum_pdu_size = MAX_PDU
        self.ae.maximum_associations = config.max_associations
        self.ae.require_calling_aet = list(config.required_calling_aes)
        for cx in supported_contexts():
            self.ae.add_supported_context(
                str(cx.abstract_syntax),
                cx.transfer_syntax,
                scu_role=cx.scu_role,
                scp_role=cx.scp_role,
            )
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        # Process-wide pynetdicom switches: spool received datasets to a file, and send a
        # file from disk as it is rather than a decoded dataset.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        bridge = self.bridge
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, _on_requested),
            (evt.EVT_ACCEPTED, _on_accepted),
            (evt.EVT_REJECTED, _on_rejected, [self.ae]),
            (evt.EVT_RELEASED, _on_released),
            (evt.EVT_ABORTED, _on_aborted),
            (evt.EVT_C_ECHO, _on_echo, [bridge]),
            (evt.EVT_C_STORE, handle_store, [bridge]),
            (evt.EVT_C_FIND, handle_find, [bridge]),
            (evt.EVT_C_MOVE, handle_move, [bridge]),
            (evt.EVT_C_GET, handle_get, [bridge]),
        ]
        config = bridge.config
        self._server = self.ae.start_server(
            (config.host, config.port), block=False, evt_handlers=handlers
        )
        log.info(
            "DICOM (DIMSE) AE %s listening on %s:%d", config.ae_title, config.host, config.port
        )

    def stop(self) -> None:
        """Stop listening, let associations in progress finish for a few seconds, then
        abort the rest. Blocking: call it off the event loop, which handlers still use."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._acceptors() and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            assoc.abort()
        for assoc in self.ae.active_associations:
            assoc.join(timeout=STOP_GRACE_SECONDS)
        log.info("DICOM (DIMSE) AE %s stopped", self.bridge.config.ae_title)

    def _acceptors(self) -> list[Association]:
        return [a for a in self.ae.active_associations if a.is_acceptor]


@asynccontextmanager
async def serve_dimse(archive: Archive, config: DimseConfig) -> AsyncIterator[DimseServer]:
    """Run the DIMSE server while the archive is open, on the running event loop."""
    server = DimseServer(Bridge(archive, asyncio.get_running_loop(), config))
    try:
        server.start()
    except OSError as exc:
        raise OSError(listen_error(config.host, config.port, exc)) from exc
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def check_port(host: str, port: int) -> None:
    """Raise OSError, with a message for the operator, if `port` cannot be listened on; so
    that `pacs serve` says so in one line before it starts anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pynetdicom does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(listen_error(host, port, exc)) from exc


def listen_error(host: str, port: int, exc: OSError) -> str:
    return (
        f"cannot listen for DICOM associations on {host}:{port}: {exc.strerror or exc} "
        "(set --dimse-port, or 0 to turn DIMSE off)"
    )


# -- association events ---------------------------------------------------------------


def _on_requested(event: Event) -> None:
    assoc = event.assoc
    request = assoc.requestor.primitive
    calling = request.calling_ae_title if request is not None else "?"
    address = f"{assoc.requestor.address}:{assoc.requestor.port}"
    log.info("association requested by %s@%s for %s", calling, address, assoc.acceptor.ae_title)
    prefer_receiver_syntaxes(assoc)


def _on_accepted(event: Event) -> None:
    assoc = event.assoc
    rejected = [UID(str(cx.abstract_syntax)).name for cx in assoc.rejected_contexts]
    note = f"; refused {len(rejected)}: {', '.join(rejected[:5])}" if rejected else ""
    log.info(
        "association with %s accepted: %d presentation contexts%s",
        peer(assoc),
        len(assoc.accepted_contexts),
        note,
    )


def _on_rejected(event: Event, ae: AE) -> None:
    assoc = event.assoc
    calling = assoc.requestor.ae_title
    allowed = [a.strip() for a in ae.require_calling_aet]
    if allowed and calling.strip() not in allowed:
        reason = f"calling AE title {calling!r} is not allowed"
    else:
        reason = f"too many associations (at most {ae.maximum_associations})"
    log.warning("association with %s rejected: %s", peer(assoc), reason)


def _on_released(event: Event) -> None:
    log.info("association with %s released", peer(event.assoc))


def _on_aborted(event: Event) -> None:
    log.info("association with %s aborted", peer(event.assoc))


def _on_echo(event: Event, bridge: Bridge) -> int:
    if not policy_of(event.assoc, bridge).allows(DimseService.ECHO):
        log.info("C-ECHO from %s refused: not authorized", peer(event.assoc))
        return int(Status.NOT_AUTHORIZED)
    log.info("C-ECHO from %s", peer(event.assoc))
    return int(Status.SUCCESS)
