"""Audit messages to a syslog collector: RFC 5424 messages over UDP (RFC 5426) or TLS
(RFC 5425, octet-counting framing), as the IHE ATNA profile and PS3.15 A.5 ask.

A request never waits for the collector: `SyslogSender.send` only puts the event on a
bounded queue, and one background task builds the messages and delivers them,
reconnecting with backoff. When the queue is full (the collector is down or slow for
long) events are dropped, counted and logged (without patient data); the index keeps
them all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

from app.audit.event import AuditEvent, EventOutcome
from app.audit.message import AuditSource, audit_message

log = logging.getLogger(__name__)

AUTHPRIV = 10  # RFC 5424 facility: security/authorization messages (private)
# Severity by outcome: a failed request is worth a warning, our own failure an error.
SEVERITY = {
    EventOutcome.SUCCESS: 5,  # notice
    EventOutcome.MINOR_FAILURE: 4,  # warning
    EventOutcome.SERIOUS_FAILURE: 3,  # error
    EventOutcome.MAJOR_FAILURE: 2,  # critical
}
# MSGID of audit messages in the RFC 3881 / PS3.15 format (IHE ITI TF-2a 3.20.4.2).
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
# The largest payload of one IPv4 UDP datagram; a longer message cannot go over UDP.
UDP_MAX = 65507
# The longest RFC 5424 header syslog_message writes (PRI, time, host, app, procid, MSGID).
SYSLOG_HEADER_MAX = 512
DEFAULT_PORTS = {"udp": 514, "tls": 6514}
DROP_LOG_INTERVAL = 60.0  # seconds


@dataclass(frozen=True)
class SyslogTarget:
    transport: str  # "udp" or "tls"
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"


def parse_syslog_url(url: str) -> SyslogTarget:
    """`udp://host[:514]` or `tls://host[:6514]`; ValueError with a clear message."""
    where = "PACS_AUDIT_SYSLOG"
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{where}: expected udp://host:port or tls://host:port, got {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"{where}: invalid port in {url!r}") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{where}: unexpected path or query in {url!r}")
    return SyslogTarget(parts.scheme, parts.hostname, port)


def _header_field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, "-" when empty."""
    text = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return text or "-"


def syslog_message(
    event: AuditEvent,
    xml: bytes,
    *,
    hostname: str,
    app_name: str = "pacs",
    procid: str = "-",
) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML."""
    pri = AUTHPRIV * 8 + SEVERITY[event.outcome]
    timestamp = event.when.astimezone(UTC).isoformat(timespec="milliseconds")
    header = " ".join(
        (
            f"<{pri}>1",
            timestamp.replace("+00:00", "Z"),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            MSGID,
            "-",  # no structured data
        )
    )
    return header.encode("ascii") + b" " + BOM + xml


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 framing: MSG-LEN SP SYSLOG-MSG."""
    return f"{len(message)} ".encode("ascii") + message


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the collector's certificate and host name against `ca_file` (the system's
    CAs when None)."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Datagrams(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" from an earlier datagram: the collector is down.
        log.debug("audit syslog: %s", exc)


class SyslogSender:
    """Delivers audit events to one collector from a background task."""

    def __init__(
        self,
        target: SyslogTarget,
        source: AuditSource,
        *,
        ca_file: str | None = None,
        queue_size: int = 10_000,
        app_name: str = "pacs",
        max_backoff: float = 30.0,
    ) -> None:
        self.target = target
        self.source = source
        self._ssl = tls_context(ca_file) if target.transport == "tls" else None
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(queue_size)
        self._app_name = app_name
        self._hostname = socket.gethostname()
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.dropped = 0
        self._drop_logged = -DROP_LOG_INTERVAL

    @classmethod
    def from_settings(cls, url: str, ca_file: str, source: AuditSource) -> SyslogSender | None:
        if not url:
            return None
        if ca_file and not Path(ca_file).is_file():
            raise ValueError(f"PACS_AUDIT_SYSLOG_CA: no such file {ca_file!r}")
        return cls(parse_syslog_url(url), source, ca_file=ca_file or None)

    def send(self, event: AuditEvent) -> None:
        """Queue `event` for delivery; never blocks. Call on the event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            # One line a minute at most: a collector down for hours must not flood the log.
            now = time.monotonic()
            if now - self._drop_logged >= DROP_LOG_INTERVAL:
                self._drop_logged = now
                log.warning(
                    "audit syslog: queue full, events not sent to %s (%d dropped so far)",
                    self.target,
                    self.dropped,
                )

    async def flush(self, within: float) -> bool:
        """Wait until every queued event was handed to the network; False if that takes
        more than `within` seconds."""
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), within)
        except TimeoutError:
            return False
        return True

    async def close(self, within: float = 2.0) -> None:
        """Deliver what is queued (for at most `within` seconds), then stop."""
        if not await self.flush(within):
            log.warning(
                "audit syslog: %d events not sent to %s at shutdown",
                self._queue.qsize(),
                self.target,
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            event = await self._queue.get()
            try:
                message = self._message(event)
                while True:
                    try:
                        await self._deliver(message)
                        self.sent += 1
                        backoff = 0.5
                        break
                    except (OSError, ssl.SSLError, TimeoutError) as exc:
                        # The message is kept and sent again once connected (a collector
                        # may then see it twice; losing it would be worse).
                        log.warning(
                            "audit syslog: cannot deliver to %s (%s); retrying in %.1f s",
                            self.target,
                            exc,
                            backoff,
                        )
                        await self._disconnect()
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, self._max_backoff)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.dropped += 1
                log.exception("audit syslog: event not sent: %s", event.summary())
            finally:
                self._queue.task_done()

    def _message(self, event: AuditEvent) -> bytes:
        # Over UDP the whole message must fit one datagram (with its syslog header).
        limit = UDP_MAX - SYSLOG_HEADER_MAX if self.target.transport == "udp" else None
        xml = audit_message(event, self.source, limit)
        return syslog_message(
            event, xml, hostname=self._hostname, app_name=self._app_name, procid="-"
        )

    async def _deliver(self, message: bytes) -> None:
        if self.target.transport == "udp":
            if len(message) > UDP_MAX:
                raise ValueError(f"a {len(message)}-byte audit message does not fit UDP")
            if self._udp is None:
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    _Datagrams, remote_addr=(self.target.host, self.target.port)
                )
                self._udp = transport
            self._udp.sendto(message)
            return
        if self._reader is not None and self._reader.at_eof():
            await self._disconnect()  # the collector hung up: connect again before writing
        if self._writer is None:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.target.host,
                    self.target.port,
                    ssl=self._ssl,
                    server_hostname=self.target.host,
                ),
                timeout=10,
            )
        writer = self._writer
        assert writer is not None
        writer.write(octet_counted(message))
        await asyncio.wait_for(writer.drain(), timeout=10)

    async def _disconnect(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._reader = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=2)
