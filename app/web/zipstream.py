"""A ZIP archive (PKWARE APPNOTE) written as a stream of bytes, member after member.

Python's `zipfile` does the encoding: on a sink that cannot seek it writes each member's
sizes and CRC-32 in a data descriptor after the data, which is what a stream needs. The sink
hands over whatever `zipfile` wrote as soon as it is written, so nothing is held beyond one
chunk and the central directory entries (a few dozen bytes per member).

Members are stored, not deflated: DICOM pixel data is mostly compressed already or
compresses poorly for the CPU it costs. ZIP64 extra fields are written for every member, so
members and archives may exceed 4 GiB.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import AsyncIterator
from typing import IO, cast


class _Sink:
    """Collects the bytes `zipfile` writes until the stream takes them."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._pieces.append(bytes(data))  # no copy for bytes, zipfile's usual argument
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        pieces, self._pieces = self._pieces, []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class ZipStream:
    """Writes a ZIP archive as a stream of bytes: members are added one after another from
    async chunk iterators; nothing is held beyond one chunk. ZIP64 always, stored (no
    compression), data descriptors after each member (sizes and CRC unknown up front).

    Usage: `async for piece in zs.member(name, chunks): yield piece` for each member, then
    `yield zs.close()`."""

    def __init__(self) -> None:
        self._sink = _Sink()
        # Without seek() and tell(), zipfile counts offsets itself and uses data descriptors.
        self._zip = zipfile.ZipFile(cast(IO[bytes], self._sink), "w", zipfile.ZIP_STORED)
        self._names: set[str] = set()

    async def member(self, name: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The bytes of one member: local header, the chunks as they come, data descriptor."""
        with self._zip.open(self._info(name), "w", force_zip64=True) as destination:
            yield self._sink.take()
            async for chunk in chunks:
                if chunk:
                    destination.write(chunk)
                    yield self._sink.take()
        yield self._sink.take()

    def member_bytes(self, name: str, data: bytes) -> bytes:
        """The bytes of one small member held in memory (a DICOMDIR, say)."""
        with self._zip.open(self._info(name), "w", force_zip64=True) as destination:
            destination.write(data)
        return self._sink.take()

    def close(self) -> bytes:
        """The central directory and the end records (ZIP64 ones when offsets need them)."""
        self._zip.close()
        return self._sink.take()

    def _info(self, name: str) -> zipfile.ZipInfo:
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or "\\" in name:
            raise ValueError(f"a ZIP member name must be a relative path: {name!r}")
        if name in self._names:
            raise ValueError(f"the ZIP archive already has a member named {name!r}")
        self._names.add(name)
        # zipfile sets the UTF-8 flag (APPNOTE 4.4.4 bit 11) for names that are not ASCII.
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16  # rw-r--r-- for unzip on POSIX systems
        return info
