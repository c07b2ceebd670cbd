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
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from app.auth.ae_policy import DimseService
from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from app.dimse import peer_faults
from app.dimse.answer_only import AnswerOnly
from app.dimse.audit import record_refused_node, record_rejected, refuse
from app.dimse.bridge import Bridge, DimseConfig, peer, policy_of
from app.dimse.contexts import (
    copy_contexts_cheaply,
    prefer_receiver_syntaxes,
    supported_contexts,
)
from app.dimse.find import handle_find
from app.dimse.listener import Listener
from app.dimse.poll_ready import use_poll
from app.dimse.retrieve import handle_get, handle_move
from app.dimse.socket_reads import use_large_reads
from app.dimse.status import Status
from app.dimse.store import handle_store
from app.services.archive import Archive
from app.tls import handshake

log = logging.getLogger(__name__)

# Largest PDU we receive: big enough for throughput, small enough to bound memory per
# association (pynetdicom holds one PDU at a time).
MAX_PDU = 1 << 20
# How long associations in progress may run on when the server stops.
STOP_GRACE_SECONDS = 5.0
# How long a DICOM TLS client has to complete its handshake.
TLS_HANDSHAKE_SECONDS = 10.0


class DimseServer:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        config = bridge.config
        self.ae = AE(ae_title=config.ae_title)
        self.ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self.ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        self.ae.maximum_pdu_size = MAX_PDU
        # pynetdicom counts every connection that has sent a byte against its limit, also
        # one stalled in the middle of its A-ASSOCIATE-RQ: ours counts associations whose
        # request is complete (`_on_requested`), and pynetdicom's never applies.
        self.ae.maximum_associations = sys.maxsize
        # ARTIM: how long the A-ASSOCIATE-RQ (and later A-RELEASE-RP) may take; the idle
        # timeout of an established association.
        self.ae.acse_timeout = config.limits.request_timeout
        self.ae.network_timeout = config.idle_timeout
        self.ae.require_calling_aet = list(config.required_calling_aes)
        for cx in supported_contexts():
            self.ae.add_supported_context(
                str(cx.abstract_syntax),
                cx.transfer_syntax,
                scu_role=cx.scu_role,
                scp_role=cx.scp_role,
            )
        self._servers: list[ThreadedAssociationServer] = []
        self.answer_only = AnswerOnly(config.ae_title)

    def start(self) -> None:
        # Process-wide pynetdicom switches: spool received datasets to a file, and send a
        # file from disk as it is rather than a decoded dataset.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        use_poll()
        copy_contexts_cheaply()
        use_large_reads()
        # A TLS peer we refuse (or that refuses us) is a line, not a traceback.
        logging.getLogger("pynetdicom.transport").addFilter(_without_tls_traceback)
        peer_faults.install()
        bridge = self.bridge
        self.answer_only.start()
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, _on_requested, [bridge]),
            (evt.EVT_ACCEPTED, _on_accepted),
            (evt.EVT_REJECTED, _on_rejected, [self.ae, bridge]),
            (evt.EVT_RELEASED, _on_released),
            (evt.EVT_ABORTED, _on_aborted),
            (evt.EVT_C_ECHO, _on_echo, [bridge]),
            (evt.EVT_C_STORE, handle_store, [bridge]),
            (evt.EVT_C_FIND, handle_find, [bridge]),
            (evt.EVT_C_MOVE, handle_move, [bridge, self.answer_only.address]),
            (evt.EVT_C_GET, handle_get, [bridge]),
            (evt.EVT_CONN_OPEN, _on_connection, [bridge]),
        ]
        config = bridge.config
        try:
            if config.port:
                self._listen(config.port, handlers, None, "--dimse-port")
                log.info(
                    "DICOM (DIMSE) AE %s listening on %s:%d",
                    config.ae_title,
                    config.host,
                    config.port,
                )
            if config.tls_port and config.tls_context is not None:
                self._listen(config.tls_port, handlers, config.tls_context, "--dimse-tls-port")
                log.info(
                    "DICOM TLS AE %s listening on %s:%d (%s)",
                    config.ae_title,
                    config.host,
                    config.tls_port,
                    "client certificates required"
                    if config.tls_client_certificates
                    else "no client certificate asked for",
                )
        except OSError:
            self.stop()
            raise

    def _listen(
        self,
        port: int,
        handlers: list[EventHandlerType],
        context: ssl.SSLContext | None,
        setting: str,
    ) -> None:
        host = self.bridge.config.host
        try:
            # As ae.start_server(block=False), with our server class (app/dimse/listener.py).
            server = self.ae.make_server(
                (host, port),
                evt_handlers=handlers,
                ssl_context=context,
                server_class=Listener,
                limits=self.bridge.config.limits,
            )
        except OSError as exc:
            raise OSError(listen_error(host, port, exc, setting)) from exc
        threading.Thread(
            target=server.serve_forever, name=f"AcceptorServer@{port}", daemon=True
        ).start()
        self.ae._servers.append(server)  # server.shutdown() removes it, as start_server's
        self._servers.append(server)

    def stop(self) -> None:
        """Stop listening, let associations in progress finish for a few seconds, then
        abort the rest. Blocking: call it off the event loop, which handlers still use."""
        if not self._servers:
            self.answer_only.stop()
            return
        for server in self._servers:
            server.shutdown()
        self._servers = []
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._acceptors() and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            assoc.abort()
        for assoc in self.ae.active_associations:
            assoc.join(timeout=STOP_GRACE_SECONDS)
        self.answer_only.stop()  # last: associations that finished above may have used it
        log.info("DICOM (DIMSE) AE %s stopped", self.bridge.config.ae_title)

    def _acceptors(self) -> list[Association]:
        return [a for a in self.ae.active_associations if a.is_acceptor]


@asynccontextmanager
async def serve_dimse(archive: Archive, config: DimseConfig) -> AsyncIterator[DimseServer]:
    """Run the DIMSE server while the archive is open, on the running event loop."""
    server = DimseServer(Bridge(archive, asyncio.get_running_loop(), config))
    server.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def check_port(host: str, port: int, setting: str = "--dimse-port") -> None:
    """Raise OSError, with a message for the operator, if `port` cannot be listened on; so
    that `pacs serve` says so in one line before it starts anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pynetdicom does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(listen_error(host, port, exc, setting)) from exc


def listen_error(host: str, port: int, exc: OSError, setting: str = "--dimse-port") -> str:
    return (
        f"cannot listen for DICOM associations on {host}:{port}: {exc.strerror or exc} "
        f"(set {setting}, or 0 to turn it off)"
    )


# -- association events ---------------------------------------------------------------


def _without_tls_traceback(record: logging.LogRecord) -> bool:
    if record.exc_info and isinstance(record.exc_info[1], ssl.SSLError):
        record.exc_info = None
        record.exc_text = None
    return True


def _on_connection(event: Event, bridge: Bridge) -> None:
    """Complete the TLS handshake of a DICOM TLS connection (see `app.tls`); one that fails
    (no client certificate, one from another CA, plain DICOM or a silent client) is closed
    before any PDU is read."""
    transport = event.assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if transport is None or not isinstance(sock, ssl.SSLSocket):
        return
    address = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
    try:
        handshake(sock, TLS_HANDSHAKE_SECONDS)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"none within {TLS_HANDSHAKE_SECONDS:g} s"
        log.warning("DICOM TLS connection from %s refused: handshake failed (%s)", address, reason)
        transport.close()
        record_refused_node(
            bridge, event.assoc.requestor.address, f"DICOM TLS handshake failed ({reason})"
        )
        return
    log.info("DICOM TLS connection from %s: %s", address, _describe(sock))


def _describe(sock: ssl.SSLSocket) -> str:
    """The TLS version and the subject of the client's certificate, for the log line."""
    # getpeercert(): {"subject": ((("commonName", "SCU"),), ...), ...}
    subject: Any = (sock.getpeercert() or {}).get("subject", ())
    names = [f"{name}={value}" for rdn in subject for name, value in rdn]
    version = sock.version() or "TLS"
    return f"{version}, client certificate {', '.join(names)!r}" if names else version


def _on_requested(event: Event, bridge: Bridge) -> None:
    assoc = event.assoc
    request = assoc.requestor.primitive
    calling = request.calling_ae_title if request is not None else "?"
    address = f"{assoc.requestor.address}:{assoc.requestor.port}"
    log.info("association requested by %s@%s for %s", calling, address, assoc.acceptor.ae_title)
    requested = [a for a in assoc.ae.active_associations if a.is_acceptor and a.requestor.primitive]
    if len(requested) > bridge.config.max_associations:
        # As pynetdicom's own check does: rejected-transient, by the service provider
        # (presentation), local limit exceeded; then EVT_REJECTED (`_on_rejected`).
        assoc.acse.send_reject(0x02, 0x03, 0x02)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
        return
    prefer_receiver_syntaxes(assoc)


def _on_accepted(event: Event) -> None:
    assoc = event.assoc
    # From now on a read or write may wait as long as the association may idle, not just
    # ARTIM (app/dimse/listener.py).
    transport = assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.settimeout(assoc.network_timeout)
    rejected = [UID(str(cx.abstract_syntax)).name for cx in assoc.rejected_contexts]
    note = f"; refused {len(rejected)}: {', '.join(rejected[:5])}" if rejected else ""
    log.info(
        "association with %s accepted: %d presentation contexts%s",
        peer(assoc),
        len(assoc.accepted_contexts),
        note,
    )


def _on_rejected(event: Event, ae: AE, bridge: Bridge) -> None:
    assoc = event.assoc
    calling = assoc.requestor.ae_title
    allowed = [a.strip() for a in ae.require_calling_aet]
    if allowed and calling.strip() not in allowed:
        reason = f"calling AE title {calling!r} is not allowed"
    else:
        reason = f"too many associations (at most {bridge.config.max_associations})"
    log.warning("association with %s rejected: %s", peer(assoc), reason)
    record_rejected(bridge, assoc, reason)


def _on_released(event: Event) -> None:
    log.info("association with %s released", peer(event.assoc))


def _on_aborted(event: Event) -> None:
    log.info("association with %s aborted", peer(event.assoc))


def _on_echo(event: Event, bridge: Bridge) -> int | Dataset:
    if not policy_of(event.assoc, bridge).allows(DimseService.ECHO):
        log.info("C-ECHO from %s refused: not authorized", peer(event.assoc))
        return refuse(event.assoc, bridge, DimseService.ECHO)
    log.info("C-ECHO from %s", peer(event.assoc))
    return int(Status.SUCCESS)
