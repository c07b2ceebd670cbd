"""Spool files: where an incoming object waits, hashed and durable, until the blob store
takes it. STOW-RS bodies arrive as chunks; C-STORE data sets as the file the DIMSE layer
wrote while receiving them. Either way the spool file is the
PS3.10 file the archive keeps, durable (the blob store's put syncs it) before anything
is acknowledged."""

from __future__ import annotations

import hashlib
import os
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


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Received:
    """A data set received over DIMSE: a file of its bytes exactly as they came off the
    wire (no PS3.10 header: the archive writes its own) and what the request said of it."""

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
