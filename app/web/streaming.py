"""Helpers for streamed responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from starlette.responses import Response, StreamingResponse

from app.dicom.multipart import closing, content_type_header, new_boundary, part_head

# One body of a multipart response, produced when its turn comes: (chunks, size in bytes).
Part = Callable[[], Awaitable[tuple[AsyncIterator[bytes], int]]]


async def opened(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Start a stream now, so that an error opening it (a blob missing from storage, say)
    becomes an error response instead of a response cut off after its headers."""
    first = await anext(chunks, None)

    async def rest() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def bytes_part(produce: Callable[[], Awaitable[bytes]]) -> Part:
    """A part whose body is computed whole (an encoded frame, a rendered image)."""

    async def send() -> tuple[AsyncIterator[bytes], int]:
        data = await produce()
        return one_chunk(data), len(data)

    return send


async def multipart_response(parts: Sequence[Part], part_type: str, type_param: str) -> Response:
    """multipart/related; type=`type_param`, each part labelled `part_type` with its
    Content-Length, produced one after the other as the body is sent."""
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            content, size = await part()
            yield part_head(boundary, part_type, {"Content-Length": str(size)})
            async for chunk in content:
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    return StreamingResponse(
        await opened(body()), media_type=content_type_header(boundary, type_param)
    )
