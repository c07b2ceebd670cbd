"""Byte order of native values: stored big-endian data is served little endian."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterable, AsyncIterator

from pydicom.dataset import Dataset

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


_BINARY_VRS = frozenset({"OW", "OF", "OL", "OD", "OV"})


def swap_binary_values(ds: Dataset) -> None:
    """Turn the OW, OF, OL, OD and OV values of a dataset read from big-endian data little
    endian, in place, nested sequences included: pydicom keeps those values as raw bytes in
    the order they were read, and writes and interprets them as they are."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                swap_binary_values(item)
        elif elem.VR in _BINARY_VRS and isinstance(elem.value, bytes):
            elem.value = swap(elem.value, swap_width(elem.VR))


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
