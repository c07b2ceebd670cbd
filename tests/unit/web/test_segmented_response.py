"""SegmentedResponse without the zero-copy extension (another ASGI server): file segments
are read and sent as body messages, in order, and every file is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

from app.web.streaming import FileSegment, Segment, SegmentedResponse


def test_file_segments_are_read_when_the_server_offers_no_zero_copy(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    content = bytes(range(256)) * 9000  # over one read chunk (1 MB)
    path.write_bytes(content)
    handles = [path.open("rb"), path.open("rb")]

    async def segments() -> AsyncIterator[Segment]:
        yield b"head"
        yield FileSegment(handles[0], 0, len(content))
        yield FileSegment(handles[1], 1000, 24)
        yield b"tail"

    expected = b"head" + content + content[1000:1024] + b"tail"
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the response does not read the request")

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    response = SegmentedResponse(segments(), len(expected), "application/octet-stream")
    scope = {"type": "http", "method": "GET", "extensions": {}}
    asyncio.run(response(scope, receive, send))

    start, *body = messages
    assert (b"content-length", str(len(expected)).encode()) in start["headers"]
    assert {m["type"] for m in body} == {"http.response.body"}
    assert b"".join(m["body"] for m in body) == expected
    assert [m["more_body"] for m in body][-1] is False
    assert all(h.closed for h in handles)
