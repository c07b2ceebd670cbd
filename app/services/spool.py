"""Spool files: where an incoming object waits, hashed and durable, until the blob store
takes it. STOW-RS bodies arrive as chunks; C-STORE datasets as the file pynetdicom wrote
while receiving them (`STORE_RECV_CHUNKED_DATASET`). Either way the spool file is the
PS3.10 file the archive keeps, durable (the blob store's put syncs it) before anything
is acknowledged."""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.dicom.file_meta import file_header

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

# Bytes gathered from a stream before a worker thread writes them (see StoreService).
SPOOL_BATCH = 1 << 20
_CHUNK = 1 << 20
# Preamble, 'DICM', then (0002,0000) UL of 4 bytes, explicit VR little endian (PS3.10 7.1).
_PREFIX = 128 + 4
_GROUP_LENGTH = struct.Struct("<HH2sHI")


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Received:
    """A dataset received over DIMSE: the file pynetdicom wrote (its own file meta, then
    the dataset exactly as it came off the wire) and what the request said about it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    source_ae: str


def spool_path(folder: Path) -> Path:
    return folder / f"{uuid.uuid4().hex}.part"  # removed at start if left by a crash


def write_chunks(
    handle: BinaryIO | None, path: Path, chunks: list[bytes], digest: Hash
) -> BinaryIO:
    """Append `chunks` to the spool file (opened at the first call), hashing them: on a
    worker thread, where hashing (which releases the GIL) runs beside the event loop."""
    if handle is None:
        handle = path.open("wb")
    for chunk in chunks:
        digest.update(chunk)
    handle.writelines(chunks)
    return handle


def make_durable(handle: BinaryIO) -> None:
    """Flush, sync and close: an acknowledged instance must survive a power cut."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()


def spool_received(received: Received, folder: Path) -> Spooled:
    """The archive's PS3.10 file of a received dataset in `folder`: our file meta (the
    negotiated transfer syntax, the sender's AE title), then the dataset bytes of
    `received` copied once, in chunks, hashed on the way, synced to disk."""
    header = file_header(
        received.sop_class_uid,
        received.sop_instance_uid,
        received.transfer_syntax_uid,
        received.source_ae,
    )
    path = spool_path(folder)
    digest = hashlib.sha256(header)
    try:
        with received.path.open("rb") as src, path.open("wb") as out:
            src.seek(_dataset_offset(src.read(_PREFIX + _GROUP_LENGTH.size)))
            out.write(header)
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            size = out.tell()
            make_durable(out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, size, digest.hexdigest())


def _dataset_offset(start: bytes) -> int:
    """Where the dataset begins in a file pynetdicom wrote: after its file meta, whose
    length the group length element gives (no need to decode the group)."""
    if len(start) < _PREFIX + _GROUP_LENGTH.size or start[128:132] != b"DICM":
        raise OSError("the received dataset's spool file has no PS3.10 header")
    group, element, vr, length, value = _GROUP_LENGTH.unpack_from(start, _PREFIX)
    if (group, element, vr, length) != (0x0002, 0x0000, b"UL", 4):
        raise OSError("the received dataset's spool file does not start with (0002,0000)")
    return _PREFIX + _GROUP_LENGTH.size + int(value)
