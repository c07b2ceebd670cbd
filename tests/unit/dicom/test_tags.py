"""Attributes named by keyword."""

from __future__ import annotations

import pytest

from app.dicom.tags import json_key, tag, tags


def test_tag_refuses_a_misspelt_keyword() -> None:
    with pytest.raises(KeyError, match="PatientNmae"):
        tag("PatientNmae")


def test_tags_by_keyword_are_pydicoms() -> None:
    assert tags("PatientID", "StudyInstanceUID") == {0x00100020, 0x0020000D}


def test_json_key_is_eight_upper_case_hex_digits() -> None:
    assert json_key("RetrieveURL") == "00081190"
    assert json_key("ErrorComment") == "00000902"
