"""Helpers for streamed responses."""

from __future__ import annotations

from collections.abc import AsyncIterator


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
