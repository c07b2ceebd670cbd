"""C-STORE SCP: hand the received dataset to the store service STOW-RS uses, answer its
result as a status.

pynetdicom spools the received dataset to a temporary file (`STORE_RECV_CHUNKED_DATASET`,
set by `server.py`) rather than holding it in memory; the store service turns that file
into the archive's PS3.10 file, makes it durable, parses, stores and indexes it, and
decides what a failure means (`app/services/store.py`). pynetdicom removes its file after
this handler returns.
"""

from __future__ import annotations

import logging
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from app.auth.ae_policy import DimseService
from app.dimse.audit import refuse, store_event
from app.dimse.bridge import Bridge, access_for, peer, policy_of
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


def handle_store(event: Event, bridge: Bridge) -> Dataset | int:
    request = cast(C_STORE, event.request)
    received = Received(
        event.dataset_path,
        sop_class_uid=str(request.AffectedSOPClassUID or ""),
        sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        transfer_syntax_uid=str(event.context.transfer_syntax),
        source_ae=event.assoc.requestor.ae_title,
    )
    policy = policy_of(event.assoc, bridge)
    if not policy.allows(DimseService.STORE):
        log.info("C-STORE from %s refused: not authorized", peer(event.assoc))
        return refuse(event.assoc, bridge, DimseService.STORE)
    access = access_for(event.assoc, policy)
    audit = store_event(event.assoc, bridge, access)
    result = bridge.run(bridge.archive.store.store_received(access, received, audit=audit))
    status = store_status(result)
    code = status if isinstance(status, int) else int(status.Status)
    log.info(
        "C-STORE from %s: %s %s in %s: %s",
        peer(event.assoc),
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
