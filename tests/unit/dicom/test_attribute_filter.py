"""A webhook's attribute filter on an instance's DICOM JSON: every condition must match one
of the attribute's values exactly; keywords are checked against pydicom's dictionary."""

from __future__ import annotations

from typing import Any

import pytest

from app.dicom.attribute_filter import check_filter_keyword, matches

CT_CHEST: dict[str, Any] = {
    "00080060": {"vr": "CS", "Value": ["CT"]},
    "00180015": {"vr": "CS", "Value": ["CHEST"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00200013": {"vr": "IS", "Value": [5]},
    "00081030": {"vr": "LO"},  # empty
}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], True),
        ([("Modality", "CT")], True),
        ([("Modality", "CT"), ("BodyPartExamined", "CHEST")], True),
        ([("Modality", "CT"), ("BodyPartExamined", "HEAD")], False),
        ([("Modality", "MR")], False),
        ([("Modality", "ct")], False),  # exact
        ([("ImageType", "AXIAL")], True),  # one of several values
        ([("PatientName", "Doe^Jane")], True),
        ([("InstanceNumber", "5")], True),
        ([("InstanceNumber", "5.0")], True),
        ([("InstanceNumber", "6")], False),
        ([("StudyDescription", "x")], False),  # empty
        ([("SeriesDescription", "x")], False),  # absent
    ],
)
def test_matches(conditions: list[tuple[str, str]], expected: bool) -> None:
    assert matches(CT_CHEST, conditions) is expected


def test_keywords_are_checked() -> None:
    assert check_filter_keyword("Modality") == "00080060"
    with pytest.raises(ValueError, match="'Modalty' is not a DICOM keyword"):
        check_filter_keyword("Modalty")
    with pytest.raises(ValueError, match="sequence or binary"):
        check_filter_keyword("ReferencedSeriesSequence")
    with pytest.raises(ValueError, match="sequence or binary"):
        check_filter_keyword("PixelData")
