from __future__ import annotations

import copy

from pynetdicom import AE

from app.dimse.contexts import copy_contexts_cheaply, supported_contexts


def test_accepting_an_association_does_not_copy_every_transfer_syntax_uid() -> None:
    # pynetdicom deep-copies the supported contexts per accepted association: 7,000 UIDs
    # copied one by one made an echoscu's association set-up 120 ms slower.
    ae = AE()
    for cx in supported_contexts():
        ae.add_supported_context(
            str(cx.abstract_syntax), cx.transfer_syntax, scu_role=cx.scu_role, scp_role=cx.scp_role
        )
    contexts = ae.supported_contexts
    copy_contexts_cheaply()
    copies = copy.deepcopy(contexts)
    assert copies == contexts  # the same negotiation
    for original, made in zip(contexts, copies, strict=True):
        assert made is not original
        assert made.transfer_syntax is not original.transfer_syntax  # the copy's own list
        assert made.transfer_syntax[0] is original.transfer_syntax[0]  # UIDs shared
    before = [list(cx.transfer_syntax) for cx in contexts]
    for made in copies:
        made.transfer_syntax.clear()  # what an acceptor may do to its copy
    assert [list(cx.transfer_syntax) for cx in contexts] == before
