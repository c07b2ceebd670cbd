"""The search documents (app/search/documents.py): fields named by tag and VR, values by VR,
private tags and sequences kept, bulk data and empty attributes left out, and the split of
an instance's attributes into the study, series and instance documents."""

from __future__ import annotations

from typing import Any

import pytest

from app.dicom.levels import Level
from app.search.documents import MAX_DEPTH, attributes, document_id, documents

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("UI", {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, {"0020000D_UI": ["1.2.3"]}),
    ("CS multi", {"00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}},
     {"00080008_CS": ["ORIGINAL", "PRIMARY"]}),
    ("DS", {"00180050": {"vr": "DS", "Value": [2.5]}}, {"00180050_DS": [2.5]}),
    ("US", {"00280010": {"vr": "US", "Value": [512]}}, {"00280010_US": [512]}),
    ("DA", {"00080020": {"vr": "DA", "Value": ["20240131"]}}, {"00080020_DA": ["20240131"]}),
    ("TM padded", {"00080030": {"vr": "TM", "Value": ["1530", "101010.5"]}},
     {"00080030_TM": ["153000.000000", "101010.500000"]}),
    ("PN groups", {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane",
                                                       "Ideographic": "山田^太郎"}]}},
     {"00100010_PN": [{"Alphabetic": "Doe^Jane", "Ideographic": "山田^太郎"}]}),
    ("private tag", {"00091001": {"vr": "LO", "Value": ["vendor"]}},
     {"00091001_LO": ["vendor"]}),
    ("lower-case tag", {"0009100a": {"vr": "LO", "Value": ["x"]}}, {"0009100A_LO": ["x"]}),
    ("empty", {"00100020": {"vr": "LO"}}, {}),
    ("bulk data", {"7FE00010": {"vr": "OW", "BulkDataURI": "http://x/1"}}, {}),
    ("inline binary", {"00091002": {"vr": "UN", "InlineBinary": "AAEC"}}, {}),
    ("sequence", {"00400275": {"vr": "SQ", "Value": [
        {"00401001": {"vr": "SH", "Value": ["RP1"]}},
        {"00321060": {"vr": "LO", "Value": ["Chest"]}, "00091010": {"vr": "LO", "Value": ["p"]}},
        {},
    ]}}, {"00400275_SQ": [{"00401001_SH": ["RP1"]},
                          {"00321060_LO": ["Chest"], "00091010_LO": ["p"]}]}),
    ("empty sequence", {"00081140": {"vr": "SQ", "Value": []}}, {}),
    ("same tag two VRs", {"00091001": {"vr": "UN", "Value": ["x"]}}, {"00091001_UN": ["x"]}),
]  # fmt: skip


@pytest.mark.parametrize(("dataset", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_attributes_by_vr(dataset: dict[str, Any], expected: dict[str, Any]) -> None:
    assert attributes(dataset) == expected


def test_sequences_deeper_than_the_limit_are_cut() -> None:
    item: dict[str, Any] = {"00100020": {"vr": "LO", "Value": ["leaf"]}}
    for _ in range(MAX_DEPTH + 2):
        item = {"0040A730": {"vr": "SQ", "Value": [item]}, "0040A010": {"vr": "CS", "Value": ["C"]}}
    fields = attributes(item)
    depth = 0
    while "0040A730_SQ" in fields:
        fields = fields["0040A730_SQ"][0]
        depth += 1
    assert depth == MAX_DEPTH - 1
    assert "00100020_LO" not in fields


def test_documents_split_by_level() -> None:
    dataset = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00180050": {"vr": "DS", "Value": [2.5]},
    }
    docs = documents("t1", dataset, 7)
    study, series, instance = docs[Level.STUDY], docs[Level.SERIES], docs[Level.INSTANCE]
    assert study == {
        "tenant": "t1", "sequence": 7, "level": "study", "study": "1.2",
        "00100010_PN": [{"Alphabetic": "Doe^Jane"}], "0020000D_UI": ["1.2"],
        "00080020_DA": ["20240131"],
    }  # fmt: skip
    assert series["series"] == "1.2.3" and series["00080060_CS"] == ["CT"]
    assert "00100010_PN" in series and "00180050_DS" not in series
    assert instance["instance"] == "1.2.3.4" and instance["00180050_DS"] == [2.5]
    assert instance["00100010_PN"] == [{"Alphabetic": "Doe^Jane"}]


def test_document_id_names_tenant_and_uid() -> None:
    assert document_id("a/b", "1.2.3") == "a/b/1.2.3"
