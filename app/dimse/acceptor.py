"""Association set-up as acceptor (PS3.8 7.1, 9.3.2-9.3.4): the A-ASSOCIATE-RQ decoded,
then answered with an A-ASSOCIATE-AC or -RJ, encoded by `pynetdicom.pdu`."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from app.dimse.association import APPLICATION_CONTEXT_NAME, user_information
from app.dimse.negotiation import Negotiated
from app.dimse.pdu import AbortReason, Pdu, PduError, header


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ's result, source and reason (PS3.8 9.3.4), and why, for the log."""

    result: int
    source: int
    diagnostic: int
    reason: str


# Rejected-permanent, by the service user, calling AE title not recognized.
def calling_ae_not_allowed(calling: str) -> Rejection:
    return Rejection(0x01, 0x01, 0x03, f"calling AE title {calling!r} is not allowed")


# Rejected-transient, by the service provider (presentation), local limit exceeded.
def too_many_associations(limit: int) -> Rejection:
    return Rejection(0x02, 0x03, 0x02, f"too many associations (at most {limit})")


def decode_request(pdu: Pdu) -> A_ASSOCIATE:
    """The A-ASSOCIATE primitive of an A-ASSOCIATE-RQ PDU; PduError when it is malformed."""
    request = A_ASSOCIATE_RQ()
    try:
        request.decode(header(pdu.type, len(pdu.body)) + pdu.body)
        primitive = request.to_primitive()
    except Exception as exc:  # pynetdicom raises many types for a malformed PDU
        raise PduError(
            f"malformed A-ASSOCIATE-RQ ({type(exc).__name__})",
            AbortReason.INVALID_PARAMETER,
        ) from None
    if not primitive.presentation_context_definition_list:
        raise PduError("an A-ASSOCIATE-RQ without a presentation context")
    return primitive


def reject(rejection: Rejection) -> bytes:
    pdu = A_ASSOCIATE_RJ()
    pdu.result, pdu.source, pdu.reason_diagnostic = (
        rejection.result,
        rejection.source,
        rejection.diagnostic,
    )
    return pdu.encode()


def accept(request: A_ASSOCIATE, negotiated: Negotiated, max_pdu: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = negotiated.results
    primitive.user_information = [*user_information(max_pdu), *negotiated.roles]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return pdu.encode()
