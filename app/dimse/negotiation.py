"""Presentation context negotiation as association acceptor (PS3.8 9.3.2.2, PS3.7 D.3.3.4).

`pynetdicom.presentation.negotiate_as_acceptor` does the matching and the SCP/SCU role
selection; here the request's items are gathered and, for a C-GET requestor, its own order
of transfer syntaxes is preferred for the SOP classes it will receive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu_primitives import A_ASSOCIATE, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from app.dimse.association import Context


@dataclass(frozen=True)
class Negotiated:
    # Accepted contexts by ID; every result (accepted or not) for the A-ASSOCIATE-AC; the
    # role selection items to answer with.
    contexts: dict[int, Context]
    results: list[PresentationContext]
    roles: list[SCP_SCU_RoleSelectionNegotiation]


def negotiate(request: A_ASSOCIATE, supported: Sequence[PresentationContext]) -> Negotiated:
    proposed = request.presentation_context_definition_list
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in request.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid
    }
    ours = prefer_receiver_syntaxes(proposed, roles, supported)
    results, role_items = negotiate_as_acceptor(proposed, list(ours), roles or None)
    contexts = {
        int(cx.context_id): Context(
            int(cx.context_id),
            str(cx.abstract_syntax),
            str(cx.transfer_syntax[0]),
            as_scu=bool(cx.as_scu),
            as_scp=bool(cx.as_scp),
        )
        for cx in results
        if cx.result == 0 and cx.context_id is not None
    }
    return Negotiated(contexts, results, role_items)


def prefer_receiver_syntaxes(
    proposed: Sequence[PresentationContext],
    roles: dict[UID, tuple[bool | None, bool | None]],
    supported: Sequence[PresentationContext],
) -> Sequence[PresentationContext]:
    """Where a requestor proposes the SCP role for a storage SOP class (a C-GET requestor
    that will receive instances), accept its transfer syntaxes in its own order of
    preference: it is the one that has to read them. Only those contexts are copied, and
    without build_context, which validates each of our ~40 UIDs again (a C-GET requestor
    proposes the SCP role for 100-odd SOP classes: 160 ms per association)."""
    receiving = {uid for uid, (_, scp) in roles.items() if scp}
    if not receiving:
        return supported
    theirs: dict[str, list[str]] = {}
    for cx in proposed:
        if cx.abstract_syntax in receiving:
            theirs.setdefault(str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
    contexts = []
    for cx in supported:
        order = theirs.get(str(cx.abstract_syntax))
        if order is None or cx.scp_role is None:
            contexts.append(cx)
            continue
        mine = cx.transfer_syntax
        first = [ts for ts in mine if ts in order]
        first.sort(key=order.index)
        copy = PresentationContext.__new__(PresentationContext)
        copy.__dict__.update(cx.__dict__)
        copy._transfer_syntax = first + [ts for ts in mine if ts not in order]
        contexts.append(copy)
    return contexts
