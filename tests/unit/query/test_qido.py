from __future__ import annotations

import pytest

from app.dicom.levels import Level
from app.query.model import Condition, Match, Query
from app.query.qido import QueryError, parse_qido

STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_DATE = 0x00080020
MODALITIES = 0x00080061

Params = list[tuple[str, str]]


def parse(params: Params, level: Level = Level.STUDY, **kwargs: object) -> Query:
    return parse_qido(params, level, **kwargs)  # type: ignore[arg-type]


def only(query: Query) -> Condition:
    assert len(query.conditions) == 1, query.conditions
    return query.conditions[0]


# -- what OHIF v3 sends ----------------------------------------------------------------

OHIF_PAGE: Params = [
    ("limit", "101"),
    ("offset", "0"),
    ("fuzzymatching", "false"),
    ("includefield", "00081030,00080060"),
]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], None),
        (
            [("PatientName", "*DOE*")],
            Condition((PATIENT_NAME,), "PN", Match.WILDCARD, ("*DOE*",)),
        ),
        (
            [("00100020", "PAT-001")],
            Condition((PATIENT_ID,), "LO", Match.SINGLE, ("PAT-001",)),
        ),
        (
            [("StudyInstanceUID", "1.2.840.113619.2.55.3")],
            Condition((STUDY_UID,), "UI", Match.SINGLE, ("1.2.840.113619.2.55.3",)),
        ),
        (
            [("StudyDate", "20200101-20201231")],
            Condition((STUDY_DATE,), "DA", Match.RANGE, ("20200101", "20201231")),
        ),
        (
            [("ModalitiesInStudy", "CT")],
            Condition((MODALITIES,), "CS", Match.SINGLE, ("CT",)),
        ),
        (
            [("ModalitiesInStudy", "CT,MR")],
            Condition((MODALITIES,), "CS", Match.SINGLE, ("CT", "MR")),
        ),
    ],
    ids=["page", "name", "patient-id", "study-uid", "date-range", "modality", "modalities"],
)
def test_ohif_study_requests(extra: Params, expected: Condition | None) -> None:
    query = parse(OHIF_PAGE + extra)
    assert (query.limit, query.offset, query.fuzzy, query.include_all) == (101, 0, False, False)
    assert {0x00081030, 0x00080060} <= query.include
    assert query.conditions == (() if expected is None else (expected,))
    if expected is not None:
        assert expected.path[0] in query.include


def test_ohif_series_and_instances_in_a_study() -> None:
    series = parse(
        [("includefield", "00080021,00080031")], Level.SERIES, scope={STUDY_UID: "1.2.3"}
    )
    assert series.conditions == (Condition((STUDY_UID,), "UI", Match.SINGLE, ("1.2.3",)),)
    scope = {STUDY_UID: "1.2.3", SERIES_UID: "1.2.3.4"}
    instances = parse([], Level.INSTANCE, scope=scope)
    assert {c.path for c in instances.conditions} == {(STUDY_UID,), (SERIES_UID,)}


# -- one row per kind of matching ------------------------------------------------------

SPS = (0x00400275, 0x00400009)


MatchCase = tuple[str, str, Level, tuple[int, ...], str, Match, tuple[str, ...]]

MATCH_CASES: list[MatchCase] = [
    ("PatientID", "ID1", Level.STUDY, (PATIENT_ID,), "LO", Match.SINGLE, ("ID1",)),
    (
        "PatientName",
        "Doe^John",
        Level.STUDY,
        (PATIENT_NAME,),
        "PN",
        Match.SINGLE,
        ("Doe^John",),
    ),
    ("PatientName", "Do?^J*", Level.STUDY, (PATIENT_NAME,), "PN", Match.WILDCARD, ("Do?^J*",)),
    ("00100010", "Doe", Level.STUDY, (PATIENT_NAME,), "PN", Match.SINGLE, ("Doe",)),
    ("0020000d", "1.2.3", Level.STUDY, (STUDY_UID,), "UI", Match.SINGLE, ("1.2.3",)),
    (
        "StudyInstanceUID",
        "1.2.3,1.2.4",
        Level.STUDY,
        (STUDY_UID,),
        "UI",
        Match.UID_LIST,
        ("1.2.3", "1.2.4"),
    ),
    (
        "StudyInstanceUID",
        "1.2.3\\1.2.4",
        Level.STUDY,
        (STUDY_UID,),
        "UI",
        Match.UID_LIST,
        ("1.2.3", "1.2.4"),
    ),
    ("StudyDate", "20200101", Level.STUDY, (STUDY_DATE,), "DA", Match.SINGLE, ("20200101",)),
    ("StudyDate", "2020.01.01", Level.STUDY, (STUDY_DATE,), "DA", Match.SINGLE, ("20200101",)),
    ("StudyDate", "20200101-", Level.STUDY, (STUDY_DATE,), "DA", Match.RANGE, ("20200101", "")),
    ("StudyDate", "-20201231", Level.STUDY, (STUDY_DATE,), "DA", Match.RANGE, ("", "20201231")),
    (
        "StudyTime",
        "1030",
        Level.STUDY,
        (0x00080030,),
        "TM",
        Match.RANGE,
        ("103000.000000", "103059.999999"),
    ),
    (
        "StudyTime",
        "10-1230",
        Level.STUDY,
        (0x00080030,),
        "TM",
        Match.RANGE,
        ("100000.000000", "123059.999999"),
    ),
    (
        "StudyTime",
        "103000.5-",
        Level.STUDY,
        (0x00080030,),
        "TM",
        Match.RANGE,
        ("103000.500000", ""),
    ),
    (
        "AcquisitionDateTime",
        "2020-2021",
        Level.INSTANCE,
        (0x0008002A,),
        "DT",
        Match.RANGE,
        ("20200101000000.000000", "20211231235959.999999"),
    ),
    (
        "AcquisitionDateTime",
        "20200101-0500",
        Level.INSTANCE,
        (0x0008002A,),
        "DT",
        Match.RANGE,
        ("20200101000000.000000", "20200101235959.999999"),
    ),
    (
        "AcquisitionDateTime",
        "202001011030-",
        Level.INSTANCE,
        (0x0008002A,),
        "DT",
        Match.RANGE,
        ("20200101103000.000000", ""),
    ),
    ("SeriesNumber", " 007 ", Level.SERIES, (0x00200011,), "IS", Match.SINGLE, ("7",)),
    ("SliceThickness", "2.50", Level.INSTANCE, (0x00180050,), "DS", Match.SINGLE, ("2.5",)),
    ("Rows", "512", Level.INSTANCE, (0x00280010,), "US", Match.SINGLE, ("512",)),
    ("Modality", "C?", Level.SERIES, (0x00080060,), "CS", Match.WILDCARD, ("C?",)),
    (
        "StudyDescription",
        "Chest, PA",
        Level.STUDY,
        (0x00081030,),
        "LO",
        Match.SINGLE,
        ("Chest, PA",),
    ),
    (
        "RequestAttributesSequence.ScheduledProcedureStepID",
        "S1",
        Level.SERIES,
        SPS,
        "SH",
        Match.SINGLE,
        ("S1",),
    ),
    ("00400275.00400009", "S*", Level.SERIES, SPS, "SH", Match.WILDCARD, ("S*",)),
    (
        "ModalitiesInStudy",
        "CT\\MR",
        Level.SERIES,
        (MODALITIES,),
        "CS",
        Match.SINGLE,
        ("CT", "MR"),
    ),
]


@pytest.mark.parametrize("case", MATCH_CASES, ids=lambda case: f"{case[0]}={case[1]}")
def test_match_kinds(case: MatchCase) -> None:
    key, value, level, path, vr, match, values = case
    query = parse([(key, value)], level)
    assert only(query) == Condition(path, vr, match, values)
    assert path[0] in query.include


@pytest.mark.parametrize(
    ("fuzzy", "value", "match"),
    [
        ("true", "doe", Match.FUZZY),
        ("TRUE", "doe", Match.FUZZY),
        ("false", "doe", Match.SINGLE),
        ("true", "doe*", Match.WILDCARD),  # an explicit pattern wins over fuzzy
    ],
)
def test_fuzzy_matching_applies_to_person_names(fuzzy: str, value: str, match: Match) -> None:
    query = parse([("ReferringPhysicianName", value), ("fuzzymatching", fuzzy)])
    assert only(query).match is match
    assert query.fuzzy is (fuzzy.lower() == "true")
    # Only PN attributes are fuzzy.
    assert only(parse([("StudyID", "doe"), ("fuzzymatching", fuzzy)])).match is not Match.FUZZY


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PatientName", ""),
        ("PatientName", "  "),
        ("PatientName", "*"),
        ("StudyDescription", "**"),
        ("StudyDate", "*"),
        ("StudyDate", "-"),
        ("StudyTime", "-"),
        ("RequestAttributesSequence", ""),
        ("NumberOfStudyRelatedInstances", ""),
        ("NumberOfPatientRelatedStudies", ""),
        ("ModalitiesInStudy", ","),
    ],
)
def test_universal_matching_only_returns_the_attribute(key: str, value: str) -> None:
    query = parse([(key, value)])
    assert query.conditions == ()
    assert len(query.include) == 1


def test_patient_and_higher_level_keys_are_allowed_at_lower_levels() -> None:
    params = [("PatientID", "1"), ("StudyDate", "20200101"), ("Modality", "CT")]
    assert len(parse(params, Level.INSTANCE).conditions) == 3
    assert len(parse([("PatientSex", "F")], Level.PATIENT).conditions) == 1


# -- reserved parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "limit", "offset"),
    [
        ([], 100, 0),
        ([("limit", "5")], 5, 0),
        ([("limit", "0")], 100, 0),  # zero means "not given"
        ([("limit", "5000")], 1000, 0),  # clamped, not an error
        ([("offset", "20")], 100, 20),
        ([("LIMIT", " 7 "), ("Offset", "3")], 7, 3),
        ([("offset", str(2**63 - 1))], 100, 2**63 - 1),  # the backends' largest OFFSET
        ([("limit", str(2**63 - 1))], 1000, 0),
    ],
)
def test_limit_and_offset(params: Params, limit: int, offset: int) -> None:
    query = parse(params)
    assert (query.limit, query.offset) == (limit, offset)


def test_default_and_max_limit_come_from_the_caller() -> None:
    assert parse([], default_limit=25).limit == 25
    assert parse([("limit", "60")], max_limit=50).limit == 50


def test_includefield() -> None:
    query = parse(
        [
            ("includefield", "StudyDescription, 00080090"),
            ("includefield", "RequestAttributesSequence.ScheduledProcedureStepID"),
            ("includefield", ""),
        ]
    )
    assert query.include == {0x00081030, 0x00080090, 0x00400275}
    assert not query.include_all
    assert parse([("includefield", "all")]).include_all
    assert parse([("includefield", "00081030,ALL")]).include_all


def test_unsupported_standard_parameters_are_ignored_and_reported() -> None:
    query = parse(
        [
            ("emptyvaluematching", "true"),
            ("multiplevaluematching", "false"),
            ("accept", "application/dicom+json"),
            ("charset", "utf-8"),
            ("TimezoneOffsetFromUTC", "+0100"),
            ("SpecificCharacterSet", ""),
        ]
    )
    assert query.conditions == ()
    assert query.ignored == ("emptyvaluematching", "TimezoneOffsetFromUTC")


def test_scope_adds_conditions_and_intersects_with_query_keys() -> None:
    scope = {STUDY_UID: "1.2.3"}
    scoped = Condition((STUDY_UID,), "UI", Match.SINGLE, ("1.2.3",))
    assert parse([], Level.SERIES, scope=scope).conditions == (scoped,)
    same = parse([("StudyInstanceUID", "1.2.3")], Level.SERIES, scope=scope)
    assert same.conditions == (scoped,)
    other = parse([("StudyInstanceUID", "1.2.4")], Level.SERIES, scope=scope)
    assert set(other.conditions) == {
        scoped,
        Condition((STUDY_UID,), "UI", Match.SINGLE, ("1.2.4",)),
    }


# -- errors name what is wrong ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "level", "fragment"),
    [
        ([("PatientNam", "x")], Level.STUDY, "'PatientNam'"),
        ([("0010001G", "x")], Level.STUDY, "'0010001G'"),
        ([("00091001", "x")], Level.STUDY, "'00091001'"),
        ([("includefield", "Nope")], Level.STUDY, "'Nope' in includefield"),
        (
            [("PatientName.PatientID", "x")],
            Level.STUDY,
            "PatientName in query key 'PatientName.PatientID' is not",
        ),
        (
            [("SOPInstanceUID", "1.2")],
            Level.STUDY,
            "'SOPInstanceUID' belongs to the instance level",
        ),
        ([("Modality", "CT")], Level.STUDY, "'Modality' belongs to the series level"),
        ([("StudyDate", "20200101")], Level.PATIENT, "'StudyDate' belongs to the study level"),
        ([("PatientID", "1"), ("00100020", "2")], Level.STUDY, "'00100020' is repeated"),
        ([("limit", "1"), ("limit", "2")], Level.STUDY, "'limit' is repeated"),
        ([("limit", "-1")], Level.STUDY, "limit must be a non-negative integer, not '-1'"),
        ([("offset", "x")], Level.STUDY, "offset must be a non-negative integer, not 'x'"),
        ([("fuzzymatching", "yes")], Level.STUDY, "fuzzymatching must be true or false"),
        ([("emptyvaluematching", "1")], Level.STUDY, "emptyvaluematching must be true or false"),
        ([("StudyInstanceUID", "1.2.x")], Level.STUDY, "'StudyInstanceUID' has an invalid UID"),
        ([("StudyInstanceUID", "1.2,")], Level.STUDY, "invalid UID ''"),
        ([("StudyInstanceUID", "1.2.*")], Level.STUDY, "invalid UID '1.2.*'"),
        ([("StudyInstanceUID", "1." * 40 + "1")], Level.STUDY, "invalid UID"),
        # issue 11: one UID validator, so a leading zero is refused here as in a URL path
        ([("StudyInstanceUID", "1.02.3")], Level.STUDY, "'StudyInstanceUID' has an invalid UID"),
        ([("StudyInstanceUID", "1.2\\1.02")], Level.STUDY, "invalid UID '1.02'"),
        ([("StudyInstanceUID", "1.2,01.3")], Level.STUDY, "invalid UID '01.3'"),
        ([("StudyInstanceUID", "1..2")], Level.STUDY, "invalid UID '1..2'"),
        ([("SOPInstanceUID", "1.2.00")], Level.INSTANCE, "'SOPInstanceUID' has an invalid UID"),
        ([("StudyDate", "2020")], Level.STUDY, "'StudyDate' has an invalid date '2020'"),
        ([("StudyDate", "20201340")], Level.STUDY, "invalid date '20201340'"),
        ([("StudyDate", "2020*")], Level.STUDY, "invalid date '2020*'"),
        ([("StudyDate", "20200101-20200102-")], Level.STUDY, "invalid date range"),
        ([("StudyTime", "25")], Level.STUDY, "'StudyTime' has an invalid value '25'"),
        ([("StudyTime", "10h30")], Level.STUDY, "invalid value '10h30'"),
        ([("AcquisitionDateTime", "2020-13")], Level.INSTANCE, "invalid value '2020-13'"),
        ([("AcquisitionDateTime", "2020.5")], Level.INSTANCE, "invalid value '2020.5'"),
        ([("AcquisitionDateTime", "20200101+2500")], Level.INSTANCE, "invalid value"),
        ([("SeriesNumber", "one")], Level.SERIES, "'SeriesNumber' needs a number (IS)"),
        ([("SeriesNumber", "1*")], Level.SERIES, "needs a number (IS), not '1*'"),
        ([("SliceThickness", "nan")], Level.INSTANCE, "needs a number (DS), not 'nan'"),
        ([("RequestAttributesSequence", "x")], Level.SERIES, "is a sequence"),
        ([("PixelData", "x")], Level.INSTANCE, "'PixelData' has VR OB"),
        ([("NumberOfStudyRelatedSeries", "3")], Level.STUDY, "only universal matching"),
        # issue 10: values beyond the backends' integers, NUL, non-ASCII digits, no name
        ([("offset", str(2**63))], Level.STUDY, f"offset must be at most {2**63 - 1}"),
        ([("limit", "\u0661")], Level.STUDY, "limit must be a non-negative integer"),
        ([("SeriesNumber", str(2**31))], Level.SERIES, "'SeriesNumber' (IS) must be from"),
        ([("SeriesNumber", "9" * 23)], Level.SERIES, "(IS) must be from -2147483648 to"),
        ([("SeriesNumber", "\u0661")], Level.SERIES, "needs a number (IS)"),
        ([("SeriesNumber", "1_0")], Level.SERIES, "needs a number (IS)"),
        ([("Rows", "65536")], Level.INSTANCE, "'Rows' (US) must be from 0 to 65535"),
        ([("SliceThickness", "1e400")], Level.INSTANCE, "needs a number (DS)"),
        ([("PatientName", "A\x00")], Level.STUDY, "'PatientName' has a NUL character"),
        ([("StudyDescription", "\x00")], Level.STUDY, "'StudyDescription' has a NUL"),
        ([("", "1")], Level.STUDY, "a query parameter has no name"),
        (
            [("StudyDate", "\u0662\u0660\u0662\u0660\u0660\u0661\u0660\u0661")],
            Level.STUDY,
            "invalid date",
        ),
        ([("StudyTime", "\u0661\u0660")], Level.STUDY, "'StudyTime' has an invalid value"),
        ([(" ", "")], Level.STUDY, "a query parameter has no name"),
    ],
)
def test_errors_name_the_offending_key(params: Params, level: Level, fragment: str) -> None:
    with pytest.raises(QueryError) as error:
        parse(params, level)
    assert fragment in str(error.value)


def test_an_invalid_scope_uid_is_an_error() -> None:
    with pytest.raises(QueryError, match="SeriesInstanceUID"):
        parse([], Level.INSTANCE, scope={SERIES_UID: "not-a-uid"})


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)
