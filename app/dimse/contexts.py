"""Presentation contexts: what the archive accepts, and what it proposes when it sends.

Accepted: Verification; every storage SOP class pynetdicom knows, in every transfer syntax a
stored object can be in (the data is stored as received, never decoded); the Patient Root
and Study Root FIND, MOVE and GET models. Storage contexts also accept the SCP role, which
a C-GET requestor proposes so that the instances come back over its own association.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.association import Association
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
)

# pynetdicom defines its SOP class constants at import time, out of mypy's sight.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from app.dicom.transfer_syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORABLE,
)
from app.query.identifier import Model
from app.services.ports import StoredInstance

VERIFICATION: str = Verification
PATIENT_ROOT_FIND: str = PatientRootQueryRetrieveInformationModelFind
PATIENT_ROOT_MOVE: str = PatientRootQueryRetrieveInformationModelMove
PATIENT_ROOT_GET: str = PatientRootQueryRetrieveInformationModelGet
STUDY_ROOT_FIND: str = StudyRootQueryRetrieveInformationModelFind
STUDY_ROOT_MOVE: str = StudyRootQueryRetrieveInformationModelMove
STUDY_ROOT_GET: str = StudyRootQueryRetrieveInformationModelGet

# An association holds at most 128 presentation contexts (odd IDs 1 to 255, PS3.8 9.3.2.2).
MAX_CONTEXTS = 128

# Transfer syntaxes for stored objects, in the order we prefer one when a requestor proposes
# several in one context: uncompressed first (Explicit VR Little Endian keeps the VRs), then
# lossless compression, then the rest. Never lossy first: a modality offering JPEG Baseline
# beside Explicit VR Little Endian would compress its images lossily for us. The SMPTE ST
# 2110 syntaxes carry live video and audio (DICOM-RTV), not stored instances. The set is
# STORABLE, the one STOW-RS checks too: both protocols store the same syntaxes.
_PREFERRED = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000MCLossless,  # JPEG 2000 Part 2 Lossless
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    # pydicom 3.0 names neither of these two yet
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
)
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(dict.fromkeys([*_PREFERRED, *STORABLE]))

STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)

FIND_MODELS: dict[str, Model] = {PATIENT_ROOT_FIND: "patient", STUDY_ROOT_FIND: "study"}
MOVE_MODELS: dict[str, Model] = {PATIENT_ROOT_MOVE: "patient", STUDY_ROOT_MOVE: "study"}
GET_MODELS: dict[str, Model] = {PATIENT_ROOT_GET: "patient", STUDY_ROOT_GET: "study"}

# Identifier datasets: the uncompressed syntaxes.
_QUERY_TRANSFER_SYNTAXES = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)


def supported_contexts() -> list[PresentationContext]:
    """The contexts the archive accepts as association acceptor (add them one by one with
    their roles: `AE.supported_contexts = ...` drops the roles)."""
    contexts = [build_context(VERIFICATION, list(_QUERY_TRANSFER_SYNTAXES))]
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        contexts.append(build_context(model, list(_QUERY_TRANSFER_SYNTAXES)))
    for sop_class in STORAGE_SOP_CLASSES:
        cx = build_context(sop_class, list(STORAGE_TRANSFER_SYNTAXES))
        # The requestor may be the SCU (C-STORE to us) or the SCP (C-GET sub-operations).
        cx.scu_role = True
        cx.scp_role = True
        contexts.append(cx)
    return contexts


def prefer_receiver_syntaxes(assoc: Association) -> None:
    """Where a requestor proposes the SCP role for a storage SOP class (a C-GET requestor
    that will receive instances), accept its transfer syntaxes in its own order of
    preference: it is the one that has to read them. Call before negotiation starts
    (EVT_REQUESTED); only this association's copy of the supported contexts changes."""
    primitive = assoc.requestor.primitive
    roles = assoc.requestor.role_selection
    receiving = {uid for uid, item in roles.items() if item.scp_role}
    if primitive is None or not receiving:
        return
    proposed: dict[str, list[str]] = {}
    for cx in primitive.presentation_context_definition_list:
        if str(cx.abstract_syntax) in receiving:
            proposed.setdefault(str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
    contexts = []
    for supported in assoc.acceptor.supported_contexts:
        theirs = proposed.get(str(supported.abstract_syntax))
        if theirs is None or supported.scp_role is None:
            contexts.append(supported)
            continue
        ours = [str(ts) for ts in supported.transfer_syntax]
        ordered = [ts for ts in theirs if ts in ours] + [ts for ts in ours if ts not in theirs]
        cx = build_context(str(supported.abstract_syntax), ordered)
        cx.scu_role, cx.scp_role = supported.scu_role, supported.scp_role
        contexts.append(cx)
    assoc.acceptor.supported_contexts = contexts


def sending_contexts(instances: Iterable[StoredInstance]) -> list[PresentationContext]:
    """The contexts to propose to a C-MOVE destination for `instances`.

    One context per SOP class and stored transfer syntax, so that the destination can
    accept exactly the syntax a file is stored in and it is sent byte for byte; then, per
    SOP class, one more context with both little endian syntaxes, which every receiver
    decodes: an instance whose stored syntax the destination refused is transcoded to the
    one it accepts (app/services/delivery.py). Beyond 128 contexts the rest are dropped (the
    instances that needed them fail).
    """
    pairs = dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in instances)
    contexts = [build_context(sop_class, [ts]) for sop_class, ts in pairs]
    sop_classes = dict.fromkeys(sop for sop, _ in pairs)
    contexts += [
        build_context(sop, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
        for sop in sop_classes
    ]
    return contexts[:MAX_CONTEXTS] or [build_context(VERIFICATION)]


def _copy_context(context: PresentationContext, memo: dict[int, Any]) -> PresentationContext:
    """A copy of `context` as `copy.deepcopy` would make it, without copying each UID
    (immutable strings): only the transfer syntax list is the copy's own."""
    copy = PresentationContext.__new__(PresentationContext)
    copy.__dict__.update(context.__dict__)
    copy._transfer_syntax = list(context._transfer_syntax)
    return copy


def copy_contexts_cheaply() -> None:
    """pynetdicom deep-copies the AE's supported contexts for every association it accepts:
    ours are some 180 SOP classes with 7,000 transfer syntax UIDs, and copying them UID by
    UID took most of an association's set-up (120 ms of an echoscu's 230 on a loaded
    2-core machine). Process-wide, as `poll_ready.use_poll` is."""
    PresentationContext.__deepcopy__ = _copy_context  # type: ignore[attr-defined]
