"""The DICOM application entity: listens for associations beside the HTTP server, on the
archive's event loop (one task per connection; `session.py` serves each association).

Connection budgets, so that a flood of idle connections never locks out a real modality:
at most `per_address` connections from one address and `total` in all (waiting for their
A-ASSOCIATE-RQ or associated) are open; more are closed at once, with a throttled warning.
A connection that sends no complete A-ASSOCIATE-RQ within ARTIM (PS3.8 9.1.5,
PACS_DIMSE_REQUEST_TIMEOUT) is closed and never counts against the associations. Every
accepted socket has TCP_NODELAY. The DICOM TLS port completes its handshake first (with
a time limit); one that fails is a line and an audit event, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.dimse.audit import record_refused_node
from app.dimse.bridge import Bridge, DimseConfig
from app.dimse.contexts import supported_contexts
from app.dimse.session import Sessions
from app.services.archive import Archive
from app.throttled_log import ThrottledLog

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)

# How long associations in progress may run on when the server stops.
STOP_GRACE_SECONDS = 5.0
# How long a DICOM TLS client has to complete its handshake.
TLS_HANDSHAKE_SECONDS = 10.0
# Bytes read ahead per association before reading pauses: a whole PDU of ours and more.
READ_BUFFER = 1 << 20


class DimseServer:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.sessions = Sessions(bridge, supported_contexts())
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        # Open connections by address (waiting for their request, or associated).
        self._open: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        config = self.bridge.config
        try:
            if config.port:
                await self._listen(config.port, None, "--dimse-port")
                log.info(
                    "DICOM (DIMSE) AE %s listening on %s:%d",
                    config.ae_title,
                    config.host,
                    config.port,
                )
            if config.tls_port and config.tls_context is not None:
                await self._listen(config.tls_port, config.tls_context, "--dimse-tls-port")
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
            await self.stop()
            raise

    async def _listen(self, port: int, context: ssl.SSLContext | None, setting: str) -> None:
        """Accept connections ourselves rather than through asyncio.start_server: a
        connection over the budgets is closed before it gets a transport, and a TLS
        handshake is completed (or fails, with its reason) before any byte is read as a
        PDU (with start_server the first bytes would be read as plain data)."""
        config = self.bridge.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        try:
            listener = socket.create_server(
                (config.host, port), family=family, backlog=config.limits.backlog
            )
        except OSError as exc:
            raise OSError(listen_error(config.host, port, exc, setting)) from exc
        listener.setblocking(False)
        self._listeners.append(listener)
        self._accepting.append(asyncio.create_task(self._accept(listener, context)))

    async def _accept(self, listener: socket.socket, context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peername = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: wait, do not spin
                log.warning("DICOM port: cannot accept a connection (%s)", exc)
                await asyncio.sleep(0.1)
                continue
            address, port = str(peername[0]), int(peername[1])
            if why := self._over_budget(address):
                refusals.log(why, address)
                sock.close()
                continue
            self._open[address] += 1
            task = asyncio.create_task(self._connection(sock, address, port, context))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(
        self, sock: socket.socket, address: str, port: int, context: ssl.SSLContext | None
    ) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = asyncio.StreamReader(limit=READ_BUFFER)
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    sock,
                    ssl=context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS if context else None,
                )
            except (OSError, TimeoutError) as exc:
                sock.close()
                if context is not None:
                    self._handshake_failed(exc, address, port)
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            if context is not None:
                log.info("DICOM TLS connection from %s:%d: %s", address, port, _describe(writer))
            await self.sessions.serve(reader, writer, address, port)
        finally:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]
            if writer is not None:
                writer.close()

    def _handshake_failed(self, exc: BaseException, address: str, port: int) -> None:
        """A TLS handshake that failed (no client certificate, one from another CA, plain
        DICOM or a silent client): a line and an audit event, no traceback."""
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        reason = reason or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
            reason = f"none within {TLS_HANDSHAKE_SECONDS:g} s"
        log.warning(
            "DICOM TLS connection from %s:%d refused: handshake failed (%s)", address, port, reason
        )
        record_refused_node(self.bridge, address, f"DICOM TLS handshake failed ({reason})")

    def _over_budget(self, address: str) -> str:
        limits = self.bridge.config.limits
        if self._open[address] >= limits.per_address:
            return (
                f"DICOM connection refused: {self._open[address]} open from this address "
                f"(PACS_DIMSE_MAX_CONNECTIONS_PER_ADDRESS={limits.per_address})"
            )
        if sum(self._open.values()) >= limits.total:
            return (
                "DICOM connection refused: the server's budget of connections is used "
                f"(PACS_DIMSE_MAX_CONNECTIONS={limits.total})"
            )
        return ""

    async def stop(self) -> None:
        """Stop listening, let associations in progress finish for a few seconds, then
        abort the rest."""
        for task in self._accepting:
            task.cancel()
        for listener in self._listeners:
            listener.close()
        self._accepting, self._listeners = [], []
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        log.info("DICOM (DIMSE) AE %s stopped", self.bridge.config.ae_title)


def _describe(writer: asyncio.StreamWriter) -> str:
    """The TLS version and the subject of the client's certificate, for the log line."""
    tls: Any = writer.get_extra_info("ssl_object")
    if tls is None:
        return "TLS"
    # getpeercert(): {"subject": ((("commonName", "SCU"),), ...), ...}
    subject: Any = (tls.getpeercert() or {}).get("subject", ())
    names = [f"{name}={value}" for rdn in subject for name, value in rdn]
    version = tls.version() or "TLS"
    return f"{version}, client certificate {', '.join(names)!r}" if names else version


@asynccontextmanager
async def serve_dimse(archive: Archive, config: DimseConfig) -> AsyncIterator[DimseServer]:
    """Run the DIMSE server while the archive is open, on the running event loop."""
    server = DimseServer(Bridge(archive, asyncio.get_running_loop(), config))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def check_port(host: str, port: int, setting: str = "--dimse-port") -> None:
    """Raise OSError, with a message for the operator, if `port` cannot be listened on; so
    that `pacs serve` says so in one line before it starts anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(listen_error(host, port, exc, setting)) from exc


def listen_error(host: str, port: int, exc: OSError, setting: str = "--dimse-port") -> str:
    return (
        f"cannot listen for DICOM associations on {host}:{port}: {exc.strerror or exc} "
        f"(set {setting}, or 0 to turn it off)"
    )
