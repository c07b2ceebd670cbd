"""C-STORE SCP: store the dataset as received through the store service STOW-RS uses.

pynetdicom spools the received dataset to a temporary file (`STORE_RECV_CHUNKED_DATASET`,
set by `server.py`) rather than holding it in memory. From it we build the PS3.10 file the
archive keeps: our own file meta information (with the accepted transfer syntax) followed by
the dataset bytes exactly as they came off the wire, copied and hashed in chunks without
decoding. The store service then parses, stores and indexes it like a STOW-RS part.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.events import Event

from app.auth.ae_policy import DimseService
from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from app.dimse.audit import refuse, store_event
from app.dimse.bridge import Bridge, access_for, peer, policy_of
from app.dimse.status import Status, with_comment
from app.services.store import FailureReason, Spooled, StoreResult

log = logging.getLogger(__name__)

# Identifies this archive as the creator of the files it writes (a UUID-derived UID,
# PS3.5 B.2) and in association negotiation.

_CHUNK = 1 << 20

# Failure statuses of the store service's reasons. A different object under a stored SOP
# Instance UID gets 0111 Duplicate SOP Instance (PS3.7 C.5.8), as in STOW-RS: PS3.4 B.2.3
# has no status for it (A9xx says the data set does not fit its SOP class, Cxxx that it
# could not be understood; neither is true), and PS3.7 9.1.1.1.9 allows the general
# statuses of PS3.7 Annex C in a C-STORE response.
_FAILURES: dict[FailureReason, tuple[Status, str]] = {
    FailureReason.DUPLICATE_SOP_INSTANCE: (
        Status.DUPLICATE_SOP_INSTANCE,
        "another object with this SOP Instance UID is stored",
    ),
    FailureReason.OUT_OF_RESOURCES: (Status.OUT_OF_RESOURCES, "storage is full"),
    FailureReason.CANNOT_UNDERSTAND: (Status.CANNOT_UNDERSTAND, ""),
    # A Cxxx code as in STOW-RS (see FailureReason): permanent, not worth a retry.
    FailureReason.PATIENT_MISMATCH: (
        Status.PATIENT_MISMATCH,
        "the study belongs to another patient (PatientID differs)",
    ),
    # Negotiation accepts only storable syntaxes, so this is a backstop; C122 is a Cxxx
    # "Cannot understand" status of PS3.4 B.2.3 with STOW-RS's meaning.
    FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED: (Status.TRANSFER_SYNTAX_NOT_SUPPORTED, ""),
    FailureReason.PROCESSING_FAILURE: (Status.PROCESSING_FAILURE, ""),
}


def handle_store(event: Event, bridge: Bridge) -> Dataset | int:
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID or "")
    sop_instance = str(request.AffectedSOPInstanceUID or "")
    transfer_syntax = str(event.context.transfer_syntax)
    policy = policy_of(event.assoc, bridge)
    if not policy.allows(DimseService.STORE):
        log.info("C-STORE from %s refused: not authorized", peer(event.assoc))
        return refuse(event.assoc, bridge, DimseService.STORE)
    access = access_for(event.assoc, policy)
    try:
        spooled = spool_received(
            event.dataset_path,
            sop_class=sop_class,
            sop_instance=sop_instance,
            transfer_syntax=transfer_syntax,
            source_ae=event.assoc.requestor.ae_title,
            folder=bridge.archive.store.spool_dir,
        )
        audit = store_event(event.assoc, bridge, access)
        result = bridge.run(bridge.archive.store.store_file(access, spooled, audit=audit))
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        log.error("C-STORE %s: cannot spool the received dataset: %s", sop_instance, exc)
        result = StoreResult(
            False,
            reason=FailureReason.OUT_OF_RESOURCES if full else FailureReason.PROCESSING_FAILURE,
            message="storage is full" if full else "the archive failed; nothing was stored",
        )
    except Exception:
        log.exception("C-STORE %s: the archive failed", sop_instance)
        result = StoreResult(
            False,
            reason=FailureReason.PROCESSING_FAILURE,
            message="the archive failed; nothing was stored",
        )
    status = store_status(result)
    code = status if isinstance(status, int) else int(status.Status)
    log.info(
        "C-STORE from %s: %s %s in %s: %s",
        peer(event.assoc),
        UID(sop_class).name,
        sop_instance,
        UID(transfer_syntax).name,
        _outcome(code, result),
    )
    return status


def store_status(result: StoreResult) -> Dataset | int:
    """The C-STORE response status of a store service result."""
    if result.ok:
        if result.warnings:
            return with_comment(Status.WARNING, "; ".join(result.warnings))
        return Status.SUCCESS
    reason = result.reason or FailureReason.PROCESSING_FAILURE
    code, comment = _FAILURES.get(reason, (Status.PROCESSING_FAILURE, ""))
    return with_comment(code, comment or result.message)


def spool_received(
    source: Path,
    *,
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    source_ae: str,
    folder: Path,
) -> Spooled:
    """A PS3.10 file in `folder`: our file meta, then the dataset of `source` (pynetdicom's
    spooled file) byte for byte. Written in chunks, hashed on the way, synced to disk."""
    _, offset = split_dataset(source)
    header = file_header(sop_class, sop_instance, transfer_syntax, source_ae)
    path = folder / f"{uuid.uuid4().hex}.part"  # removed at start if left by a crash
    digest = hashlib.sha256(header)
    try:
        with source.open("rb") as src, path.open("wb") as out:
            src.seek(offset)
            out.write(header)
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # an acknowledged instance must survive a power cut
            size = out.tell()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, size, digest.hexdigest())


def file_header(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the file meta information (PS3.10 7.1) of a received dataset."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae.strip():
        meta.SourceApplicationEntityTitle = source_ae.strip()
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def _outcome(code: int, result: StoreResult) -> str:
    if code == Status.SUCCESS:
        return "stored"
    detail = "; ".join(result.warnings) if result.ok else result.message
    return f"0x{code:04X} {'warning' if result.ok else 'failed'}: {detail}"
