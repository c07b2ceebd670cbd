"""Frames of the top-level pixel data: the byte ranges of each frame in the stored file.

Native pixel data is cut into frames of Rows x Columns x SamplesPerPixel x BitsAllocated.
Encapsulated pixel data (PS3.5 A.4) is cut at fragment boundaries, from the most to the least
reliable source: the Extended Offset Table, the Basic Offset Table, one fragment per frame,
and fragments that start a JPEG or JPEG 2000 codestream. Frames are ranges of fragment
values, never of item headers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from app.dicom.instance import FrameRanges
from app.dicom.json import NOT_PLAIN, plain_value
from app.dicom.reader import (
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    DicomParseError,
    PixelData,
    get_decoded,
)

# Reads `length` bytes at an offset of the stored file.
Pread = Callable[[int, int], bytes]

_EXTENDED_OFFSET_TABLE = 0x7FE00001
_EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100

_DEFAULT_BITS = {FLOAT_PIXEL_DATA: 32, DOUBLE_FLOAT_PIXEL_DATA: 64}
# First bytes of a fragment that starts a frame: JPEG/JPEG-LS SOI, JPEG 2000 SOC+SIZ, JP2.
_CODESTREAM_STARTS = (b"\xff\xd8\xff", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n")


def locate_frames(
    ds: Dataset, pixel: PixelData, pread: Pread, notes: list[str]
) -> tuple[FrameRanges, ...]:
    count = _number_of_frames(ds, notes)
    if pixel.encapsulated:
        return _encapsulated_frames(ds, pixel, count, pread, notes)
    return _native_frames(ds, pixel, count, notes)


def _number_of_frames(ds: Dataset, notes: list[str]) -> int:
    plain = plain_value(ds, _NUMBER_OF_FRAMES)
    if isinstance(plain, int) and plain >= 1:
        return plain
    elem = get_decoded(ds, _NUMBER_OF_FRAMES)
    if elem is None or elem.value in (None, ""):
        return 1
    count = _as_int(elem.value)
    if count is None or count < 1:
        notes.append(f"invalid NumberOfFrames {str(elem.value)!r}; assuming 1")
        return 1
    return count


def _native_frames(
    ds: Dataset, pixel: PixelData, count: int, notes: list[str]
) -> tuple[FrameRanges, ...]:
    rows, columns = _int_attribute(ds, _ROWS), _int_attribute(ds, _COLUMNS)
    bits = _int_attribute(ds, _BITS_ALLOCATED) or _DEFAULT_BITS.get(pixel.tag)
    samples = _int_attribute(ds, _SAMPLES_PER_PIXEL) or 1
    if not pixel.length:
        notes.append("frames not indexed: empty pixel data")
        return ()
    if not (rows and columns and bits):
        notes.append("frames not indexed: no Rows, Columns or BitsAllocated")
        return ()
    frame_bits = rows * columns * samples * bits
    photometric = plain_value(ds, _PHOTOMETRIC_INTERPRETATION)
    if photometric is NOT_PLAIN:
        elem = get_decoded(ds, _PHOTOMETRIC_INTERPRETATION)
        photometric = None if elem is None else elem.value
    if photometric == "YBR_FULL_422" and samples == 3:
        frame_bits = frame_bits // 3 * 2  # two chroma samples per two pixels
    if count == 1:
        size = (frame_bits + 7) // 8  # the whole value, bit-packed or not
    elif frame_bits % 8:
        notes.append(f"frames not indexed: a frame of {frame_bits} bits is not whole bytes")
        return ()
    else:
        size = frame_bits // 8
    if size * count > pixel.length:
        raise DicomParseError(
            f"truncated: pixel data has {pixel.length} bytes, {count} frame(s) of {size} "
            f"bytes need {size * count}"
        )
    return tuple(((pixel.offset + index * size, size),) for index in range(count))


def _encapsulated_frames(
    ds: Dataset, pixel: PixelData, count: int, pread: Pread, notes: list[str]
) -> tuple[FrameRanges, ...]:
    """Frame boundaries, from the most to the least reliable source (PS3.5 A.4)."""
    fragments = pixel.items[1:]  # the first item is the Basic Offset Table
    if not fragments:
        notes.append("frames not indexed: encapsulated pixel data has no fragments")
        return ()
    # Offset tables count from the first byte of the first fragment's item tag.
    first = fragments[0][0] - 8
    starts = {offset - 8 - first: index for index, (offset, _) in enumerate(fragments)}
    extended = _extended_offsets(ds, pread)
    if extended is not None:
        frames = _frames_from_extended_table(*extended, starts, fragments)
        if frames is not None:
            return _checked_count(frames, count, notes)
        notes.append("Extended Offset Table does not match the fragments; ignored")
    table_offset, table_length = pixel.items[0]
    if table_length:
        basic = _unpack_offsets(pread(table_offset, table_length), "L")
        frames = _frames_from_offsets(basic, starts, fragments)
        if frames is not None:
            return _checked_count(frames, count, notes)
        notes.append("Basic Offset Table does not match the fragments; ignored")
    if len(fragments) == count:
        return tuple((fragment,) for fragment in fragments)
    if count == 1:
        return (tuple(fragments),)
    frames = _frames_from_codestream_starts(fragments, pread)
    if len(frames) == count:
        return frames
    notes.append(
        f"frames not indexed: {len(fragments)} fragments for {count} frames and no offset table"
    )
    return ()


def _checked_count(
    frames: tuple[FrameRanges, ...], count: int, notes: list[str]
) -> tuple[FrameRanges, ...]:
    if len(frames) != count:
        notes.append(f"offset table lists {len(frames)} frames but NumberOfFrames is {count}")
    return frames


def _extended_offsets(ds: Dataset, pread: Pread) -> tuple[list[int], list[int]] | None:
    offsets = _binary_value(ds, _EXTENDED_OFFSET_TABLE, pread)
    lengths = _binary_value(ds, _EXTENDED_OFFSET_TABLE_LENGTHS, pread)
    if not offsets or not lengths:
        return None
    return _unpack_offsets(offsets, "Q"), _unpack_offsets(lengths, "Q")


def _binary_value(ds: Dataset, tag: int, pread: Pread) -> bytes | None:
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.value is None:
        return pread(elem.value_tell, elem.length)
    value = elem.value
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _unpack_offsets(data: bytes, code: str) -> list[int]:
    # Offset tables of encapsulated pixel data are little endian (PS3.5 A.4).
    size = struct.calcsize(f"<{code}")
    count = len(data) // size
    return list(struct.unpack(f"<{count}{code}", data[: count * size]))


def _frames_from_extended_table(
    offsets: list[int],
    lengths: list[int],
    starts: dict[int, int],
    fragments: list[tuple[int, int]],
) -> tuple[FrameRanges, ...] | None:
    """One fragment per frame (PS3.3 C.7.6.3.1.8): the frame is the first `length` bytes."""
    if len(offsets) != len(lengths):
        return None
    frames: list[FrameRanges] = []
    for offset, length in zip(offsets, lengths, strict=True):
        index = starts.get(offset)
        if index is None or length > fragments[index][1]:
            return None
        frames.append(((fragments[index][0], length),))
    return tuple(frames)


def _frames_from_offsets(
    offsets: list[int], starts: dict[int, int], fragments: list[tuple[int, int]]
) -> tuple[FrameRanges, ...] | None:
    """Basic Offset Table: each frame runs from its fragment to the next frame's."""
    indices = [starts.get(offset) for offset in offsets]
    if not indices or indices[0] != 0 or None in indices:
        return None
    bounds = [index for index in indices if index is not None] + [len(fragments)]
    if any(later <= earlier for earlier, later in pairwise(bounds)):
        return None
    return tuple(tuple(fragments[begin:stop]) for begin, stop in pairwise(bounds))


def _frames_from_codestream_starts(
    fragments: list[tuple[int, int]], pread: Pread
) -> tuple[FrameRanges, ...]:
    """A new frame at each fragment that starts with a JPEG or JPEG 2000 codestream."""
    frames: list[FrameRanges] = []
    current: list[tuple[int, int]] = []
    for offset, length in fragments:
        if current and pread(offset, min(length, 12)).startswith(_CODESTREAM_STARTS):
            frames.append(tuple(current))
            current = []
        current.append((offset, length))
    frames.append(tuple(current))
    return tuple(frames)


def _int_attribute(ds: Dataset, tag: int) -> int | None:
    plain = plain_value(ds, tag)  # without pydicom's decoding, most of the cost
    if isinstance(plain, int):
        return plain
    elem = get_decoded(ds, tag)
    return None if elem is None else _as_int(elem.value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
