"""Byte order of native values: stored big-endian data is served little endian."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterable, AsyncIterator

# Bytes per value that a byte swap reverses, by VR of binary data.
_WIDTH = {"OW": 2, "US": 2, "SS": 2, "OF": 4, "OL": 4, "FL": 4, "UL": 4, "SL": 4,
          "OD": 8, "OV": 8, "FD": 8}  # fmt: skip
_TYPECODE = {2: "H", 4: "I", 8: "Q"}


def swap_width(vr: str) -> int:
    """Value width to swap for `vr` (1: nothing to swap, e.g. OB and UN)."""
    return _WIDTH.get(vr, 1)


def swap(data: bytes, width: int) -> bytes:
    if width == 1:
        return data
    values = array(_TYPECODE[width])
    assert values.itemsize == width, "platform integer sizes differ from DICOM's"
    values.frombytes(data)
    values.byteswap()
    return values.tobytes()


async def swapped(chunks: AsyncIterable[bytes], width: int) -> AsyncIterator[bytes]:
    """Re-yield a stream with each `width`-byte value reversed, across chunk edges."""
    carry = b""
    async for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = len(data) - len(data) % width
        carry = data[cut:]
        if cut:
            yield swap(data[:cut], width)
    if carry:  # an odd tail cannot be swapped; send it as it is
        yield carry
