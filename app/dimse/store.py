"""C-STORE SCP: the received data set goes to the store service STOW-RS uses, whose result
is answered as a status.

The data set goes, as its fragments arrive, into a sink the store service opens in its
spool (`open_sink`): the archive's PS3.10 file, written once, never whole in memory. The
store service then hashes, parses, stores and indexes it, and decides what a failure
means, a disk that filled while receiving included (`app/services/store.py`); this module
only maps the result to a status.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.uid import UID

from app.auth.ae_policy import DimseService
from app.dimse import message
from app.dimse.audit import refuse, store_event
from app.dimse.bridge import Bridge, access_for, policy_of
from app.dimse.message import Command, CommandField
from app.dimse.operation import Operation
from app.dimse.status import Status, with_comment
from app.services.spool import Received, ReceivedSink
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


def open_sink(
    bridge: Bridge, command: Command, calling_ae: str, transfer_syntax: str
) -> ReceivedSink:
    """Where the data set of the C-STORE-RQ `command`, received on a context of
    `transfer_syntax`, is written as it arrives: a sink of the store service's spool."""
    received = Received(
        sop_class_uid=str(command.get(message.AFFECTED_SOP_CLASS_UID, "")),
        sop_instance_uid=str(command.get(message.AFFECTED_SOP_INSTANCE_UID, "")),
        transfer_syntax_uid=transfer_syntax,
        source_ae=calling_ae,
    )
    return bridge.archive.store.open_received(received)


async def handle_store(operation: Operation, bridge: Bridge, sink: ReceivedSink) -> None:
    status = await stored_status(operation, bridge, sink)
    await operation.respond(CommandField.C_STORE_RSP, status)


async def stored_status(operation: Operation, bridge: Bridge, sink: ReceivedSink) -> Dataset | int:
    """The status of a C-STORE whose data set was received into `sink` (consumed by the
    store service, or left to the caller to discard when refused here)."""
    assoc = operation.assoc
    policy = policy_of(assoc, bridge)
    if not policy.allows(DimseService.STORE):
        log.info("C-STORE from %s refused: not authorized", assoc.peer)
        return refuse(assoc, bridge, DimseService.STORE)
    received = sink.received
    access = access_for(assoc, policy)
    audit = store_event(assoc, bridge, access)
    result = await bridge.archive.store.store_received(access, sink, audit=audit)
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
