"""P-DATA-TF (PS3.8 9.3.5, Annex E): the PDVs that carry DIMSE messages.

Each PDV is a fragment of a command set or of a data set, of one presentation context, the
last of its message or not. Received PDVs are split here (as memoryviews: no copy) and
reassembled by the association; sent messages are cut into PDUs no longer than the peer's
maximum, one PDV each, written as a header and a slice of the bytes so that a whole file
goes out in a few `writelines` calls rather than one system call per fragment.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.dimse.pdu import HEADER, PduError, PduType

_PDV = struct.Struct(">LBB")
# PDU header and PDV header around each fragment we send.
OVERHEAD = HEADER.size + _PDV.size
# Unlimited (a maximum length of 0) is sent in PDUs of this size.
DEFAULT_PDU = 1 << 20
# Bytes of a file read and handed to the transport at once: bounds the memory per
# association while keeping the calls few.
FILE_CHUNK = 4 << 20

COMMAND = 0x01
LAST = 0x02


@dataclass(frozen=True)
class Pdv:
    context_id: int
    command: bool
    last: bool
    data: memoryview


def split(body: bytes) -> Iterator[Pdv]:
    """The PDVs of a P-DATA-TF body; PduError when an item's length does not fit."""
    view = memoryview(body)
    offset, end = 0, len(body)
    if end == 0:
        raise PduError("a P-DATA-TF without a PDV")
    while offset < end:
        if end - offset < _PDV.size:
            raise PduError("a truncated PDV item header")
        length, context_id, control = _PDV.unpack_from(view, offset)
        if length < 2 or length > end - offset - 4:
            raise PduError(f"a PDV item length of {length} does not fit its PDU")
        start = offset + _PDV.size
        offset += 4 + length
        yield Pdv(context_id, bool(control & COMMAND), bool(control & LAST), view[start:offset])


def fragment_size(peer_max_pdu: int) -> int:
    """The largest fragment of a PDV in a PDU the peer accepts (its maximum length
    counts the PDU's body: the PDV header and the fragment)."""
    size = (peer_max_pdu or DEFAULT_PDU) - _PDV.size
    if size < 1:
        raise ValueError(f"a maximum PDU length of {peer_max_pdu} leaves no room for data")
    return size


def pdus(
    context_id: int, command: bool, data: bytes | memoryview, peer_max_pdu: int, last: bool = True
) -> list[bytes | memoryview]:
    """`data` as P-DATA-TF PDUs: alternately headers and slices of `data`. With
    `last=False` the final fragment is not marked as the last one (more follows)."""
    view = memoryview(data)
    size = fragment_size(peer_max_pdu)
    flags = COMMAND if command else 0
    pieces: list[bytes | memoryview] = []
    total = len(view)
    offset = 0
    while True:
        piece = view[offset : offset + size]
        offset += len(piece)
        control = flags | (LAST if last and offset >= total else 0)
        pieces.append(
            HEADER.pack(PduType.P_DATA_TF, _PDV.size + len(piece))
            + _PDV.pack(len(piece) + 2, context_id, control)
        )
        pieces.append(piece)
        if offset >= total:
            return pieces


@dataclass
class FileData:
    """The bytes of a file from an offset to its end, as a data set's P-DATA-TF PDUs: the
    first chunk already read (`read_ahead`), the rest read as it is sent (`send_rest`)."""

    path: Path
    context_id: int
    peer_max_pdu: int
    # The first chunk's PDUs, headers and fragments in one buffer.
    first: bytes | bytearray
    # Where the rest starts, and the file's size when it was read.
    offset: int
    end: int


def read_ahead(fd: int, path: Path, offset: int, context_id: int, peer_max_pdu: int) -> FileData:
    """The bytes of the open file `fd` (of `path`) from `offset` as PDUs: the first chunk
    (the whole file up to FILE_CHUNK) is read now, with one preadv() straight into its
    place between the PDU headers of one buffer. Read before the peer asks for it (while it
    stores the previous instance), a file costs its receiver no wait for our disk or CPU."""
    end = os.fstat(fd).st_size
    if end <= offset:
        empty = b"".join(pdus(context_id, False, b"", peer_max_pdu))
        return FileData(path, context_id, peer_max_pdu, empty, end, end)
    size = fragment_size(peer_max_pdu)
    length = min(_chunk(size), end - offset)
    first = _read_fragments(
        fd, offset, length, size, context_id=context_id, last=offset + length >= end
    )
    return FileData(path, context_id, peer_max_pdu, first, offset + length, end)


async def send_rest(writer: asyncio.StreamWriter, data: FileData) -> None:
    """Send what `read_ahead` left of `data` (files longer than FILE_CHUNK), a chunk at a
    time: one copy of the file's bytes, a few system calls, whatever the peer's maximum
    PDU. The file is read on the event loop: a stored instance is in the page cache or on a
    local disk, and one read of a few MB costs less than a hop to a thread and back."""
    await writer.drain()
    if data.offset >= data.end:
        return
    size = fragment_size(data.peer_max_pdu)
    fd = os.open(data.path, os.O_RDONLY)
    try:
        offset = data.offset
        while offset < data.end:
            length = min(_chunk(size), data.end - offset)
            writer.write(
                _read_fragments(
                    fd,
                    offset,
                    length,
                    size,
                    context_id=data.context_id,
                    last=offset + length >= data.end,
                )
            )
            offset += length
            await writer.drain()
    finally:
        os.close(fd)


async def send_file(
    writer: asyncio.StreamWriter, context_id: int, path: Path, offset: int, peer_max_pdu: int
) -> None:
    """Send the bytes of `path` from `offset` to its end as a data set."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = read_ahead(fd, path, offset, context_id, peer_max_pdu)
    finally:
        os.close(fd)
    writer.write(data.first)
    await send_rest(writer, data)


def _chunk(size: int) -> int:
    """Bytes of a file read at once: whole fragments of `size`, about FILE_CHUNK."""
    return max(size, FILE_CHUNK // size * size)


def _read_fragments(
    fd: int, offset: int, length: int, size: int, *, context_id: int, last: bool
) -> bytearray:
    """`length` bytes of `fd` from `offset` as P-DATA-TF PDUs of fragments of `size`."""
    count = -(-length // size)
    buffer = bytearray(length + count * OVERHEAD)
    view = memoryview(buffer)
    regions = []
    position = 0
    for number in range(count):
        piece = min(size, length - number * size)
        control = LAST if last and number == count - 1 else 0
        HEADER.pack_into(buffer, position, PduType.P_DATA_TF, _PDV.size + piece)
        _PDV.pack_into(buffer, position + HEADER.size, piece + 2, context_id, control)
        position += OVERHEAD
        regions.append(view[position : position + piece])
        position += piece
    got = os.preadv(fd, regions, offset)
    if got != length:  # a regular file gives what it has: it shrank under us
        raise OSError(f"read {got} of {length} bytes: the file changed while it was sent")
    return buffer
