"""Presentation contexts: what the archive accepts, and what it proposes when it sends.

Accepted: Verification; every storage SOP class pynetdicom knows, in every transfer syntax a
stored object can be in (the data is stored as received, never decoded); the Patient Root
and Study Root FIND, MOVE and GET models. Storage contexts also accept the SCP role, which
a C-GET requestor proposes so that the instances come back over its own association.
"""

from __future__ import annotations

from collections.abc import Iterable

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
