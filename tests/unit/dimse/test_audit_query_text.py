"""A C-FIND identifier is kept in the audit trail as `Keyword=value&...`: the keys that
have a value, URL-encoded as a QIDO-RS query would be."""

from __future__ import annotations

from pydicom.dataset import Dataset

from app.dimse.audit import query_text


def test_keys_with_values_only() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "DOE^J*"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = "A&B"
    assert query_text(identifier) == "QueryRetrieveLevel=STUDY&PatientName=DOE^J*&PatientID=A%26B"


def test_no_identifier() -> None:
    assert query_text(None) == ""
