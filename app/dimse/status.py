"""DIMSE status codes the archive answers with (PS3.7 Annex C, PS3.4 B.2.3 and C.4)."""

from __future__ import annotations

from enum import IntEnum

from pydicom.dataset import Dataset

from app.auth.ae_policy import DimseService
from app.dimse.association import Association

# Error Comment (0000,0902) is LO: at most 64 characters.
_COMMENT_LENGTH = 64


class Status(IntEnum):
    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    # Storage: coercion of data elements (B.2.3); retrieve: some sub-operations failed.
    WARNING = 0xB000
    # General statuses (PS3.7 Annex C), valid in any C-xxx response (PS3.7 9.1.x.1.9).
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    # The calling AE may not use this service (its AE policy): "Refused: Not authorized".
    NOT_AUTHORIZED = 0x0124
    # A request on a context whose SOP class does not offer it.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    # Storage (PS3.4 B.2.3).
    OUT_OF_RESOURCES = 0xA700
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # a Cannot understand (Cxxx) code
    PATIENT_MISMATCH = 0xC40A  # a Cannot understand (Cxxx) code: the study's patient differs
    # Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    MOVE_DESTINATION_UNKNOWN = 0xA801
    UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702


def with_comment(code: int, comment: str) -> Dataset:
    """A status with an Error Comment, cut to the 64 characters its VR (LO) allows."""
    status = Dataset()
    status.Status = int(code)
    status.ErrorComment = shorten(comment)
    return status


def shorten(text: str) -> str:
    # LO: the default repertoire without backslash or control characters.
    text = " ".join(text.replace("\\", "/").split())
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    if len(text) <= _COMMENT_LENGTH:
        return text
    return text[: _COMMENT_LENGTH - 3].rstrip() + "..."


def not_authorized(assoc: Association, service: DimseService) -> Dataset:
    """The refusal of a service the calling AE's policy does not allow."""
    ae_title = assoc.peer_ae.strip()
    return with_comment(Status.NOT_AUTHORIZED, f"AE {ae_title} may not use C-{service.upper()}")
