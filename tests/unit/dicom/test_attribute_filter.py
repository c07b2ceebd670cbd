"""The attribute filter webhooks and forwarding share: keywords checked against pydicom's
dictionary with a message naming what is wrong; every condition must match one of the
attribute's values exactly (person names by their alphabetic form, numbers by value); an
empty filter matches even an entry with nothing to match (a deleted study)."""

from __future__ import annotations

from typing import Any

import pytest

from app.dicom.attribute_filter import check_filter_keyword, matches, matches_any, parse_filter

CT_CHEST: dict[str, Any] = {
    "00080060": {"vr": "CS", "Value": ["CT"]},
    "00180015": {"vr": "CS", "Value": ["CHEST"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00200013": {"vr": "IS", "Value": [5]},
    "00200011": {"vr": "IS", "Value": [2]},
    "00081030": {"vr": "LO"},  # empty
}
MR: dict[str, Any] = {"00080060": {"vr": "CS", "Value": ["MR"]}}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], True),
        ([("Modality", "CT")], True),
        ([("Modality", "CT"), ("BodyPartExamined", "CHEST")], True),
        ([("Modality", "CT"), ("BodyPartExamined", "HEAD")], False),
        ([("Modality", "MR")], False),
        ([("Modality", "ct")], False),  # exact
        ([("Modality", "C")], False),  # not a prefix
        ([("ImageType", "AXIAL")], True),  # one of several values
        ([("ImageType", "PRIMARY")], True),
        ([("PatientName", "Doe^Jane")], True),
        ([("PatientName", "Doe")], False),
        ([("InstanceNumber", "5")], True),
        ([("InstanceNumber", "5.0")], True),
        ([("InstanceNumber", "6")], False),
        ([("SeriesNumber", "2"), ("Modality", "CT"), ("PatientName", "Doe^Jane")], True),
        ([("StudyDescription", "x")], False),  # empty
        ([("SeriesDescription", "x")], False),  # absent
        ([("ModalitiesInStudy", "CT")], False),  # refused by parse_filter; stored before
        ([("NoSuchKeyword", "CT")], False),
    ],
)
def test_matches(conditions: list[tuple[str, str]], expected: bool) -> None:
    assert matches(CT_CHEST, conditions) is expected


@pytest.mark.parametrize(
    ("datasets", "conditions", "expected"),
    [
        ([MR, CT_CHEST], (("Modality", "CT"),), True),  # one instance of a study is enough
        ([MR], (("Modality", "CT"),), False),
        ([], (("Modality", "CT"),), False),  # a deleted study: nothing to match
        ([], (), True),  # ... except with no filter
    ],
)
def test_matches_any(datasets: list[dict[str, Any]], conditions: Any, expected: bool) -> None:
    assert matches_any(datasets, conditions) is expected


def test_a_filter_is_parsed_to_keyword_and_text() -> None:
    given = {"Modality": "CT", "SeriesNumber": 2, "SliceThickness": 2.5}
    assert parse_filter(given) == (
        ("Modality", "CT"),
        ("SeriesNumber", "2"),
        ("SliceThickness", "2.5"),
    )
    assert parse_filter({}) == ()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["Modality"], "expected an object of DICOM keyword: value"),
        ({"Modalty": "CT"}, "'Modalty' is not a DICOM keyword"),
        (
            {"ReferencedSeriesSequence": "x"},
            "ReferencedSeriesSequence (SQ) is a sequence or binary",
        ),
        ({"PixelData": "x"}, "PixelData (OB or OW) is a sequence or binary"),
        (
            {"ModalitiesInStudy": "CT"},
            "ModalitiesInStudy is computed by the archive, not stored in an instance; use Modality",
        ),
        ({"NumberOfStudyRelatedInstances": 3}, "counts cannot be matched"),
        ({"Modality": ["CT"]}, "Modality: expected a text or number value"),
        ({"Modality": True}, "Modality: expected a text or number value"),
        ({"Modality": ""}, "Modality: expected a non-empty value"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(given: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_filter(given)
    assert message in str(raised.value)


def test_keywords_are_checked() -> None:
    assert check_filter_keyword("Modality") == "00080060"
    with pytest.raises(ValueError, match="'Modalty' is not a DICOM keyword"):
        check_filter_keyword("Modalty")
    with pytest.raises(ValueError, match="sequence or binary"):
        check_filter_keyword("PixelData")
