"""Spool files: where an incoming object waits, hashed, until the blob store takes it (and
makes it durable: the folder store syncs it once renamed into place, S3 keeps it once
uploaded) before anything is acknowledged. STOW-RS bodies arrive as chunks of a stream;
C-STORE data sets as PDV fragments the DIMSE layer writes into a `ReceivedSink`. Either way
the spool file is the PS3.10 file the archive keeps, written once."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.dicom.file_meta import file_header

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

# Bytes gathered from a stream before a worker thread writes them (see StoreService).
SPOOL_BATCH = 1 << 20
_CHUNK = 1 << 20

Chunk = bytes | memoryview


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Received:
    """What a C-STORE request says of the data set it carries."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    source_ae: str


def spool_path(folder: Path) -> Path:
    return folder / f"{uuid.uuid4().hex}.part"  # removed at start if left by a crash


def write_chunks(
    handle: BinaryIO | None, path: Path, chunks: Sequence[Chunk], digest: Hash | None
) -> BinaryIO:
    """Append `chunks` to the spool file (opened at the first call), hashing them unless
    `digest` is None: on a worker thread, where hashing (which releases the GIL) runs
    beside the event loop."""
    opened = handle is None
    if handle is None:
        handle = path.open("wb")
    try:
        if digest is not None:
            for chunk in chunks:
                digest.update(chunk)
        handle.writelines(chunks)
    except BaseException:
        if opened:  # nobody else has it to close
            with contextlib.suppress(OSError):
                handle.close()
        raise
    return handle


class ReceivedSink:
    """A C-STORE data set on its way into the spool, fragment by fragment as the DIMSE
    layer receives it: the archive's file meta (the negotiated transfer syntax, the
    sender's AE title) first, then the data set's bytes exactly as they came off the wire.
    Nothing is copied to another file afterwards.

    The fragments are held as they came (views of the PDUs read: no copy) up to
    SPOOL_BATCH, so that an instance of a typical size is written, hashed and parsed in
    one worker call (`finish`) rather than touched on the event loop. A larger one goes
    to the file in batches of SPOOL_BATCH as it arrives (a write to the page cache, on the
    loop, which bounds the memory per association); `finish` then hashes what was
    written by reading it back. A write that fails (a full disk) is remembered and the
    rest of the data set dropped, so that the request is still read whole; `finish` raises
    it, for the store service to answer."""

    def __init__(self, path: Path, received: Received) -> None:
        self.path = path
        self.received = received
        header = file_header(
            received.sop_class_uid,
            received.sop_instance_uid,
            received.transfer_syntax_uid,
            received.source_ae,
        )
        self._pending: list[Chunk] = [header]
        self._pending_size = len(header)
        self._handle: BinaryIO | None = None
        self.error: OSError | None = None
        # Set once the store service took the file (it removes it if it is not kept).
        self.consumed = False

    @property
    def held(self) -> int:
        """Bytes held in memory, not yet written."""
        return self._pending_size

    def write(self, data: Chunk) -> None:
        if self.error is not None:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= SPOOL_BATCH:
            batch, self._pending, self._pending_size = self._pending, [], 0
            try:
                self._handle = write_chunks(self._handle, self.path, batch, None)
            except OSError as exc:
                self.error = exc
                self.close()

    def finish(self) -> Spooled:
        """Write what is held, hash the whole file, close it: on a worker thread. Raises
        the error of a failed write (the file is then removed)."""
        try:
            if self.error is not None:
                raise self.error
            digest = hashlib.sha256()
            if self._handle is not None:
                self._handle.flush()
                with self.path.open("rb") as written:  # from the page cache
                    while chunk := written.read(_CHUNK):
                        digest.update(chunk)
            handle = write_chunks(self._handle, self.path, self._pending, digest)
            self._handle = None
            self._pending = []
            size = handle.tell()
            handle.close()
        except BaseException:
            self._remove()
            raise
        return Spooled(self.path, size, digest.hexdigest())

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError as exc:
                self.error = self.error or exc
            self._handle = None

    def discard(self) -> None:
        """Drop the data set unless the store service took it."""
        if not self.consumed:
            self.consumed = True
            self._remove()

    def _remove(self) -> None:
        self._pending = []
        self.close()
        self.path.unlink(missing_ok=True)
