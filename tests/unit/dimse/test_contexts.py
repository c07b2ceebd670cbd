from __future__ import annotations

from pydicom.dataset import Dataset

from app.dicom.transfer_syntax import STORABLE
from app.dimse.contexts import STORAGE_TRANSFER_SYNTAXES, supported_contexts
from app.dimse.store import store_status
from app.services.store import FailureReason, StoreResult


def test_cstore_accepts_exactly_the_syntaxes_stow_stores() -> None:
    # One rule for both protocols: a syntax STOW-RS refuses is not negotiated either.
    assert len(STORAGE_TRANSFER_SYNTAXES) == len(set(STORAGE_TRANSFER_SYNTAXES))
    assert set(STORAGE_TRANSFER_SYNTAXES) == set(STORABLE)
    storage = [cx for cx in supported_contexts() if cx.scp_role]
    assert storage
    for cx in storage:
        assert {str(ts) for ts in cx.transfer_syntax} == set(STORABLE)


def test_an_unstorable_syntax_reaching_the_store_is_a_cannot_understand_status() -> None:
    # A backstop behind negotiation: the store service's reason maps to C122, a Cxxx code.
    result = StoreResult(
        False,
        reason=FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
        message="TransferSyntaxUID 1.2.3.4.5 is not a standard transfer syntax",
    )
    status = store_status(result)
    assert isinstance(status, Dataset)
    assert status.Status == 0xC122
    assert "1.2.3.4.5" in status.ErrorComment
