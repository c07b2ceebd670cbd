"""C-STORE SCP: the received data set goes to the store service STOW-RS uses, whose result
is answered as a status.

The data set is written to a temporary PS3.10 file as its fragments arrive (`Incoming`, the
association's sink), never whole in memory; the store service turns that file into the
archive's PS3.10 file, makes it durable, parses, stores and indexes it, and decides what a
failure means (`app/services/store.py`). The temporary file is removed once answered.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID

from app.auth.ae_policy import DimseService
from app.dimse import message
from app.dimse.audit import refuse, store_event
from app.dimse.bridge import Bridge, access_for, policy_of
from app.dimse.message import Command, CommandField
from app.dimse.operation import Operation
from app.dimse.status import Status, with_comment
from app.services.spool import Received
from app.services.store import FailureReason, StoreResult

log = logging.getLogger(__name__)

# Statuses of the store service's reasons, with a comment where the service's message
# would not fit an Error Comment (64 characters) or names a UID the request carries anyway.
# A different object under a stored SOP Instance UID gets 0111 Duplicate SOP Instance
# (PS3.7 C.5.8), as in STOW-RS: PS3.4 B.2.3 has no status for it (A9xx says the data set
# does not fit its SOP class, Cxxx that it could not be understood; neither is true), and
# PS3.7 9.1.1.1.9 allows the general statuses of PS3.7 Annex C in a C-STORE response.
_FAILURES: dict[FailureReason, tuple[Status, str]] = {
    FailureReason.DUPLICATE_SOP_INSTANCE: (
        Status.DUPLICATE_SOP_INSTANCE,
        "another object with this SOP Instance UID is stored",
    ),
    FailureReason.OUT_OF_RESOURCES: (Status.OUT_OF_RESOURCES, ""),
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


@dataclass
class Incoming:
    """A C-STORE data set being received: its bytes, written as they come. A
    write that fails (a full disk) is remembered, and the rest of the data set dropped, so
    that the request is still read whole and answered."""

    received: Received
    file: BinaryIO | None
    error: OSError | None = None

    @classmethod
    def open(cls, command: Command, calling_ae: str, transfer_syntax: str) -> Incoming:
        """A temporary file for the data set of the C-STORE-RQ `command`, received on a
        context of `transfer_syntax`."""
        descriptor, name = tempfile.mkstemp(prefix="pacs-cstore-", suffix=".dcm")
        received = Received(
            Path(name),
            sop_class_uid=str(command.get(message.AFFECTED_SOP_CLASS_UID, "")),
            sop_instance_uid=str(command.get(message.AFFECTED_SOP_INSTANCE_UID, "")),
            transfer_syntax_uid=transfer_syntax,
            source_ae=calling_ae,
        )
        return cls(received, os.fdopen(descriptor, "wb"))

    def write(self, data: bytes | memoryview) -> None:
        if self.file is None or self.error is not None:
            return
        try:
            self.file.write(data)
        except OSError as exc:
            self.error = exc

    def finish(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                self.error = self.error or exc
            self.file = None

    def discard(self) -> None:
        self.finish()
        self.received.path.unlink(missing_ok=True)


async def handle_store(operation: Operation, bridge: Bridge, incoming: Incoming) -> None:
    status = await stored_status(operation, bridge, incoming)
    await operation.respond(CommandField.C_STORE_RSP, status)


async def stored_status(operation: Operation, bridge: Bridge, incoming: Incoming) -> Dataset | int:
    assoc = operation.assoc
    policy = policy_of(assoc, bridge)
    if not policy.allows(DimseService.STORE):
        log.info("C-STORE from %s refused: not authorized", assoc.peer)
        return refuse(assoc, bridge, DimseService.STORE)
    received = incoming.received
    if incoming.error is not None:
        error = incoming.error
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        log.warning(
            "C-STORE from %s: cannot receive %s: %s", assoc.peer, received.sop_instance_uid, error
        )
        if full:
            return with_comment(Status.OUT_OF_RESOURCES, "storage is full")
        return with_comment(Status.PROCESSING_FAILURE, "cannot receive the data set")
    access = access_for(assoc, policy)
    audit = store_event(assoc, bridge, access)
    result = await bridge.archive.store.store_received(access, received, audit=audit)
    status = store_status(result)
    code = status if isinstance(status, int) else int(status.Status)
    log.info(
        "C-STORE from %s: %s %s in %s: %s",
        assoc.peer,
        UID(received.sop_class_uid).name,
        received.sop_instance_uid,
        UID(received.transfer_syntax_uid).name,
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


def _outcome(code: int, result: StoreResult) -> str:
    if code == Status.SUCCESS:
        return "stored"
    detail = "; ".join(result.warnings) if result.ok else result.message
    return f"0x{code:04X} {'warning' if result.ok else 'failed'}: {detail}"
