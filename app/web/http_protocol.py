"""uvicorn's HTTP protocol (httptools) with the timeouts and connection budgets it lacks.

uvicorn closes a keep-alive connection idle between requests (`timeout_keep_alive`), but a
connection that never finishes its request headers, or a body that stops arriving, is held
for ever, and it accepts every connection the file descriptor limit allows; 20,000 idle
connections made `/health` unreachable. This subclass, passed to uvicorn as `http=`, adds:

- a header timeout: a request's headers must be complete within N seconds of the connection
  (or of the request's first byte on a keep-alive connection); else 408 if part of a request
  came, and the connection is closed;
- a body timeout: while the app waits for the body, N seconds without a byte end the
  request with 408 (the app sees a disconnect) and close the connection; not while reading
  is paused because the app is busy with what it has;
- connection budgets: per client address (trusted proxies exempt) and in all; a connection
  over either is closed at once, with a throttled warning.

With `sendfile`, it also offers ASGI's zero-copy send extension (app/web/zerocopy.py) to
every request (PACS_HTTP_SENDFILE).

It hooks `connection_made`, `connection_lost`, `on_message_begin`, `on_headers_complete`,
`on_body` and `on_message_complete` of uvicorn's `HttpToolsProtocol`, each calling the
original.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.throttled_log import ThrottledLog
from app.web import zerocopy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)
timeouts = ThrottledLog(log, level=logging.INFO)


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float
    body_timeout: float
    per_address: int
    total: int
    # Addresses the per-address budget does not apply to (reverse proxies).
    exempt: tuple[IPNetwork, ...] = ()

    def is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.exempt)


def guarded_protocol(limits: HttpLimits, *, sendfile: bool = False) -> type[HttpToolsProtocol]:
    """The protocol class for one server: its limits, whether it offers zero-copy sends,
    and its count of connections by address (uvicorn makes one protocol object per
    connection)."""

    class Protocol(GuardedProtocol):
        LIMITS = limits
        SENDFILE = sendfile
        BY_ADDRESS: ClassVar[Counter[str]] = Counter()

    return Protocol


class GuardedProtocol(HttpToolsProtocol):
    LIMITS: ClassVar[HttpLimits]
    SENDFILE: ClassVar[bool]
    BY_ADDRESS: ClassVar[Counter[str]]

    _address = ""
    _counted = False
    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_seen = 0.0  # loop time of the latest body bytes (see on_body)
    _in_headers = False  # part of a request's headers has arrived, not all

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # joins server_state.connections
        self._address = self.client[0] if self.client else ""
        if why := self._over_budget():
            refusals.log(why, self._address)
            transport.abort()
            return
        self._counted = True
        self.BY_ADDRESS[self._address] += 1
        self._header_timer = self.loop.call_later(self.LIMITS.header_timeout, self._no_headers)

    def _over_budget(self) -> str:
        limits = self.LIMITS
        if len(self.connections) > limits.total:
            return (
                "HTTP connection refused: the server's budget of connections is used "
                f"(PACS_HTTP_MAX_CONNECTIONS={limits.total})"
            )
        open_here = self.BY_ADDRESS[self._address]
        if open_here >= limits.per_address and not limits.is_exempt(self._address):
            return (
                f"HTTP connection refused: {open_here} open from this address "
                f"(PACS_HTTP_MAX_CONNECTIONS_PER_ADDRESS={limits.per_address})"
            )
        return ""

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.BY_ADDRESS[self._address] -= 1
            if self.BY_ADDRESS[self._address] <= 0:
                del self.BY_ADDRESS[self._address]
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    # -- header timeout ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_timer is None:  # a keep-alive connection's next request
            self._header_timer = self.loop.call_later(self.LIMITS.header_timeout, self._no_headers)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        if self.SENDFILE and self.cycle is not None and self.cycle.scope is self.scope:
            zerocopy.offer(self.cycle)
        self._restart_body_timer()

    def _no_headers(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        seconds = self.LIMITS.header_timeout
        timeouts.log(
            f"HTTP connection closed: request headers not complete within {seconds:g} s "
            "(PACS_HTTP_HEADER_TIMEOUT)",
            self._address,
        )
        if self._in_headers:  # a client that sent nothing gets no answer (a browser's
            # pre-opened connection would take a 408 for its next request's answer)
            self._send_408(
                f"request headers not complete within {seconds:g} s (PACS_HTTP_HEADER_TIMEOUT)"
            )
        self.transport.close()

    # -- body timeout -----------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        # Only noted: the timer looks at it when it fires and waits on for what is left.
        # Cancelling and re-arming a timer per chunk (a heap entry each) cost some 2% of
        # a STOW's CPU.
        self._body_seen = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _restart_body_timer(self) -> None:
        self._body_seen = self.loop.time()
        self._arm_body_timer(self.LIMITS.body_timeout)

    def _arm_body_timer(self, delay: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(delay, self._no_body)

    def _no_body(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        left = self._body_seen + self.LIMITS.body_timeout - self.loop.time()
        if left > 0:  # bytes came meanwhile: the client is not silent yet
            self._arm_body_timer(left)
            return
        if self.flow.read_paused:  # we stopped reading: the app is busy, not the client slow
            self._restart_body_timer()
            return
        seconds = self.LIMITS.body_timeout
        timeouts.log(
            f"HTTP request ended: no body bytes for {seconds:g} s (PACS_HTTP_BODY_TIMEOUT)",
            self._address,
        )
        if not cycle.response_started:
            self._send_408(f"no request body bytes for {seconds:g} s (PACS_HTTP_BODY_TIMEOUT)")
        # The app reads a disconnect and its answer, if any, goes nowhere.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _send_408(self, reason: str) -> None:
        message = reason.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode("ascii") + b"\r\n"
            b"connection: close\r\n\r\n" + message
        )
