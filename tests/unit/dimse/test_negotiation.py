"""Negotiation as acceptor, and the A-ASSOCIATE-AC / -RJ we answer with."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context

from app.dimse import acceptor
from app.dimse.association import APPLICATION_CONTEXT_NAME, Context, peer_max_pdu
from app.dimse.contexts import STUDY_ROOT_FIND, STUDY_ROOT_GET, supported_contexts
from app.dimse.negotiation import negotiate
from app.dimse.pdu import Pdu, PduError, PduType

SUPPORTED = supported_contexts()


def _request(contexts: list[tuple[str, list[str]]], scp_for: str = "") -> A_ASSOCIATE:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = "MODALITY"
    primitive.called_ae_title = "PACS"
    proposed = []
    for number, (abstract, syntaxes) in enumerate(contexts):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * number + 1
        proposed.append(cx)
    primitive.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = 32768
    items: list[object] = [length]
    if scp_for:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = UID(scp_for)
        role.scu_role, role.scp_role = False, True
        items.append(role)
    primitive.user_information = items  # type: ignore[assignment]
    return primitive


def _wire(primitive: A_ASSOCIATE) -> A_ASSOCIATE:
    """Through the PDU and back, as the acceptor reads it."""
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    raw = rq.encode()
    return acceptor.decode_request(Pdu(PduType.ASSOCIATE_RQ, raw[6:]))


def _results(contexts: list[PresentationContext]) -> dict[int, int]:
    return {int(cx.context_id or 0): int(cx.result or 0) for cx in contexts}


def test_storage_is_accepted_in_our_preferred_syntax_and_unknown_classes_refused() -> None:
    request = _wire(
        _request(
            [
                (CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
                ("1.2.3.4.5", [ImplicitVRLittleEndian]),  # no such SOP class
                (CTImageStorage, ["1.2.3.99"]),  # no such transfer syntax
                (STUDY_ROOT_FIND, [ImplicitVRLittleEndian]),
            ]
        )
    )
    negotiated = negotiate(request, SUPPORTED)
    assert negotiated.contexts == {
        1: Context(1, CTImageStorage, ExplicitVRLittleEndian, as_scu=False, as_scp=True),
        7: Context(7, STUDY_ROOT_FIND, ImplicitVRLittleEndian, as_scu=False, as_scp=True),
    }
    # 3: abstract syntax not supported; 4: transfer syntaxes not supported (PS3.8 9.3.3.2).
    assert _results(negotiated.results) == {1: 0, 3: 3, 5: 4, 7: 0}
    assert peer_max_pdu(request) == 32768


def test_a_c_get_receiver_gets_its_own_preferred_syntax_and_the_scu_role_for_us() -> None:
    request = _wire(
        _request(
            [
                (STUDY_ROOT_GET, [ExplicitVRLittleEndian]),
                (CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
            ],
            scp_for=CTImageStorage,
        )
    )
    negotiated = negotiate(request, SUPPORTED)
    ct = negotiated.contexts[3]
    assert (ct.transfer_syntax, ct.as_scu) == (ImplicitVRLittleEndian, True)
    [role] = negotiated.roles
    assert (role.sop_class_uid, role.scp_role) == (CTImageStorage, True)
    # Only this association's contexts changed: the next one gets our order again.
    again = negotiate(
        _wire(_request([(CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])])),
        SUPPORTED,
    )
    assert again.contexts[1].transfer_syntax == ExplicitVRLittleEndian


def test_lossy_syntaxes_are_accepted_when_they_are_all_that_is_offered() -> None:
    negotiated = negotiate(_wire(_request([(CTImageStorage, [JPEGBaseline8Bit])])), SUPPORTED)
    assert negotiated.contexts[1].transfer_syntax == JPEGBaseline8Bit


def test_the_accept_pdu_carries_the_results_roles_and_our_maximum() -> None:
    request = _wire(
        _request(
            [
                (STUDY_ROOT_GET, [ExplicitVRLittleEndian]),
                (CTImageStorage, [ExplicitVRLittleEndian]),
            ],
            scp_for=CTImageStorage,
        )
    )
    negotiated = negotiate(request, SUPPORTED)
    ac = A_ASSOCIATE_AC()
    ac.decode(acceptor.accept(request, negotiated, 1 << 20))
    answer = ac.to_primitive()
    assert _results(answer.presentation_context_definition_results_list) == {1: 0, 3: 0}
    assert peer_max_pdu(answer) == 1 << 20
    roles = [i for i in answer.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)]
    assert [(r.sop_class_uid, r.scp_role) for r in roles] == [(CTImageStorage, True)]


def test_a_rejection_encodes_its_result_source_and_reason() -> None:
    rj = A_ASSOCIATE_RJ()
    rj.decode(acceptor.reject(acceptor.too_many_associations(3)))
    assert (rj.result, rj.source, rj.reason_diagnostic) == (2, 3, 2)
    rj.decode(acceptor.reject(acceptor.calling_ae_not_allowed("X")))
    assert (rj.result, rj.source, rj.reason_diagnostic) == (1, 1, 3)


@pytest.mark.parametrize("body", [b"", b"\x00\x01" + bytes(66), bytes(200)])
def test_a_malformed_association_request_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(PduError):
        acceptor.decode_request(Pdu(PduType.ASSOCIATE_RQ, body))
