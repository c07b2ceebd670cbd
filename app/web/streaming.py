"""Helpers for streamed responses."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.dicom.multipart import closing, content_type_header, new_boundary, part_head
from app.services.errors import NotAcceptable, Unsupported

log = logging.getLogger(__name__)

# Parts produced before a response starts are kept in memory up to this size, then on disk.
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_SPOOL_CHUNK = 1024 * 1024

# One body of a multipart response, produced when its turn comes: (chunks, size in bytes).
Part = Callable[[], Awaitable[tuple[AsyncIterator[bytes], int]]]

_ZERO_COPY = "http.response.zerocopysend"  # ASGI extension (app/web/zerocopy.py serves it)


@dataclass(frozen=True)
class FileSegment:
    """`count` bytes of an open file from `offset`, sent straight from the file (zero-copy
    when the server offers it); the response closes the file once sent."""

    file: BinaryIO
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


Segment = bytes | FileSegment
Chunk = TypeVar("Chunk", bytes, Segment)


async def opened(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Start a stream now, so that an error opening it (a blob missing from storage, say)
    becomes an error response instead of a response cut off after its headers."""
    first = await anext(chunks, None)

    async def rest() -> AsyncIterator[Chunk]:
        if first is not None:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


class SegmentedResponse(Response):
    """A body of byte strings and file segments of known total `length` (sent as its
    Content-Length). File segments go to the server as zero-copy sends when it offers the
    extension, else are read in 1 MB chunks. A segment that fails to come ends the body
    short of its length: the client sees the response cut off."""

    def __init__(
        self,
        segments: AsyncIterator[Segment],
        length: int,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.segments = segments
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({**(headers or {}), "Content-Length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        zero_copy = _ZERO_COPY in scope.get("extensions", {})
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async for segment in self.segments:
                if isinstance(segment, bytes):
                    await send({"type": "http.response.body", "body": segment, "more_body": True})
                    continue
                try:
                    if zero_copy:
                        await send(
                            {
                                "type": _ZERO_COPY,
                                "file": segment.file,
                                "offset": segment.offset,
                                "count": segment.count,
                                "more_body": True,
                            }
                        )
                    else:
                        await _send_read(segment, send)
                finally:
                    segment.file.close()
        finally:
            await self.segments.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_read(segment: FileSegment, send: Send) -> None:
    fd, offset, left = segment.file.fileno(), segment.offset, segment.count
    while left > 0:
        chunk = await asyncio.to_thread(os.pread, fd, min(left, _SPOOL_CHUNK), offset)
        if not chunk:
            raise OSError(f"the file ended {left} bytes before the bytes to send")
        offset, left = offset + len(chunk), left - len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def bytes_part(produce: Callable[[], Awaitable[bytes]]) -> Part:
    """A part whose body is computed whole (an encoded frame, a rendered image)."""

    async def send() -> tuple[AsyncIterator[bytes], int]:
        data = await produce()
        return one_chunk(data), len(data)

    return send


async def multipart_response(
    parts: Sequence[Part], part_type: str, type_param: str, *, omissible: bool = False
) -> Response:
    """multipart/related; type=`type_param`, each part labelled `part_type` with its
    Content-Length, produced one after the other as the body is sent.

    A part whose production fails (Unsupported, NotAcceptable) after the response has
    started is left out when `omissible` (each part is an instance: PS3.18 10.4.3 lets a
    retrieve omit those it cannot return), with a warning in the log; the body still ends
    with its closing boundary. Parts that may not be omitted (frames: the client maps
    parts to the numbers it asked for by their order) must be produced first
    (`produced_first`). The first part's failure is always the response's error status."""
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for k, part in enumerate(parts):
            try:
                content, size = await part()
            except (Unsupported, NotAcceptable) as exc:
                if k == 0 or not omissible:
                    raise
                log.warning("part %d omitted from a multipart response: %s", k + 1, exc)
                continue
            yield part_head(boundary, part_type, {"Content-Length": str(size)})
            async for chunk in content:
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    return StreamingResponse(
        await opened(body()), media_type=content_type_header(boundary, type_param)
    )


async def produced_first(parts: Sequence[Part]) -> list[Part]:
    """Produce every part now, into one spooled temporary file (memory stays bounded), so
    that a failure in any of them is an error before the response starts; the returned
    parts read the spool. The spool is removed when the last part has been read (or, for a
    response dropped midway, when it is collected)."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    extents: list[tuple[int, int]] = []
    try:
        for part in parts:
            content, _ = await part()
            start = spool.tell()
            async for chunk in content:
                await asyncio.to_thread(spool.write, chunk)
            extents.append((start, spool.tell() - start))
    except BaseException:
        spool.close()
        raise

    def read(index: int) -> Part:
        start, size = extents[index]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                await asyncio.to_thread(spool.seek, start)
                left = size
                while left > 0:
                    chunk = await asyncio.to_thread(spool.read, min(left, _SPOOL_CHUNK))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk
            finally:
                if index == len(extents) - 1:
                    spool.close()

        async def send() -> tuple[AsyncIterator[bytes], int]:
            return chunks(), size

        return send

    return [read(index) for index in range(len(extents))]
