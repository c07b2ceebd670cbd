"""Searching the index through QIDO queries, on every backend, and both backends agreeing.

One catalog of real files is indexed once per backend (module scope); each case is a QIDO
query (parsed by app.query.qido as the web layer does) and the instances it must find, in
order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
import pytest_asyncio
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.auth.principal import Access, anonymous
from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from app.query.model import Query
from app.query.qido import parse_qido
from app.services.ports import Index, InstanceRecord, SearchHit
from app.services.search import SearchService
from tests.integration.conftest import BACKENDS, TENANT, Records, new_backend

pytestmark = pytest.mark.asyncio(loop_scope="module")

STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E

PATIENTS: dict[str, dict[str, Any]] = {
    "P1": {"PatientName": "Smith^John", "PatientSex": "M", "EthnicGroup": "X"},
    "P2": {"PatientName": "Smithers^Anna", "PatientSex": "F", "EthnicGroup": "Y"},
    "P3": {"PatientName": "Doe^Jane Mary", "PatientSex": "F", "EthnicGroup": "X"},
}

STUDIES: dict[str, dict[str, Any]] = {
    "S1": {
        "PatientID": "P1",
        "StudyDate": "20200115",
        "StudyTime": "083000",
        "AccessionNumber": "A1",
        "StudyDescription": "CT Chest",
        "ReferringPhysicianName": "Ref^One",
        "StudyID": "11",
        "PatientWeight": "70.5",
    },
    "S2": {
        "PatientID": "P2",
        "StudyDate": "20201231",
        "StudyTime": "120000",
        "AccessionNumber": "A_2",
        "StudyDescription": "MR Brain [contrast]",
        "ReferringPhysicianName": "Two^Ref",
    },
    "S3": {
        "PatientID": "P3",
        "StudyDate": "20210301",
        "StudyTime": "235959.5",
        "AccessionNumber": "A%3",
        "StudyDescription": "CT 50% dose",
    },
    "S4": {
        "PatientID": "P1",
        "StudyDate": None,
        "AccessionNumber": "A4",
        "StudyDescription": "OCT eye",
    },
}


def _request_attributes() -> list[Dataset]:
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS1"
    item.RequestedProcedureID = "RP1"
    item.AccessionNumber = "RA1"
    return [item]


SERIES: dict[str, dict[str, Any]] = {
    "S1a": {
        "Modality": "CT",
        "SeriesNumber": 1,
        "SeriesDescription": "Axial 2mm",
        "InstitutionName": "General Hospital",
        "SeriesDate": "20200115",
        "SeriesTime": "083000",
        "BodyPartExamined": "CHEST",
    },
    "S1b": {
        "Modality": "SR",
        "SeriesNumber": 2,
        "SeriesDescription": "Report",
        "InstitutionName": "City Clinic",
        "SeriesTime": "0900",
    },
    "S2a": {
        "Modality": "MR",
        "SeriesNumber": 1,
        "SeriesDescription": "T1 sag",
        "InstitutionName": "General Hospital",
        "OperatorsName": "Tech^Tom",
        "SeriesTime": "120000.5",
    },
    "S3a": {"Modality": "CT", "SeriesNumber": 3, "InstitutionName": "Clinic General"},
    "S3b": {"Modality": "MR", "SeriesNumber": 4, "RequestAttributesSequence": None},
    "S4a": {"Modality": "OPT", "SeriesNumber": 1, "SeriesDescription": "Fundus"},
}

# Instance name -> its own attributes, in the order they are added.
INSTANCES: dict[str, dict[str, Any]] = {
    "i1a1": {
        "InstanceNumber": 1,
        "SliceThickness": "2.5",
        "AcquisitionDateTime": "20200115083000",
        "ImageComments": "first slice",
    },
    "i1a2": {
        "InstanceNumber": 2,
        "SliceThickness": "5",
        "AcquisitionDateTime": "20200115083010.25",
    },
    "i1a3": {"InstanceNumber": 3, "SliceThickness": "1.25", "AcquisitionDateTime": "20200115"},
    "i1b1": {"InstanceNumber": 1},
    "i2a1": {"InstanceNumber": 1},
    "i2a2": {"InstanceNumber": 2},
    "i3a1": {"InstanceNumber": 1},
    "i3b1": {"InstanceNumber": 1},
    "i4a1": {"InstanceNumber": 1},
}


class Catalog:
    """The records of the catalog and the UIDs behind its short names."""

    def __init__(self, records: Records) -> None:
        self.uids: dict[str, str] = {}
        self.records: list[InstanceRecord] = []
        for name, attrs in INSTANCES.items():
            series, study = "S" + name[1:3], "S" + name[1]  # "i1a1": "S1a", "S1"
            series_attrs = dict(SERIES[series])
            if "RequestAttributesSequence" in series_attrs:
                series_attrs["RequestAttributesSequence"] = _request_attributes()
            study_attrs = STUDIES[study]
            patient = study_attrs["PatientID"]
            record = records.make(
                study=self.uid(study),
                series=self.uid(series),
                sop=self.uid(name),
                **PATIENTS[patient],
                **study_attrs,
                **series_attrs,
                **attrs,
            )
            self.records.append(record)

    def uid(self, name: str) -> str:
        return self.uids.setdefault(name, generate_uid())

    def name(self, uid: str) -> str:
        return next(name for name, known in self.uids.items() if known == uid)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return Catalog(Records(tmp_path_factory.mktemp("catalog")))


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def indexed(
    request: pytest.FixtureRequest, catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Index]:
    async with new_backend(request.param, tmp_path_factory.mktemp("index")) as backend:
        index = await backend.open()
        try:
            for record in catalog.records:
                await index.add_instance(TENANT, record, overwrite=False)
            yield index
        finally:
            await index.close()


Scope = Mapping[str, str]


def qido(level: Level, params: list[tuple[str, str]], catalog: Catalog, scope: Scope) -> Query:
    tags = {"study": STUDY_UID, "series": SERIES_UID}
    return parse_qido(
        params, level, scope={tags[key]: catalog.uid(name) for key, name in scope.items()}
    )


def hit_name(level: Level, hit: SearchHit, catalog: Catalog) -> str:
    if level is Level.PATIENT:
        assert hit.patient is not None
        return str(hit.patient["00100020"]["Value"][0])
    part, tag = {
        Level.STUDY: (hit.study, "0020000D"),
        Level.SERIES: (hit.series, "0020000E"),
        Level.INSTANCE: (hit.instance, "00080018"),
    }[level]
    assert part is not None
    return catalog.name(part[tag]["Value"][0])


Case = tuple[Level, list[tuple[str, str]], Scope, list[str]]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
FUZZY = ("fuzzymatching", "true")

CASES: dict[str, Case] = {
    # patient level
    "patient-all": (Level.PATIENT, [], {}, ["P1", "P2", "P3"]),
    "patient-id": (Level.PATIENT, [("PatientID", "P3")], {}, ["P3"]),
    "patient-name-wildcard": (Level.PATIENT, [("PatientName", "*SMITH*")], {}, ["P1", "P2"]),
    "patient-json": (Level.PATIENT, [("EthnicGroup", "X")], {}, ["P1", "P3"]),
    # study level: single values
    "study-all": (Level.STUDY, [], {}, ["S1", "S2", "S3", "S4"]),
    "patient-id-in-study": (Level.STUDY, [("PatientID", "P1")], {}, ["S1", "S4"]),
    "study-uid": (Level.STUDY, [("StudyInstanceUID", "S3")], {}, ["S3"]),
    "study-id": (Level.STUDY, [("StudyID", "11")], {}, ["S1"]),
    "accession-with-underscore": (Level.STUDY, [("AccessionNumber", "A_2")], {}, ["S2"]),
    "accession-with-percent": (Level.STUDY, [("AccessionNumber", "A%3")], {}, ["S3"]),
    "pn-case-insensitive": (Level.STUDY, [("PatientName", "smith^JOHN")], {}, ["S1", "S4"]),
    # wildcards
    "pn-prefix": (Level.STUDY, [("PatientName", "SMITH*")], {}, ["S1", "S2", "S4"]),
    "pn-contains": (Level.STUDY, [("PatientName", "*MARY*")], {}, ["S3"]),
    "pn-question-mark": (Level.STUDY, [("PatientName", "Sm?th^John")], {}, ["S1", "S4"]),
    "text-question-mark": (Level.STUDY, [("AccessionNumber", "A?")], {}, ["S1", "S4"]),
    "text-contains-percent": (Level.STUDY, [("StudyDescription", "*50%*")], {}, ["S3"]),
    "text-contains-bracket": (Level.STUDY, [("StudyDescription", "*[contrast]*")], {}, ["S2"]),
    "text-prefix": (Level.STUDY, [("StudyDescription", "CT*")], {}, ["S1", "S3"]),
    "text-is-case-sensitive": (Level.STUDY, [("StudyDescription", "*E*")], {}, []),
    "text-contains": (Level.STUDY, [("StudyDescription", "*e*")], {}, ["S1", "S3", "S4"]),
    "referring-contains": (Level.STUDY, [("ReferringPhysicianName", "*ONE*")], {}, ["S1"]),
    # fuzzy person names
    "fuzzy-given-name": (Level.STUDY, [("PatientName", "jane"), FUZZY], {}, ["S3"]),
    "fuzzy-middle-name": (Level.STUDY, [("PatientName", "MAR"), FUZZY], {}, ["S3"]),
    "fuzzy-family-name": (Level.STUDY, [("PatientName", "smith"), FUZZY], {}, ["S1", "S2", "S4"]),
    "fuzzy-not-inside": (Level.STUDY, [("PatientName", "mith"), FUZZY], {}, []),
    # dates and times
    "date-range": (Level.STUDY, [("StudyDate", "20200101-20201231")], {}, ["S1", "S2"]),
    "date-single": (Level.STUDY, [("StudyDate", "20201231")], {}, ["S2"]),
    "date-open-lower": (Level.STUDY, [("StudyDate", "-20200201")], {}, ["S1"]),
    "date-open-upper": (Level.STUDY, [("StudyDate", "20210101-")], {}, ["S3"]),
    "time-range": (Level.STUDY, [("StudyTime", "1100-1300")], {}, ["S2"]),
    "time-period": (Level.STUDY, [("StudyTime", "2359")], {}, ["S3"]),
    # UID lists, modalities
    "uid-list": (Level.STUDY, [("StudyInstanceUID", "S1,S3")], {}, ["S1", "S3"]),
    "modality": (Level.STUDY, [("ModalitiesInStudy", "MR")], {}, ["S2", "S3"]),
    "modalities-any": (Level.STUDY, [("ModalitiesInStudy", "CT,SR")], {}, ["S1", "S3"]),
    "modalities-wildcard": (Level.STUDY, [("ModalitiesInStudy", "S?")], {}, ["S1"]),
    "modalities-prefix": (Level.STUDY, [("ModalitiesInStudy", "OP*")], {}, ["S4"]),
    # a wildcard matches within one value: CT with MR (S3) or SR (S1) is not "C*R"
    "modalities-wildcard-spans-no-values": (Level.STUDY, [("ModalitiesInStudy", "C*R")], {}, []),
    "modalities-wildcard-one-value": (Level.STUDY, [("ModalitiesInStudy", "M?")], {}, ["S2", "S3"]),
    # the regular expression it compiles to takes other characters literally
    "modalities-wildcard-literal-dot": (Level.STUDY, [("ModalitiesInStudy", "O.*")], {}, []),
    "modalities-wildcard-suffix": (
        Level.STUDY,
        [("ModalitiesInStudy", "*T")],
        {},
        ["S1", "S3", "S4"],
    ),
    # attributes without a column: the stored JSON
    "json-patient-at-study": (Level.STUDY, [("EthnicGroup", "X")], {}, ["S1", "S3", "S4"]),
    "json-number": (Level.STUDY, [("PatientWeight", "70.50")], {}, ["S1"]),
    # several keys, paging
    "date-and-modality": (
        Level.STUDY,
        [("StudyDate", "20200101-"), ("ModalitiesInStudy", "CT")],
        {},
        ["S1", "S3"],
    ),
    "limit": (Level.STUDY, [("PatientName", "smith*"), ("limit", "2")], {}, ["S1", "S2"]),
    "offset": (
        Level.STUDY,
        [("PatientName", "smith*"), ("limit", "1"), ("offset", "1")],
        {},
        ["S2"],
    ),
    "offset-past-the-end": (Level.STUDY, [("offset", "10")], {}, []),
    # series level
    "series-all": (Level.SERIES, [], {}, ["S1a", "S1b", "S2a", "S3a", "S3b", "S4a"]),
    "series-of-study": (Level.SERIES, [], {"study": "S1"}, ["S1a", "S1b"]),
    "series-of-study-by-modality": (Level.SERIES, [("Modality", "SR")], {"study": "S1"}, ["S1b"]),
    "series-modality": (Level.SERIES, [("Modality", "CT")], {}, ["S1a", "S3a"]),
    "series-number": (Level.SERIES, [("SeriesNumber", "1")], {}, ["S1a", "S2a", "S4a"]),
    "series-description": (Level.SERIES, [("SeriesDescription", "*sag*")], {}, ["S2a"]),
    "body-part": (Level.SERIES, [("BodyPartExamined", "CHEST")], {}, ["S1a"]),
    "series-study-date": (Level.SERIES, [("StudyDate", "20201231")], {}, ["S2a"]),
    "series-patient-name": (Level.SERIES, [("PatientName", "doe*")], {}, ["S3a", "S3b"]),
    "sequence-column": (
        Level.SERIES,
        [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1")],
        {},
        ["S3b"],
    ),
    "sequence-json": (
        Level.SERIES,
        [("RequestAttributesSequence.AccessionNumber", "RA1")],
        {},
        ["S3b"],
    ),
    "json-text": (Level.SERIES, [("InstitutionName", "General Hospital")], {}, ["S1a", "S2a"]),
    "json-wildcard": (
        Level.SERIES,
        [("InstitutionName", "*General*")],
        {},
        ["S1a", "S2a", "S3a"],
    ),
    "json-pn": (Level.SERIES, [("OperatorsName", "tech^TOM")], {}, ["S2a"]),
    "json-pn-wildcard": (Level.SERIES, [("OperatorsName", "TECH*")], {}, ["S2a"]),
    "json-date": (Level.SERIES, [("SeriesDate", "20200115")], {}, ["S1a"]),
    "json-time-range": (Level.SERIES, [("SeriesTime", "0830-0900")], {}, ["S1a", "S1b"]),
    # instance level
    "instances-of-series": (
        Level.INSTANCE,
        [],
        {"study": "S1", "series": "S1a"},
        ["i1a1", "i1a2", "i1a3"],
    ),
    "instances-of-study": (Level.INSTANCE, [], {"study": "S3"}, ["i3a1", "i3b1"]),
    "instance-number": (Level.INSTANCE, [("InstanceNumber", "2")], {}, ["i1a2", "i2a2"]),
    "sop-uid-list": (
        Level.INSTANCE,
        [("SOPInstanceUID", "i2a1,i3b1")],
        {},
        ["i2a1", "i3b1"],
    ),
    "instance-series-attribute": (
        Level.INSTANCE,
        [("Modality", "MR")],
        {},
        ["i2a1", "i2a2", "i3b1"],
    ),
    "instance-patient-attribute": (Level.INSTANCE, [("PatientID", "P2")], {}, ["i2a1", "i2a2"]),
    "instance-json-number": (Level.INSTANCE, [("SliceThickness", "2.50")], {}, ["i1a1"]),
    "instance-json-wildcard": (Level.INSTANCE, [("ImageComments", "*slice*")], {}, ["i1a1"]),
    "instance-json-datetime-range": (
        Level.INSTANCE,
        [("AcquisitionDateTime", "20200115083000-20200115083005")],
        {},
        ["i1a1"],
    ),
    "instance-json-datetime-day": (
        Level.INSTANCE,
        [("AcquisitionDateTime", "20200115")],
        {},
        ["i1a1", "i1a2", "i1a3"],
    ),
    "instance-paging": (
        Level.INSTANCE,
        [("SOPClassUID", CT_IMAGE), ("limit", "3"), ("offset", "2")],
        {},
        ["i1a3", "i1b1", "i2a1"],
    ),
}


def resolve(params: list[tuple[str, str]], catalog: Catalog) -> list[tuple[str, str]]:
    """Replace catalog names in UID values by their UIDs."""
    return [
        (key, ",".join(catalog.uid(n) for n in value.split(",")))
        if key.endswith("InstanceUID")
        else (key, value)
        for key, value in params
    ]


@pytest.mark.parametrize("case", list(CASES), ids=str)
async def test_search(indexed: Index, catalog: Catalog, case: str) -> None:
    level, params, scope, expected = CASES[case]
    query = qido(level, resolve(params, catalog), catalog, scope)
    hits = await indexed.search(TENANT, query)
    assert [hit_name(level, hit, catalog) for hit in hits] == expected


async def test_computed_attributes(indexed: Index, catalog: Catalog) -> None:
    studies = await indexed.search(TENANT, qido(Level.STUDY, [], catalog, {}))
    computed = {hit_name(Level.STUDY, hit, catalog): hit.computed for hit in studies}
    assert computed["S1"] == {
        MODALITIES_IN_STUDY: ["CT", "SR"],
        NUMBER_OF_STUDY_RELATED_SERIES: 2,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 4,
    }
    assert computed["S3"][MODALITIES_IN_STUDY] == ["CT", "MR"]
    assert computed["S4"][NUMBER_OF_STUDY_RELATED_INSTANCES] == 1
    series = await indexed.search(TENANT, qido(Level.SERIES, [], catalog, {"study": "S1"}))
    assert [hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES] for hit in series] == [3, 1]
    patients = await indexed.search(TENANT, qido(Level.PATIENT, [], catalog, {}))
    assert [hit.computed[NUMBER_OF_PATIENT_RELATED_STUDIES] for hit in patients] == [2, 1, 1]


async def test_search_hits_carry_each_level(indexed: Index, catalog: Catalog) -> None:
    query = qido(Level.INSTANCE, [], catalog, {"study": "S1", "series": "S1b"})
    (hit,) = await indexed.search(TENANT, query)
    assert hit.study is not None and hit.series is not None and hit.instance is not None
    assert hit.study["00081030"]["Value"] == ["CT Chest"]
    assert hit.study["00100010"]["Value"] == [{"Alphabetic": "Smith^John"}]
    assert hit.series["00080080"]["Value"] == ["City Clinic"]
    record = next(r for r in catalog.records if r.sop_instance_uid == catalog.uid("i1b1"))
    assert hit.instance == record.metadata


# -- both backends answer alike --------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def both(
    catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[Index]]:
    async with (
        new_backend("sqlite", tmp_path_factory.mktemp("sqlite")) as lite,
        new_backend("postgres", tmp_path_factory.mktemp("postgres")) as pg,
    ):
        opened = [await lite.open(), await pg.open()]
        try:
            for index in opened:
                for record in catalog.records:
                    await index.add_instance(TENANT, record, overwrite=False)
            yield opened
        finally:
            for index in opened:
                await index.close()


async def test_backends_give_identical_results(both: list[Index], catalog: Catalog) -> None:
    """Every case, shaped as QIDO answers (all attributes), and every retrieval."""
    services = [SearchService(index) for index in both]
    for case, (level, params, scope, _) in CASES.items():
        query = qido(level, [*resolve(params, catalog), ("includefield", "all")], catalog, scope)
        access = Access(anonymous(), TENANT)
        lite, pg = [await service.search(access, query) for service in services]
        assert lite == pg, case
    for study in STUDIES:
        uid = catalog.uid(study)
        lite_instances, pg_instances = [await index.instances(TENANT, uid) for index in both]
        assert lite_instances == pg_instances
        lite_meta, pg_meta = [await index.metadata(TENANT, uid) for index in both]
        assert [(m.sop_instance_uid, orjson.loads(m.json)) for m in lite_meta] == [
            (m.sop_instance_uid, orjson.loads(m.json)) for m in pg_meta
        ]
