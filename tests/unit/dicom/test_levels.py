"""The level each attribute belongs to."""

from __future__ import annotations

import pytest

from app.dicom.levels import LEVELS, UNIQUE_KEYS, Level, level_of
from app.dicom.tags import tag


@pytest.mark.parametrize(
    ("keyword", "level"),
    [
        ("PatientName", Level.PATIENT),
        ("AccessionNumber", Level.STUDY),
        ("ModalitiesInStudy", Level.STUDY),
        ("BodyPartExamined", Level.SERIES),
        ("NumberOfSeriesRelatedInstances", Level.SERIES),
        ("InstanceNumber", Level.INSTANCE),
        ("WindowCenter", Level.INSTANCE),
    ],
)
def test_level_of(keyword: str, level: Level) -> None:
    assert level_of(tag(keyword)) is level


def test_unique_keys_follow_the_level_order() -> None:
    assert list(UNIQUE_KEYS) == list(LEVELS)
    assert [level_of(UNIQUE_KEYS[level]) for level in LEVELS] == list(LEVELS)
