"""C-FIND responses encoded from DICOM JSON are byte for byte what pydicom writes from the
Dataset `find.response` builds; what the fast path does not encode falls back to it."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import dsutils

from app.dicom.levels import Level
from app.dimse.find import response, response_bytes

ATTRS: dict[str, Any] = {
    "0020000D": {"vr": "UI", "Value": ["1.2.840.5"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
    "00080020": {"vr": "DA", "Value": ["20240101"]},
    "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    "00100020": {"vr": "LO", "Value": ["P1"]},
    "00080050": {"vr": "SH"},  # known, without a value
    "00201208": {"vr": "IS", "Value": [60]},
    "00200013": {"vr": "IS", "Value": [7]},
    "00280010": {"vr": "US", "Value": [512]},
    "00100040": {"vr": "CS", "Value": ["O"]},
}


def _request(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


CASES = {
    "study keys": (
        _request(
            StudyInstanceUID="",
            PatientName="",
            StudyDate="",
            ModalitiesInStudy="",
            PatientID="",
            AccessionNumber="",
            NumberOfStudyRelatedInstances="",
            RetrieveAETitle="",
        ),
        ATTRS,
    ),
    "missing values and an unrequested unique key": (
        _request(PatientBirthDate="", StudyDescription="", PatientSex=""),
        ATTRS,
    ),
    "a name that is not ASCII": (
        _request(PatientName="", StudyInstanceUID=""),
        {**ATTRS, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]}},
    ),
    "ideographic name groups": (
        _request(PatientName=""),
        {
            **ATTRS,
            "00100010": {
                "vr": "PN",
                "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
            },
        },
    ),
    "a character set asked for": (
        _request(SpecificCharacterSet="ISO_IR 100", PatientID=""),
        ATTRS,
    ),
    "binary and counts": (_request(Rows=None, InstanceNumber=""), ATTRS),
}


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_writes_what_pydicom_writes(case: str, implicit: bool) -> None:
    request, attrs = CASES[case]
    expected = dsutils.encode(
        response(request, attrs, Level.STUDY, "study", "PACS"), implicit, True
    )
    fast = response_bytes(request, attrs, Level.STUDY, "study", "PACS", implicit=implicit)
    assert fast == expected


@pytest.mark.parametrize(
    ("keyword", "attribute"),
    [
        ("PatientWeight", {"vr": "DS", "Value": [70.5]}),
        ("OtherPatientIDsSequence", {"vr": "SQ", "Value": [{}]}),
        ("PatientName", {"vr": "PN", "Value": ["not a name object"]}),
        ("PatientComments", {"vr": "LT", "BulkDataURI": "http://x"}),
    ],
)
def test_values_it_does_not_encode_fall_back_to_pydicom(
    keyword: str, attribute: dict[str, Any]
) -> None:
    request = _request(**{keyword: None})
    tag = f"{int(request[keyword].tag):08X}"
    fast = response_bytes(
        request, {**ATTRS, tag: attribute}, Level.STUDY, "study", "PACS", implicit=False
    )
    assert fast is None
