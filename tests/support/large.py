"""A large multi-frame DICOM file produced as a stream, never whole in memory."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Any

from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_dataset, to_bytes


def frame_value(number: int) -> int:
    """The byte every pixel of frame `number` (1-based) is filled with."""
    return number % 251


class LargeInstance:
    def __init__(self, frames: int, rows: int = 512, columns: int = 512, **attrs: Any) -> None:
        self.frames = frames
        self.frame_size = rows * columns * 2
        ds = make_dataset(rows=rows, columns=columns, frames=1, sop=generate_uid(), **attrs)
        ds.NumberOfFrames = frames
        del ds.PixelData
        self.dataset = ds
        self.header = to_bytes(ds)
        # Pixel Data (7FE0,0010) OW, explicit VR little endian, 32-bit length.
        pixel_length = self.frame_size * frames
        self.header += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
        self.size = len(self.header) + pixel_length

    def chunks(self) -> Iterator[bytes]:
        yield self.header
        for number in range(1, self.frames + 1):
            yield bytes([frame_value(number)]) * self.frame_size

    def sha256(self) -> str:
        """SHA-256 of the whole file, computed from the stream (bounded memory)."""
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()
