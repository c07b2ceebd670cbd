"""C-FIND / C-MOVE identifiers -> Query: the same conditions as the same keys in QIDO-RS."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.dicom.levels import Level
from app.query.identifier import (
    IdentifierError,
    Model,
    parse_identifier,
    parse_retrieve_identifier,
)
from app.query.model import Condition, Match, Query
from app.query.qido import QueryError, parse_qido

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_DATE = 0x00080020
STUDY_TIME = 0x00080030
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
MODALITY = 0x00080060
MODALITIES = 0x00080061
SERIES_NUMBER = 0x00200011
REQUEST_ATTRIBUTES = 0x00400275
SCHEDULED_STEP_ID = 0x00400009


def identifier(level: str | None = "STUDY", **keys: Any) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values tested here
        if level is not None:
            ds.QueryRetrieveLevel = level
        for name, value in keys.items():
            setattr(ds, name, value)
    return ds


def parse(ds: Dataset, model: Model = "study") -> Query:
    return parse_identifier(ds, model)


# -- the same conditions as QIDO-RS ---------------------------------------------------


@pytest.mark.parametrize(
    ("level", "keys", "qido"),
    [
        ("STUDY", {"PatientName": "TEST*"}, [("PatientName", "TEST*")]),
        ("STUDY", {"PatientName": "Doe^John"}, [("PatientName", "Doe^John")]),
        ("STUDY", {"PatientID": "ID?"}, [("PatientID", "ID?")]),
        ("STUDY", {"StudyDate": "20240101-"}, [("StudyDate", "20240101-")]),
        ("STUDY", {"StudyDate": "-20241231"}, [("StudyDate", "-20241231")]),
        ("STUDY", {"StudyDate": "20240101-20241231"}, [("StudyDate", "20240101-20241231")]),
        ("STUDY", {"StudyDate": "20240102"}, [("StudyDate", "20240102")]),
        ("STUDY", {"StudyTime": "1015-1100"}, [("StudyTime", "1015-1100")]),
        ("STUDY", {"StudyInstanceUID": "1.2.3"}, [("StudyInstanceUID", "1.2.3")]),
        ("STUDY", {"ModalitiesInStudy": "CT"}, [("ModalitiesInStudy", "CT")]),
        ("STUDY", {"ModalitiesInStudy": ["CT", "MR"]}, [("ModalitiesInStudy", "CT\\MR")]),
        ("SERIES", {"SeriesNumber": "3"}, [("SeriesNumber", "3")]),
        ("SERIES", {"Modality": "CT"}, [("Modality", "CT")]),
        ("IMAGE", {"SOPInstanceUID": ["1.2.3", "1.2.4"]}, [("SOPInstanceUID", "1.2.3,1.2.4")]),
        ("IMAGE", {"InstanceNumber": "7"}, [("InstanceNumber", "7")]),
    ],
)
def test_keys_match_like_qido(
    level: str, keys: dict[str, Any], qido: list[tuple[str, str]]
) -> None:
    query = parse(identifier(level, **keys))
    expected = parse_qido(qido, Level(level))
    assert query.conditions == expected.conditions
    assert query.level is Level(level)


def test_universal_keys_are_only_returned() -> None:
    query = parse(
        identifier(
            "STUDY",
            PatientName="",
            StudyInstanceUID="",
            StudyDate="",
            AccessionNumber="*",
            NumberOfStudyRelatedInstances="",
            RetrieveAETitle="",
        )
    )
    assert query.conditions == ()
    assert query.include == {
        PATIENT_NAME,
        STUDY_UID,
        STUDY_DATE,
        0x00080050,
        0x00201208,
        0x00080054,
    }


def test_level_and_character_set_are_not_keys() -> None:
    ds = identifier("STUDY", PatientName="TEST*")
    ds.SpecificCharacterSet = "ISO_IR 100"
    query = parse(ds)
    assert query.include == {PATIENT_NAME}


def test_uid_list_from_backslash_values() -> None:
    query = parse(identifier("STUDY", StudyInstanceUID="1.2.3\\1.2.4\\1.2.5"))
    assert query.conditions == (
        Condition((STUDY_UID,), "UI", Match.UID_LIST, ("1.2.3", "1.2.4", "1.2.5")),
    )


def test_several_single_values_match_any() -> None:
    query = parse(identifier("SERIES", Modality=["CT", "MR"]))
    assert query.conditions == (Condition((MODALITY,), "CS", Match.SINGLE, ("CT", "MR")),)


def test_several_values_with_a_wildcard_are_refused() -> None:
    with pytest.raises(QueryError, match="several values"):
        parse(identifier("STUDY", PatientID=["A*", "B"]))


def test_person_name_matches_the_alphabetic_group() -> None:
    query = parse(identifier("STUDY", PatientName="Yamada^Tarou=山田^太郎"))
    assert query.conditions == (Condition((PATIENT_NAME,), "PN", Match.SINGLE, ("Yamada^Tarou",)),)
    with pytest.raises(QueryError, match="alphabetic group"):
        parse(identifier("STUDY", PatientName="=山田*"))


def test_sequence_item_keys_match_inside_the_sequence() -> None:
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS1"
    item.RequestedProcedureID = ""
    query = parse(identifier("SERIES", RequestAttributesSequence=Sequence([item])))
    assert query.conditions == (
        Condition((REQUEST_ATTRIBUTES, SCHEDULED_STEP_ID), "SH", Match.SINGLE, ("SPS1",)),
    )
    assert query.include == {REQUEST_ATTRIBUTES}
    expected = parse_qido(
        [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1")], Level.SERIES
    )
    assert query.conditions == expected.conditions


def test_empty_sequence_is_universal() -> None:
    query = parse(identifier("SERIES", RequestAttributesSequence=Sequence([])))
    assert query.conditions == ()
    assert query.include == {REQUEST_ATTRIBUTES}


def test_sequence_with_two_items_is_refused() -> None:
    with pytest.raises(QueryError, match="more than one item"):
        parse(identifier("SERIES", RequestAttributesSequence=Sequence([Dataset(), Dataset()])))


def test_unknown_keys_may_be_asked_for_but_not_matched() -> None:
    ds = identifier("STUDY")
    ds.add_new(0x00091010, "LO", "")  # private, universal: returned empty
    assert parse(ds).include == {0x00091010}
    ds.add_new(0x00091011, "LO", "value")
    with pytest.raises(QueryError, match="unknown attribute"):
        parse(ds)


def test_patient_level_of_the_patient_root_model() -> None:
    query = parse(identifier("PATIENT", PatientID="P1", PatientName=""), "patient")
    assert query.level is Level.PATIENT
    assert query.conditions == (Condition((PATIENT_ID,), "LO", Match.SINGLE, ("P1",)),)


@pytest.mark.parametrize(
    ("ds", "model", "message"),
    [
        (identifier(None, PatientName="X"), "study", "no QueryRetrieveLevel"),
        (identifier("PATIENT"), "study", "not a level of the Study Root"),
        (identifier("FRAME"), "patient", "not a level of the Patient Root"),
        (identifier("study"), "study", "not a level"),
    ],
)
def test_wrong_levels(ds: Dataset, model: Model, message: str) -> None:
    with pytest.raises(IdentifierError, match=message):
        parse(ds, model)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"Modality": "CT"}, "belongs to the series level"),
        ({"StudyDate": "2024"}, "invalid date"),
        ({"StudyInstanceUID": "1.2.x"}, "invalid UID"),
        ({"StudyInstanceUID": "1.02.3"}, "invalid UID '1.02.3'"),
        ({"StudyInstanceUID": ["1.2", "1.02"]}, "invalid UID '1.02'"),
        ({"NumberOfStudyRelatedInstances": "3"}, "only universal matching"),
    ],
)
def test_invalid_keys_name_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse(identifier("STUDY", **keys))


def test_errors_name_the_attribute_with_its_tag() -> None:
    with pytest.raises(QueryError, match=r"StudyDate \(0008,0020\)"):
        parse(identifier("STUDY", StudyDate="yesterday"))


def test_shared_attributes_are_returned_not_matched() -> None:
    query = parse(identifier("STUDY", TimezoneOffsetFromUTC="+0100"))
    assert query.conditions == ()
    assert query.include == {0x00080201}


# -- retrieve identifiers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "keys", "model"),
    [
        ("PATIENT", {"PatientID": "P1"}, "patient"),
        ("STUDY", {"StudyInstanceUID": "1.2.3"}, "study"),
        ("STUDY", {"StudyInstanceUID": ["1.2.3", "1.2.4"]}, "study"),
        ("SERIES", {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"}, "study"),
        ("SERIES", {"SeriesInstanceUID": "1.2.3.4"}, "study"),
        ("IMAGE", {"SOPInstanceUID": "1.2.3.4.5"}, "patient"),
    ],
)
def test_retrieve_identifiers(level: str, keys: dict[str, Any], model: Model) -> None:
    query = parse_retrieve_identifier(identifier(level, **keys), model)
    assert query.level is Level(level)
    assert query.conditions


@pytest.mark.parametrize(
    ("level", "keys"),
    [
        ("STUDY", {}),
        ("STUDY", {"StudyInstanceUID": ""}),
        ("STUDY", {"PatientID": "P1"}),
        ("SERIES", {"StudyInstanceUID": "1.2.3"}),
        ("PATIENT", {"PatientID": "P*"}),
    ],
)
def test_retrieve_needs_the_unique_key_of_its_level(level: str, keys: dict[str, Any]) -> None:
    with pytest.raises(IdentifierError, match="retrieve needs"):
        parse_retrieve_identifier(identifier(level, **keys), "patient")


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        # pydicom reads this IS as 1e+23 (refused as not an integer); QIDO as out of range
        ({"SeriesNumber": "99999999999999999999999"}, "(IS)"),
        ({"SeriesNumber": "2147483648"}, "(IS) must be from -2147483648 to 2147483647"),
        ({"PatientName": "DOE\x00"}, "has a NUL character"),
        ({"StudyDescription": "x\x00y"}, "has a NUL character"),
    ],
)
def test_c_find_refuses_what_qido_refuses(keys: dict[str, str], fragment: str) -> None:
    """Issue 10: the values QIDO-RS refuses (an IS beyond 32 bits, a NUL) C-FIND refuses
    alike (status A900), through the same matching code."""
    level = "SERIES" if "SeriesNumber" in keys else "STUDY"
    with pytest.raises(QueryError) as from_c_find:
        parse(identifier(level, **keys))
    with pytest.raises(QueryError) as from_qido:
        parse_qido(list(keys.items()), Level[level])
    name = next(iter(keys))
    for caught in (from_c_find, from_qido):
        assert fragment in str(caught.value) and name in str(caught.value)
