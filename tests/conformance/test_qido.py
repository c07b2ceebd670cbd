"""QIDO-RS (PS3.18 10.6) over HTTP against a running `pacs serve`.

One module-wide corpus of five studies shares an AccessionNumber unique to this run, so
each query adds `AccessionNumber=<acc>` (or a unique PatientID, or a path UID) to see only
its own data on the shared server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    DICOM_JSON,
    error_message,
    person,
    stow_ok,
    token,
    value,
    values,
)
from tests.support.dicom_factory import make_file

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"


@dataclass
class Study:
    key: str
    uid: str
    patient_id: str
    name: str
    date: str
    time: str
    # (series uid, modality, series number, number of instances)
    series: list[tuple[str, str, int, int]]
    sops: dict[str, list[str]] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return sorted({m for _, m, _, _ in self.series})

    @property
    def instances(self) -> int:
        return sum(n for *_, n in self.series)


@dataclass
class Corpus:
    accession: str
    studies: dict[str, Study]

    def __getitem__(self, key: str) -> Study:
        return self.studies[key]


SPEC = [
    # key, name, date, time, [(modality, series number, instances)]
    ("A", "Smith^John", "20200115", "083000", [("CT", 1, 2), ("MR", 2, 1)]),
    ("B", "SMITHSON^JANE", "20210610", "141500", [("US", 5, 1)]),
    ("C", "DOE^JOHN", "20221231", "235900", [("CT", 3, 1)]),
    ("D", "JONES^MARY", "20190301", "120000", [("MR", 1, 1)]),
    ("E", "SMYTH^BOB", "20230704", "180000", [("SR", 1, 1)]),
]


def _request_attributes(step_id: str) -> Dataset:
    item = Dataset()
    item.ScheduledProcedureStepID = step_id
    item.RequestedProcedureID = "RP1"
    return item


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    accession = token()
    studies: dict[str, Study] = {}
    files: list[bytes] = []
    for key, name, date, time, series_spec in SPEC:
        study = Study(key, generate_uid(), f"{accession}-{key}", name, date, time, [])
        for modality, number, count in series_spec:
            series_uid = generate_uid()
            study.series.append((series_uid, modality, number, count))
            study.sops[series_uid] = []
            for i in range(count):
                sop = generate_uid()
                study.sops[series_uid].append(sop)
                files.append(
                    make_file(
                        study=study.uid,
                        series=series_uid,
                        sop=sop,
                        PatientName=name,
                        PatientID=study.patient_id,
                        PatientWeight="70.5",
                        StudyDate=date,
                        StudyTime=time,
                        AccessionNumber=accession,
                        StudyDescription=f"Study {key} {accession}",
                        Modality=modality,
                        SeriesNumber=number,
                        SeriesDescription=f"Series {modality}{number}",
                        InstanceNumber=i + 1,
                        ImageComments=f"{key}-{modality}-{i + 1}",
                        RequestAttributesSequence=[
                            _request_attributes(f"{accession}{key}{number}")
                        ],
                    )
                )
        studies[key] = study
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        stow_ok(http, files)
    yield Corpus(accession, studies)


def _search(http: httpx.Client, url: str, params: Any = None) -> list[dict[str, Any]]:
    response = http.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    found: list[dict[str, Any]] = response.json()
    assert isinstance(found, list)
    return found


def _study_keys(corpus: Corpus, found: list[dict[str, Any]]) -> list[str]:
    by_uid = {s.uid: k for k, s in corpus.studies.items()}
    uids = [value(a, STUDY_UID) for a in found]
    assert all(u in by_uid for u in uids), f"results from outside the corpus: {uids}"
    return sorted(by_uid[u] for u in uids)


def _studies(
    http: httpx.Client, corpus: Corpus, params: list[tuple[str, str]] | dict[str, str]
) -> list[str]:
    if isinstance(params, dict):
        params = list(params.items())
    found = _search(http, "/studies", [("AccessionNumber", corpus.accession), *params])
    return _study_keys(corpus, found)


# --- the six resources ------------------------------------------------------------------------


def test_search_all_six_resources(http: httpx.Client, corpus: Corpus) -> None:
    a = corpus["A"]
    (ct, _, _, _), (mr, _, _, _) = a.series
    pid = {"PatientID": a.patient_id}
    all_sops = sorted(a.sops[ct] + a.sops[mr])

    assert [value(x, STUDY_UID) for x in _search(http, "/studies", pid)] == [a.uid]
    assert sorted(value(x, SERIES_UID) for x in _search(http, "/series", pid)) == sorted([ct, mr])
    assert sorted(value(x, SOP_UID) for x in _search(http, "/instances", pid)) == all_sops
    found = _search(http, f"/studies/{a.uid}/series")
    assert sorted(value(x, SERIES_UID) for x in found) == sorted([ct, mr])
    found = _search(http, f"/studies/{a.uid}/instances")
    assert sorted(value(x, SOP_UID) for x in found) == all_sops
    found = _search(http, f"/studies/{a.uid}/series/{ct}/instances")
    assert sorted(value(x, SOP_UID) for x in found) == sorted(a.sops[ct])
    # Path scope narrows: another study's series are not in this study.
    b = corpus["B"]
    assert _search(http, f"/studies/{b.uid}/series/{ct}/instances") == []


def test_keyword_and_tag_keys_are_equivalent(http: httpx.Client, corpus: Corpus) -> None:
    a = corpus["A"]
    assert _studies(http, corpus, {"PatientID": a.patient_id}) == ["A"]
    assert _studies(http, corpus, {"00100020": a.patient_id}) == ["A"]
    assert _studies(http, corpus, {"00100020": a.patient_id.lower()}) == []  # LO is exact
    found = _search(http, "/studies", {"0020000D": a.uid})
    assert [value(x, STUDY_UID) for x in found] == [a.uid]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("*SMITH*", ["A", "B"]),
        ("SMITH*", ["A", "B"]),
        ("*MITH^J*", ["A"]),
        ("SM?TH^*", ["A", "E"]),
        ("SM?TH*", ["A", "B", "E"]),
        ("?OE^JOHN", ["C"]),
        ("*", ["A", "B", "C", "D", "E"]),
        ("smith^john", ["A"]),
        ("SMITH^JOHN", ["A"]),
        ("doe^john", ["C"]),
        ("*smith*", ["A", "B"]),
        ("SMITH", []),
    ],
)
def test_patient_name_matching(
    http: httpx.Client, corpus: Corpus, name: str, expected: list[str]
) -> None:
    assert _studies(http, corpus, {"PatientName": name}) == expected


@pytest.mark.parametrize(
    ("name", "fuzzy", "expected"),
    [
        ("jo", "true", ["A", "C", "D"]),
        ("JOHN", "true", ["A", "C"]),
        ("smi", "true", ["A", "B"]),
        ("bo", "true", ["E"]),
        ("jo", "false", []),
        ("ohn", "true", []),
    ],
)
def test_fuzzy_matching(
    http: httpx.Client, corpus: Corpus, name: str, fuzzy: str, expected: list[str]
) -> None:
    found = _studies(http, corpus, {"PatientName": name, "fuzzymatching": fuzzy})
    assert found == expected


@pytest.mark.parametrize(
    ("key", "query", "expected"),
    [
        ("StudyDate", "20221231", ["C"]),
        ("StudyDate", "20200101-20211231", ["A", "B"]),
        ("StudyDate", "20200115-20200115", ["A"]),
        ("StudyDate", "20210101-", ["B", "C", "E"]),
        ("StudyDate", "-20200131", ["A", "D"]),
        ("00080020", "20190301-20200115", ["A", "D"]),
        ("StudyTime", "080000-130000", ["A", "D"]),
        ("StudyTime", "1415", ["B"]),
        ("StudyTime", "180000-", ["C", "E"]),
        ("StudyTime", "-0830", ["A"]),
    ],
)
def test_date_and_time_ranges(
    http: httpx.Client, corpus: Corpus, key: str, query: str, expected: list[str]
) -> None:
    assert _studies(http, corpus, {key: query}) == expected


def test_uid_list(http: httpx.Client, corpus: Corpus) -> None:
    a, c = corpus["A"], corpus["C"]
    assert _studies(http, corpus, {"StudyInstanceUID": f"{a.uid},{c.uid}"}) == ["A", "C"]
    assert _studies(http, corpus, {"StudyInstanceUID": f"{a.uid}\\{c.uid}"}) == ["A", "C"]
    (ct, _, _, _), (mr, _, _, _) = a.series
    found = _search(http, "/series", {"SeriesInstanceUID": f"{ct},{mr},{generate_uid()}"})
    assert sorted(value(x, SERIES_UID) for x in found) == sorted([ct, mr])


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [
        ("MR", ["A", "D"]),
        ("CT", ["A", "C"]),
        ("CT,US", ["A", "B", "C"]),
        ("XA", []),
        # Wildcards match within one value (PS3.4 C.2.2.2.4): A's CT and MR are not "C*R".
        ("C*R", []),
        ("M?", ["A", "D"]),
        ("*T", ["A", "C"]),
    ],
)
def test_modalities_in_study(
    http: httpx.Client, corpus: Corpus, modalities: str, expected: list[str]
) -> None:
    assert _studies(http, corpus, {"ModalitiesInStudy": modalities}) == expected


def test_series_number_and_modality(http: httpx.Client, corpus: Corpus) -> None:
    a = corpus["A"]
    (_, _, _, _), (mr, _, _, _) = a.series
    found = _search(http, f"/studies/{a.uid}/series", {"SeriesNumber": "2"})
    assert [value(x, SERIES_UID) for x in found] == [mr]
    assert value(found[0], "00200011") == 2
    found = _search(http, f"/studies/{a.uid}/series", {"Modality": "MR"})
    assert [value(x, SERIES_UID) for x in found] == [mr]
    b = corpus["B"]
    found = _search(http, "/series", {"PatientID": b.patient_id, "SeriesNumber": "5"})
    assert [value(x, SERIES_UID) for x in found] == [b.series[0][0]]
    assert _search(http, "/series", {"PatientID": b.patient_id, "SeriesNumber": "4"}) == []


def test_sequence_key_with_dots(http: httpx.Client, corpus: Corpus) -> None:
    b = corpus["B"]
    key = "RequestAttributesSequence.ScheduledProcedureStepID"
    found = _search(http, "/series", {key: f"{corpus.accession}B5"})
    assert [value(x, SERIES_UID) for x in found] == [b.series[0][0]]
    found = _search(http, "/series", {"00400275.00400009": f"{corpus.accession}B5"})
    assert [value(x, SERIES_UID) for x in found] == [b.series[0][0]]
    found = _search(http, "/series", {key: f"{corpus.accession}A*"})
    assert sorted(value(x, SERIES_UID) for x in found) == sorted(s for s, *_ in corpus["A"].series)


def test_non_indexed_attribute_of_the_level(http: httpx.Client, corpus: Corpus) -> None:
    a = corpus["A"]
    ct = a.series[0][0]
    found = _search(http, f"/studies/{a.uid}/instances", {"ImageComments": "A-CT-2"})
    assert [value(x, SOP_UID) for x in found] == [a.sops[ct][1]]
    assert value(found[0], "00204000") == "A-CT-2"  # a query key is returned
    found = _search(http, f"/studies/{a.uid}/instances", {"ImageComments": "A-CT-*"})
    assert sorted(value(x, SOP_UID) for x in found) == sorted(a.sops[ct])


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_retrieve_url_on_every_result(
    http: httpx.Client, corpus: Corpus, dicomweb: str, level: str
) -> None:
    a = corpus["A"]
    ct = a.series[0][0]
    sop = a.sops[ct][0]
    study_url = f"{dicomweb}/studies/{a.uid}"
    expected = {
        "studies": study_url,
        "series": f"{study_url}/series/{ct}",
        "instances": f"{study_url}/series/{ct}/instances/{sop}",
    }[level]
    urls = {
        "studies": [("/studies", {"StudyInstanceUID": a.uid})],
        "series": [
            ("/series", {"SeriesInstanceUID": ct}),
            (f"/studies/{a.uid}/series", {"SeriesInstanceUID": ct}),
        ],
        "instances": [
            ("/instances", {"SOPInstanceUID": sop}),
            (f"/studies/{a.uid}/instances", {"SOPInstanceUID": sop}),
            (f"/studies/{a.uid}/series/{ct}/instances", {"SOPInstanceUID": sop}),
        ],
    }[level]
    for url, params in urls:
        [attrs] = _search(http, url, params)
        assert value(attrs, "00081190") == expected, url


def test_unsupported_matching_parameter_is_reported_in_warning(
    http: httpx.Client, corpus: Corpus
) -> None:
    response = http.get(
        "/studies",
        params={"PatientID": corpus["A"].patient_id, "emptyvaluematching": "true"},
    )
    assert response.status_code == 200, response.text
    assert [value(x, STUDY_UID) for x in response.json()] == [corpus["A"].uid]
    warning = response.headers.get("warning", "")
    assert warning.startswith("299 "), response.headers
    assert "emptyvaluematching" in warning


# --- includefield and default attributes ------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        [("includefield", "StudyDescription"), ("includefield", "00101030")],
        [("includefield", "StudyDescription,PatientWeight")],
        [("includefield", "00081030,00101030")],
        [("includefield", "all")],
    ],
    ids=["repeated", "comma-keywords", "comma-tags", "all"],
)
def test_includefield(http: httpx.Client, corpus: Corpus, params: list[tuple[str, str]]) -> None:
    a = corpus["A"]
    [plain] = _search(http, "/studies", {"PatientID": a.patient_id})
    assert "00081030" not in plain  # StudyDescription is no default return attribute
    assert "00101030" not in plain
    [found] = _search(http, "/studies", [("PatientID", a.patient_id), *params])
    assert value(found, "00081030") == f"Study A {corpus.accession}"
    assert float(value(found, "00101030")) == 70.5
    assert value(found, "00201208") == 3  # defaults stay


def test_includefield_all_at_instance_level(http: httpx.Client, corpus: Corpus) -> None:
    a = corpus["A"]
    ct = a.series[0][0]
    found = _search(http, f"/studies/{a.uid}/series/{ct}/instances", {"includefield": "all"})
    assert len(found) == 2
    for attrs in found:
        assert value(attrs, "00280002") == 1  # SamplesPerPixel: not a default
        assert value(attrs, "00280004") == "MONOCHROME2"


def test_paging_covers_everything_once(http: httpx.Client, corpus: Corpus) -> None:
    everything = _studies(http, corpus, {})
    assert everything == ["A", "B", "C", "D", "E"]
    pages = []
    for offset in (0, 2, 4):
        found = _search(
            http,
            "/studies",
            {"AccessionNumber": corpus.accession, "limit": "2", "offset": str(offset)},
        )
        pages.append(_study_keys(corpus, found))
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [k for page in pages for k in page]
    assert sorted(flat) == everything  # disjoint and complete
    beyond = http.get(
        "/studies", params={"AccessionNumber": corpus.accession, "limit": "2", "offset": "5"}
    )
    assert beyond.status_code in (200, 204)
    assert beyond.status_code == 204 or beyond.json() == []


def test_study_default_return_attributes(http: httpx.Client, corpus: Corpus, dicomweb: str) -> None:
    a = corpus["A"]
    [attrs] = _search(http, "/studies", {"PatientID": a.patient_id})
    required = ["00080020", "00080030", "00080050", "00080056", "00080061", "00080090"]
    required += ["00081190", "00100010", "00100020", "00100030", "00100040", "0020000D"]
    required += ["00200010", "00201206", "00201208"]
    missing = [t for t in required if t not in attrs]
    assert not missing, missing
    assert value(attrs, "00201206") == 2
    assert value(attrs, "00201208") == 3
    assert sorted(values(attrs, "00080061")) == ["CT", "MR"]
    assert value(attrs, "00081190") == f"{dicomweb}/studies/{a.uid}"
    assert value(attrs, "00080056") == "ONLINE"
    assert person(attrs) == "Smith^John"
    assert value(attrs, "00080020") == "20200115"
    assert attrs["00201206"]["vr"] == "IS"
    assert attrs["00080061"]["vr"] == "CS"
    assert attrs["00081190"]["vr"] == "UR"


def test_series_default_return_attributes(
    http: httpx.Client, corpus: Corpus, dicomweb: str
) -> None:
    a = corpus["A"]
    ct = a.series[0][0]
    found = _search(http, f"/studies/{a.uid}/series", {"SeriesInstanceUID": ct})
    [attrs] = found
    for tag in ("00080060", "0020000E", "00200011", "00201209", "00081190"):
        assert tag in attrs, tag
    assert value(attrs, "00080060") == "CT"
    assert value(attrs, "00201209") == 2
    assert value(attrs, "0008103E") == "Series CT1"
    assert value(attrs, "00081190") == f"{dicomweb}/studies/{a.uid}/series/{ct}"


def test_instance_default_return_attributes(
    http: httpx.Client, corpus: Corpus, dicomweb: str
) -> None:
    a = corpus["A"]
    mr = a.series[1][0]
    [attrs] = _search(http, f"/studies/{a.uid}/series/{mr}/instances")
    [sop] = a.sops[mr]
    for tag in ("00080016", "00080018", "00200013", "00280010", "00280011", "00081190"):
        assert tag in attrs, tag
    assert value(attrs, "00080018") == sop
    assert value(attrs, "00280010") == 8
    assert value(attrs, "00081190") == f"{dicomweb}/studies/{a.uid}/series/{mr}/instances/{sop}"


def test_series_without_study_in_path_include_study_attributes(
    http: httpx.Client, corpus: Corpus
) -> None:
    b = corpus["B"]
    [attrs] = _search(http, "/series", {"PatientID": b.patient_id})
    assert value(attrs, STUDY_UID) == b.uid
    assert person(attrs) == "SMITHSON^JANE"
    assert value(attrs, "00080020") == "20210610"
    assert value(attrs, "00080060") == "US"
    [attrs] = _search(http, "/instances", {"PatientID": b.patient_id})
    assert value(attrs, STUDY_UID) == b.uid
    assert value(attrs, SERIES_UID) == b.series[0][0]
    assert value(attrs, "00080060") == "US"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "needle"),
    [
        ("/studies", {"FooBar": "1"}, "FooBar"),
        ("/studies", {"includefield": "NotAKeyword"}, "NotAKeyword"),
        ("/studies", {"StudyDate": "20201301"}, "StudyDate"),
        ("/studies", {"StudyDate": "2020-01-01"}, "StudyDate"),
        ("/studies", {"StudyDate": "yesterday"}, "StudyDate"),
        ("/studies", {"StudyTime": "2599"}, "StudyTime"),
        ("/studies", {"SeriesDescription": "x"}, "SeriesDescription"),
        ("/studies", {"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
        ("/series", {"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
        ("/studies", {"StudyInstanceUID": "abc"}, "StudyInstanceUID"),
        ("/studies", {"limit": "ten"}, "limit"),
        ("/studies", {"offset": "-1"}, "offset"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies", {"SeriesNumber": "two"}, "SeriesNumber"),
    ],
)
def test_bad_queries_are_400_naming_the_key(
    http: httpx.Client, url: str, params: dict[str, str], needle: str
) -> None:
    response = http.get(url, params=params)
    assert response.status_code == 400, response.text
    assert needle in error_message(response)


def test_accept_xml_only_is_406(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(
        "/studies",
        params={"AccessionNumber": corpus.accession},
        headers={"Accept": "application/dicom+xml"},
    )
    assert response.status_code == 406, response.text
    error_message(response)


@pytest.mark.parametrize(
    "accept", ["application/dicom+json", "application/json", "*/*", "application/dicom+json, */*"]
)
def test_json_accept_headers(http: httpx.Client, corpus: Corpus, accept: str) -> None:
    response = http.get(
        "/studies", params={"PatientID": corpus["C"].patient_id}, headers={"Accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    assert [value(x, STUDY_UID) for x in response.json()] == [corpus["C"].uid]


# --- the requests OHIF v3 sends ---------------------------------------------------------------

OHIF = "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"


def test_ohif_study_list(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(OHIF)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    found = response.json()
    assert 5 <= len(found) <= 101
    for attrs in found:
        assert value(attrs, STUDY_UID)
        assert value(attrs, "00081190")


def test_ohif_patient_name_filter(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(OHIF + "&PatientName=*DOE*")
    assert response.status_code == 200, response.text
    found = response.json()
    assert corpus["C"].uid in [value(a, STUDY_UID) for a in found]
    for attrs in found:
        assert "DOE" in (person(attrs) or "").upper()
    [c] = [a for a in found if value(a, STUDY_UID) == corpus["C"].uid]
    assert value(c, "00081030") == f"Study C {corpus.accession}"
    assert values(c, "00080061") == ["CT"]


def test_ohif_patient_id_filter(http: httpx.Client, corpus: Corpus) -> None:
    d = corpus["D"]
    response = http.get(OHIF + f"&00100020={d.patient_id}")
    assert response.status_code == 200, response.text
    [attrs] = response.json()
    assert value(attrs, STUDY_UID) == d.uid
    assert value(attrs, "00081030") == f"Study D {corpus.accession}"


def test_ohif_study_uid_as_query_key(http: httpx.Client, corpus: Corpus) -> None:
    e = corpus["E"]
    response = http.get(OHIF + f"&StudyInstanceUID={e.uid}")
    assert response.status_code == 200, response.text
    [attrs] = response.json()
    assert value(attrs, STUDY_UID) == e.uid
    assert person(attrs) == "SMYTH^BOB"
    assert values(attrs, "00080061") == ["SR"]
