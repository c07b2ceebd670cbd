"""Which attributes a search returns (PS3.18 10.6.3) and how a hit becomes DICOM JSON."""

from __future__ import annotations

import pytest

from app.dicom.levels import (
    DEFAULT_RETURN,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    Level,
)
from app.dicom.tags import tag
from app.query.model import Query
from app.services.ports import SearchHit
from app.services.search import return_tags, shape

STUDY_DATE = tag("StudyDate")
MODALITY = tag("Modality")
SOP_INSTANCE_UID = tag("SOPInstanceUID")
BODY_PART = tag("BodyPartExamined")


@pytest.mark.parametrize(
    ("level", "fixed", "has", "lacks"),
    [
        # A study search returns the study's defaults, not those of series or instances.
        (Level.STUDY, (), {STUDY_DATE}, {MODALITY, SOP_INSTANCE_UID}),
        # A series search across studies returns the study's defaults too ...
        (Level.SERIES, (), {STUDY_DATE, MODALITY}, {SOP_INSTANCE_UID}),
        # ... but not when the URL names the study (they would repeat the path).
        (Level.SERIES, (Level.STUDY,), {MODALITY}, {STUDY_DATE}),
        (Level.INSTANCE, (), {STUDY_DATE, MODALITY, SOP_INSTANCE_UID}, set()),
        (Level.INSTANCE, (Level.STUDY, Level.SERIES), {SOP_INSTANCE_UID}, {STUDY_DATE, MODALITY}),
        # The patient level has no levels above it to add.
        (Level.PATIENT, (), {tag("PatientID")}, {STUDY_DATE}),
    ],
)
def test_return_tags_by_level_and_fixed_levels(
    level: Level, fixed: tuple[Level, ...], has: set[int], lacks: set[int]
) -> None:
    tags = return_tags(Query(level=level), fixed)
    assert DEFAULT_RETURN[level] <= tags
    assert has <= tags
    assert not (lacks & tags)


def test_includefield_adds_to_the_defaults() -> None:
    tags = return_tags(Query(level=Level.STUDY, include=frozenset({BODY_PART})))
    assert BODY_PART in tags and DEFAULT_RETURN[Level.STUDY] <= tags


def _hit() -> SearchHit:
    return SearchHit(
        study={f"{STUDY_DATE:08X}": {"vr": "DA", "Value": ["20240101"]}},
        series={
            f"{MODALITY:08X}": {"vr": "CS", "Value": ["CT"]},
            f"{BODY_PART:08X}": {"vr": "CS", "Value": ["CHEST"]},
        },
        instance={"7FE00010": {"vr": "OW", "BulkDataURI": "pixel"}},
        computed={MODALITIES_IN_STUDY: ["CT", "SR"], NUMBER_OF_STUDY_RELATED_INSTANCES: 12},
    )


def test_shape_keeps_only_the_wanted_keys_and_encodes_computed_values() -> None:
    query = Query(level=Level.STUDY)
    keys = frozenset(f"{t:08X}" for t in return_tags(query))
    shaped = shape(_hit(), query, keys)
    assert shaped[f"{STUDY_DATE:08X}"] == {"vr": "DA", "Value": ["20240101"]}
    assert shaped[f"{MODALITIES_IN_STUDY:08X}"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert shaped[f"{NUMBER_OF_STUDY_RELATED_INSTANCES:08X}"] == {"vr": "IS", "Value": [12]}
    assert shaped[f"{INSTANCE_AVAILABILITY:08X}"] == {"vr": "CS", "Value": ["ONLINE"]}
    # Series attributes are not study defaults; bulk data is never returned.
    assert f"{BODY_PART:08X}" not in shaped and "7FE00010" not in shaped


def test_shape_without_modalities_gives_an_empty_attribute() -> None:
    hit = SearchHit(computed={MODALITIES_IN_STUDY: []})
    shaped = shape(hit, Query(level=Level.STUDY), frozenset({f"{MODALITIES_IN_STUDY:08X}"}))
    assert shaped == {f"{MODALITIES_IN_STUDY:08X}": {"vr": "CS"}}


def test_shape_includefield_all_returns_everything_but_bulk_data() -> None:
    shaped = shape(_hit(), Query(level=Level.STUDY, include_all=True), frozenset())
    assert f"{BODY_PART:08X}" in shaped and f"{MODALITY:08X}" in shaped
    assert "7FE00010" not in shaped
