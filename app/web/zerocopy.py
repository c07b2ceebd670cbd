"""ASGI's zero-copy send extension (`http.response.zerocopysend`) on uvicorn's httptools
request cycle: file bytes go from the page cache to the socket with `os.sendfile`, never
through Python. A whole-study WADO-RS response is almost only such bytes.

A message is `{"type": "http.response.zerocopysend", "file": <has fileno()>, "offset": int,
"count": int, "more_body": bool}` (offset and count optional: from the file's position to
its end). Only in a response with a Content-Length (no chunk framing to interleave); HEAD
and the Content-Length accounting are kept as uvicorn keeps them for body messages.

`os.sendfile` is called on the event loop's thread with the socket non-blocking: it hands
the kernel what fits in the socket's buffer and returns at once. When the socket is full
the cycle waits for it to be writable (a duplicate of its descriptor watched by the loop:
the transport's own descriptor is the loop's already), so a slow client holds a coroutine,
never a thread. The transport's write buffer must be empty before each call (ordering):
while a zero-copy send runs, the write limits are (0, 0), so uvicorn's flow control pauses
on any buffered byte and resumes only once everything is out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

EXTENSION = "http.response.zerocopysend"

Send = Callable[[Any], Awaitable[None]]


def offer(cycle: RequestResponseCycle) -> None:
    """Announce the extension in the cycle's scope and handle its messages; other messages
    go to uvicorn's own `send`. Not over TLS: sendfile would write past the encryption."""
    if cycle.transport.get_extra_info("sslcontext") is not None:
        return
    cycle.scope.setdefault("extensions", {})[EXTENSION] = {}
    plain: Send = cycle.send

    async def send(message: Any) -> None:
        if message["type"] != EXTENSION:
            await plain(message)
            return
        await _send_file(cycle, plain, message)

    cycle.send = send  # type: ignore[method-assign]


async def _send_file(cycle: RequestResponseCycle, plain: Send, message: Any) -> None:
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    if not cycle.response_started or cycle.response_complete:
        raise RuntimeError(f"'{EXTENSION}' sent outside a response body")
    fd = message["file"].fileno()
    offset = message.get("offset")
    if offset is None:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    count = message.get("count")
    if count is None:
        count = os.fstat(fd).st_size - offset
    more_body = bool(message.get("more_body", False))
    if cycle.chunked_encoding:
        raise RuntimeError(f"'{EXTENSION}' needs a response with a Content-Length")
    if cycle.scope["method"] != "HEAD" and count:
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        cycle.expected_content_length -= count
        await _sendfile(cycle, fd, offset, count)
    if not more_body:
        await plain({"type": "http.response.body", "body": b"", "more_body": False})


async def _sendfile(cycle: RequestResponseCycle, fd: int, offset: int, count: int) -> None:
    transport = cycle.transport
    out = transport.get_extra_info("socket").fileno()
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        while count > 0:
            if cycle.disconnected:
                return
            if transport.get_write_buffer_size():
                # Bytes written before (a part's head) go first: with limits (0, 0) the
                # flow is paused until the transport has sent them all.
                if cycle.flow.write_paused:
                    await cycle.flow.drain()
                else:
                    await asyncio.sleep(0)
                continue
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                await _writable(out)
                continue
            except OSError:  # the client went away (EPIPE, ECONNRESET)
                transport.abort()
                return
            if sent == 0:
                raise OSError(f"the file ended {count} bytes before the bytes to send")
            offset += sent
            count -= sent
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)


async def _writable(fd: int) -> None:
    """Until the socket `fd` can take bytes (or has failed: the next send says which)."""
    loop = asyncio.get_running_loop()
    watched = os.dup(fd)
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(watched, wake)
    try:
        await ready
    finally:
        loop.remove_writer(watched)
        os.close(watched)
