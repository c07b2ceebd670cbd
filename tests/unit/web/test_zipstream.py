"""The streamed ZIP archive: read back by zipfile, `python -m zipfile -t` and `unzip -t`."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from app.web.zipstream import ZipStream
from tests.support.dicom_factory import make_file

LOCAL_HEADER = b"PK\x03\x04"
DATA_DESCRIPTOR = b"PK\x07\x08"
ZIP64_EXTRA_ID = 0x0001
UTF8_FLAG = 0x0800
DESCRIPTOR_FLAG = 0x0008


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def pieces_of(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def archive(members: dict[str, bytes], *, chunk: int = 65536) -> tuple[bytes, list[int]]:
    """The archive's bytes and the size of each piece the stream produced."""
    zs = ZipStream()
    pieces: list[bytes] = []
    for name, data in members.items():
        async for piece in zs.member(name, chunked(data, chunk)):
            pieces.append(piece)
    pieces.append(zs.close())
    return b"".join(pieces), [len(piece) for piece in pieces]


def large_payload() -> bytes:
    # Not compressible and not periodic, so an offset or CRC error cannot go unnoticed.
    return os.urandom(5 * 1024 * 1024 + 12345)


async def test_members_read_back_exactly() -> None:
    dicom = make_file(rows=64, columns=64)
    members = {
        "DICOM/ST000001/SE000001/IM000001": dicom,
        "big.bin": large_payload(),
        "empty": b"",
        "Ünïcödé/名前.txt": "ü".encode() * 100,
    }
    data, _ = await archive(members, chunk=4096)

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == list(members)
        for info in zf.infolist():
            content = members[info.filename]
            assert zf.read(info) == content
            assert info.file_size == info.compress_size == len(content)
            assert zlib.crc32(content) == info.CRC
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.flag_bits & DESCRIPTOR_FLAG
        assert zf.getinfo("Ünïcödé/名前.txt").flag_bits & UTF8_FLAG


async def test_every_member_has_zip64_local_header() -> None:
    members = {"a": b"alpha", "b": b"", "c": large_payload()}
    data, _ = await archive(members)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    for info in infos:
        offset = info.header_offset
        assert data[offset : offset + 4] == LOCAL_HEADER
        version, _, _, _, _, _, _, _, name_length, extra_length = struct.unpack_from(
            "<HHHHHIIIHH", data, offset + 4
        )
        assert version >= 45  # ZIP64 format extensions
        extra = data[offset + 30 + name_length : offset + 30 + name_length + extra_length]
        header_id, size = struct.unpack_from("<HH", extra)
        assert (header_id, size) == (ZIP64_EXTRA_ID, 16)
        # ZIP64 data descriptor: signature, CRC-32, then 8-byte sizes
        end = offset + 30 + name_length + extra_length + info.compress_size
        signature, crc, compressed, uncompressed = struct.unpack_from("<4sIQQ", data, end)
        assert (signature, crc) == (DATA_DESCRIPTOR, info.CRC)
        assert compressed == uncompressed == info.file_size


async def test_stream_holds_no_more_than_a_chunk() -> None:
    chunk = 16384
    payload = large_payload()
    _, sizes = await archive({"big.bin": payload}, chunk=chunk)
    # Every piece is a header, one chunk, a descriptor or the central directory.
    assert max(sizes) == chunk
    assert len(sizes) > len(payload) // chunk


async def test_pieces_are_yielded_as_chunks_arrive() -> None:
    zs = ZipStream()
    produced: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        yield b"first"
        # The header and the first chunk are out before the second chunk is asked for.
        assert b"".join(produced).endswith(b"first")
        yield b"second"

    async for piece in zs.member("m", source()):
        produced.append(piece)
    produced.append(zs.close())
    with zipfile.ZipFile(io.BytesIO(b"".join(produced))) as zf:
        assert zf.read("m") == b"firstsecond"


async def test_empty_chunks_are_skipped() -> None:
    zs = ZipStream()
    pieces = [piece async for piece in zs.member("m", pieces_of([b"", b"ab", b"", b"c"]))]
    assert b"" not in pieces
    with zipfile.ZipFile(io.BytesIO(b"".join([*pieces, zs.close()]))) as zf:
        assert zf.read("m") == b"abc"


async def test_member_bytes_between_streamed_members() -> None:
    zs = ZipStream()
    out = [piece async for piece in zs.member("IMAGES/IM1", pieces_of([b"x" * 1000]))]
    out.append(zs.member_bytes("DICOMDIR", b"directory"))
    out.extend([piece async for piece in zs.member("IMAGES/IM2", pieces_of([b"y" * 10]))])
    out.append(zs.close())
    with zipfile.ZipFile(io.BytesIO(b"".join(out))) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == ["IMAGES/IM1", "DICOMDIR", "IMAGES/IM2"]
        assert zf.read("DICOMDIR") == b"directory"
        assert zf.read("IMAGES/IM2") == b"y" * 10


def test_empty_archive() -> None:
    data = ZipStream().close()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == []


@pytest.mark.parametrize("name", ["", "/etc/passwd", "a/../../b", "..", "a\\b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        ZipStream().member_bytes(name, b"")


def test_duplicate_names_are_refused() -> None:
    zs = ZipStream()
    zs.member_bytes("DICOMDIR", b"1")
    with pytest.raises(ValueError, match="already has"):
        zs.member_bytes("DICOMDIR", b"2")


def test_external_tools_accept_archive(tmp_path: Path) -> None:
    members = {
        "DICOM/ST000001/SE000001/IM000001": make_file(),
        "big.bin": large_payload(),
        "empty": b"",
        "Ünïcödé.txt": b"text",
    }
    data, _ = asyncio.run(archive(members, chunk=8192))
    path = tmp_path / "archive.zip"
    path.write_bytes(data)

    tested = subprocess.run(
        [sys.executable, "-m", "zipfile", "-t", str(path)], capture_output=True, check=False
    )
    assert tested.returncode == 0, tested.stderr

    unzip = shutil.which("unzip")
    if unzip is None:
        return  # python -m zipfile already checked the archive
    tested = subprocess.run([unzip, "-t", str(path)], capture_output=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert b"No errors detected" in tested.stdout
    extracted = tmp_path / "out"
    subprocess.run([unzip, "-q", str(path), "-d", str(extracted)], check=True)
    assert (extracted / "big.bin").read_bytes() == members["big.bin"]
    assert (extracted / "DICOM/ST000001/SE000001/IM000001").read_bytes() == members[
        "DICOM/ST000001/SE000001/IM000001"
    ]
    assert (extracted / "empty").read_bytes() == b""
