"""The DIMSE bridge driven by DCMTK: echoscu, storescu, findscu, movescu and getscu against
`pacs serve --dimse-port ...`, with a storescp as the C-MOVE destination.

A folder of files is sent with one storescu run: a generated study (two series of two CT
images), a second generated study whose patient name is not ASCII, and pydicom corpus files in
Explicit and Implicit VR Little Endian, RLE, JPEG 2000 and JPEG-LS. Everything the tools
received or wrote is then checked: query results read back from findscu's response files,
files written by storescp and getscu compared with what was sent, byte for byte in their
dataset part. Across protocols: what storescu sent is found by QIDO-RS and retrieved by
WADO-RS as the PS3.10 file the archive built; what STOW-RS stored is found by findscu and
sent by movescu.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.e2e.multipart import encode_multipart
from tests.support.dcmtk import check, require_dcmtk, run, split_part10, storescp
from tests.support.dicom_factory import make_file
from tests.support.server import free_port, running_server

CALLING_AES = ("ECHOSCU", "STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "TESTSCU")
# pydicom corpus files and the storescu option that proposes their transfer syntax only
# (without one, storescu proposes the uncompressed syntaxes and converts what it can).
CORPUS = {
    "CT_small.dcm": "",  # Explicit VR Little Endian
    "rtplan.dcm": "-xi",  # Implicit VR Little Endian, no pixel data
    "SC_rgb_rle.dcm": "-xr",  # RLE Lossless
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS Lossless
}


def read(data: bytes | Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corpus files carry values pydicom warns about
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


@dataclass(frozen=True)
class Pacs:
    url: str
    port: int
    moved: Path  # where the storescp C-MOVE destination writes
    log: Path

    def tool(self, tool: str, calling: str, *args: str | Path, files: tuple[Path, ...] = ()) -> str:
        """Run a DCMTK tool against the archive as `calling`; it must succeed."""
        peer = ("127.0.0.1", str(self.port))
        return check(tool, "-aet", calling, "-aec", "PACS", *args, *peer, *files)

    def move(self, model: str, *keys: str) -> str:
        """movescu to the test's storescp (STORESCP) with `model` (-S or -P) and `keys`."""
        key_args = [arg for key in keys for arg in ("-k", key)]
        return self.tool("movescu", "MOVESCU", "-v", model, "-aem", "STORESCP", *key_args)


@dataclass(frozen=True)
class Sent:
    files: dict[str, Path]  # SOP Instance UID -> the file storescu sent
    # SOP Instance UID -> what storescu sends of it, as a storescp (+B) wrote it down: DCMTK
    # re-encodes some files (it drops CT_small.dcm's trailing padding, for one).
    reference: dict[str, bytes]
    tag: str  # unique per run, in patient IDs and names
    study: str  # the generated study
    series: tuple[str, str]
    unicode_study: str
    output: str  # storescu's

    def in_study(self) -> dict[str, Path]:
        return {
            uid: path
            for uid, path in self.files.items()
            if read(path).StudyInstanceUID == self.study
        }


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    require_dcmtk()
    root = tmp_path_factory.mktemp("dimse")
    with storescp(root / "moved") as destination:
        port = free_port()
        args = ["--dimse-port", str(port), "--ae-title", "PACS"]
        args += ["--move-destination", f"STORESCP=127.0.0.1:{destination}"]
        for ae in CALLING_AES:
            args += ["--dimse-allow", ae]
        with running_server(root / "data", *args) as url:
            yield Pacs(url, port, root / "moved", root / "data" / "server.log")


@pytest.fixture(scope="module")
def sent(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Sent:
    folder = tmp_path_factory.mktemp("to-send")
    tag = uuid.uuid4().hex[:8].upper()
    study, series = generate_uid(), (generate_uid(), generate_uid())
    files: dict[str, Path] = {}
    for s, (series_uid, modality) in enumerate(zip(series, ("CT", "MR"), strict=True)):
        for number in (1, 2):
            sop = generate_uid()
            data = make_file(
                study=study,
                series=series_uid,
                sop=sop,
                seed=10 * s + number,
                PatientName=f"DIMSE^{tag}",
                PatientID=f"DIMSE-{tag}",
                StudyDate="20240315",
                StudyTime="093000",
                AccessionNumber=f"A{tag}",
                Modality=modality,
                SeriesNumber=s + 1,
                InstanceNumber=number,
            )
            files[sop] = folder / f"gen-{s}-{number}.dcm"
            files[sop].write_bytes(data)
    unicode_study, sop = generate_uid(), generate_uid()
    files[sop] = folder / "unicode.dcm"
    files[sop].write_bytes(
        make_file(
            study=unicode_study,
            sop=sop,
            SpecificCharacterSet="ISO_IR 192",
            PatientName=f"Jörg^Ünal{tag}",
            PatientID=f"DIMSE-U-{tag}",
        )
    )
    compressed = tmp_path_factory.mktemp("to-send-compressed")
    for name, option in CORPUS.items():
        source = get_testdata_file(name)
        assert source is not None
        copy = Path(shutil.copy(source, (compressed if option else folder) / name))
        files[str(read(copy).SOPInstanceUID)] = copy
    # The folder in one association, then each compressed file with its syntax proposed.
    runs = [("-v", "+sd", folder)]
    runs += [("-v", option, compressed / name) for name, option in CORPUS.items() if option]
    output = ""
    for *options, path in runs:
        output += pacs.tool("storescu", "STORESCU", *options, files=(path,))
    reference_dir = tmp_path_factory.mktemp("reference") / "files"
    with storescp(reference_dir, "REFERENCE") as port:
        for *options, path in runs:
            check("storescu", "-aec", "REFERENCE", *options, "127.0.0.1", str(port), path)
    reference = moved_files(reference_dir)
    assert set(reference) == set(files)
    return Sent(files, reference, tag, study, series, unicode_study, output)


# -- C-ECHO, C-STORE -------------------------------------------------------------------


def test_echoscu(pacs: Pacs) -> None:
    output = pacs.tool("echoscu", "ECHOSCU", "-v")
    assert "Received Echo Response (Success)" in output


def test_storescu_stores_every_file(sent: Sent) -> None:
    assert sent.output.count("Received Store Response (Success)") == len(sent.files)
    assert "Failed" not in sent.output and "Warning" not in sent.output


def test_stored_by_storescu_found_by_qido_and_retrieved_by_wado(pacs: Pacs, sent: Sent) -> None:
    with httpx.Client(base_url=f"{pacs.url}/dicomweb") as http:
        for sop, path in sent.files.items():
            original = read(path)
            found = http.get("/instances", params={"SOPInstanceUID": sop}).json()
            assert len(found) == 1, sop
            assert found[0]["0020000D"]["Value"] == [original.StudyInstanceUID]
            url = f"/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}"
            response = http.get(f"{url}/instances/{sop}", headers={"Accept": "application/dicom"})
            assert response.status_code == 200
            # The archive's file: its own file meta, then the dataset exactly as received.
            meta = read(response.content).file_meta
            assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert meta.MediaStorageSOPInstanceUID == sop
            assert meta.MediaStorageSOPClassUID == original.SOPClassUID
            assert meta.SourceApplicationEntityTitle == "STORESCU"
            assert split_part10(response.content)[1] == split_part10(sent.reference[sop])[1]
            assert_same_content(response.content, path)


# -- C-FIND ----------------------------------------------------------------------------


class Finder:
    def __init__(self, pacs: Pacs, folder: Path) -> None:
        self.pacs = pacs
        self.folder = folder
        self.calls = 0

    def __call__(self, *keys: str, model: str = "-S") -> list[Dataset]:
        """Run findscu with `keys`; the response identifiers it extracted (-X)."""
        self.calls += 1
        out = self.folder / f"find-{self.calls}"
        out.mkdir()
        args = [arg for key in keys for arg in ("-k", key)]
        self.output = self.pacs.tool("findscu", "FINDSCU", "-v", model, "-X", "-od", out, *args)
        return [read(path) for path in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def find(pacs: Pacs, sent: Sent, tmp_path: Path) -> Finder:
    return Finder(pacs, tmp_path)


def test_find_study_root_study_level_wildcard_and_range(find: Finder, sent: Sent) -> None:
    found = find(
        "QueryRetrieveLevel=STUDY",
        f"PatientName=DIMSE^{sent.tag[:4]}*",
        "StudyDate=20240101-",
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyDescription",
        "RetrieveAETitle",
    )
    assert len(found) == 1
    (study,) = found
    assert study.QueryRetrieveLevel == "STUDY"
    assert study.StudyInstanceUID == sent.study
    assert study.PatientName == f"DIMSE^{sent.tag}"
    assert study.StudyDate == "20240315"
    assert study.AccessionNumber == f"A{sent.tag}"
    assert sorted(study.ModalitiesInStudy) == ["CT", "MR"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 4)
    assert study.StudyDescription == "Test study"
    assert study.RetrieveAETitle == "PACS"
    assert "SpecificCharacterSet" not in study  # all ASCII
    # Only the keys asked for (and the level's unique key) come back.
    assert {e.keyword for e in study} == {
        "QueryRetrieveLevel",
        "PatientName",
        "StudyDate",
        "StudyInstanceUID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyDescription",
        "RetrieveAETitle",
    }


def test_find_ranges_that_exclude_the_study(find: Finder, sent: Sent) -> None:
    assert (
        find("QueryRetrieveLevel=STUDY", f"PatientID=DIMSE-{sent.tag}", "StudyDate=-20231231") == []
    )
    assert find("QueryRetrieveLevel=STUDY", f"PatientID=DIMSE-{sent.tag}", "StudyTime=1000-") == []
    assert (
        len(find("QueryRetrieveLevel=STUDY", f"PatientID=DIMSE-{sent.tag}", "StudyTime=0900-1000"))
        == 1
    )


def test_find_modalities_wildcard_matches_within_one_value(find: Finder, sent: Sent) -> None:
    # The study holds CT and MR: "C*R" spans two values and must not match (PS3.4 C.2.2.2.4).
    def found(modalities: str) -> int:
        keys = ("QueryRetrieveLevel=STUDY", f"PatientID=DIMSE-{sent.tag}")
        return len(find(*keys, f"ModalitiesInStudy={modalities}"))

    assert found("C*R") == 0
    assert (found("M?"), found("CT"), found("*T")) == (1, 1, 1)


def test_find_study_root_series_level(find: Finder, sent: Sent) -> None:
    found = find(
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={sent.study}",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    )
    by_number = {int(ds.SeriesNumber): ds for ds in found}
    assert sorted(by_number) == [1, 2]
    assert [by_number[n].SeriesInstanceUID for n in (1, 2)] == list(sent.series)
    assert [by_number[n].Modality for n in (1, 2)] == ["CT", "MR"]
    assert all(ds.NumberOfSeriesRelatedInstances == 2 for ds in found)
    assert all(ds.StudyInstanceUID == sent.study for ds in found)
    assert find("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={sent.study}", "Modality=M?") != []
    assert (
        len(find("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={sent.study}", "Modality=MR")) == 1
    )


def test_find_study_root_image_level_uid_list(find: Finder, sent: Sent) -> None:
    wanted = list(sent.in_study())[:3]
    found = find(
        "QueryRetrieveLevel=IMAGE",
        "SOPInstanceUID=" + "\\".join(wanted),
        "SOPClassUID",
        "InstanceNumber",
        "SeriesInstanceUID",
    )
    assert sorted(ds.SOPInstanceUID for ds in found) == sorted(wanted)
    for ds in found:
        original = read(sent.files[ds.SOPInstanceUID])
        assert ds.SOPClassUID == original.SOPClassUID
        assert ds.InstanceNumber == original.InstanceNumber
        assert ds.SeriesInstanceUID == original.SeriesInstanceUID
        assert ds.QueryRetrieveLevel == "IMAGE"


def test_find_patient_root_every_level(find: Finder, sent: Sent) -> None:
    patient_id = f"DIMSE-{sent.tag}"
    patients = find(
        "QueryRetrieveLevel=PATIENT",
        f"PatientID={patient_id}",
        "PatientName",
        "PatientBirthDate",
        "NumberOfPatientRelatedStudies",
        model="-P",
    )
    assert len(patients) == 1
    assert patients[0].PatientName == f"DIMSE^{sent.tag}"
    assert patients[0].PatientBirthDate == "19700101"
    assert patients[0].NumberOfPatientRelatedStudies == 1
    studies = find(
        "QueryRetrieveLevel=STUDY", f"PatientID={patient_id}", "StudyInstanceUID", model="-P"
    )
    assert [ds.StudyInstanceUID for ds in studies] == [sent.study]
    assert studies[0].PatientID == patient_id  # unique key of the level above
    series = find(
        "QueryRetrieveLevel=SERIES",
        f"PatientID={patient_id}",
        f"StudyInstanceUID={sent.study}",
        model="-P",
    )
    assert sorted(ds.SeriesInstanceUID for ds in series) == sorted(sent.series)
    images = find(
        "QueryRetrieveLevel=IMAGE",
        f"PatientID={patient_id}",
        f"StudyInstanceUID={sent.study}",
        f"SeriesInstanceUID={sent.series[0]}",
        model="-P",
    )
    assert sorted(ds.SOPInstanceUID for ds in images) == sorted(
        uid
        for uid, path in sent.in_study().items()
        if read(path).SeriesInstanceUID == sent.series[0]
    )


def test_find_patient_level_in_study_root_is_refused(find: Finder) -> None:
    assert find("QueryRetrieveLevel=PATIENT", "PatientID=X") == []
    # A900, which DCMTK names after the storage status of the same code.
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in find.output
    assert "not a level of the Study Root information model" in find.pacs.log.read_text()


def test_find_a_key_below_the_level_is_refused(find: Finder) -> None:
    assert find("QueryRetrieveLevel=STUDY", "Modality=CT") == []
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in find.output
    assert "belongs to the series level, below a study query" in find.pacs.log.read_text()


def test_a_refused_find_keeps_the_callers_value_out_of_the_log(find: Finder) -> None:
    """Issue 10: a rejected birth-date range was written to the log (patient data)."""
    assert find("QueryRetrieveLevel=STUDY", "PatientBirthDate=19770704-1977XX31") == []
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in find.output
    log = find.pacs.log.read_text()
    assert "C-FIND from FINDSCU@" in log and "has an invalid value" in log
    assert "19770704" not in log


def test_find_returns_utf8_for_non_ascii_names(find: Finder, sent: Sent) -> None:
    found = find("QueryRetrieveLevel=STUDY", f"PatientID=DIMSE-U-{sent.tag}", "PatientName")
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == "ISO_IR 192"
    assert found[0].PatientName == f"Jörg^Ünal{sent.tag}"
    assert found[0].StudyInstanceUID == sent.unicode_study


# -- C-MOVE, C-GET ---------------------------------------------------------------------


def moved_files(folder: Path) -> dict[str, bytes]:
    """SOP Instance UID -> file, for every file a destination wrote."""
    return {
        str(read(path).file_meta.MediaStorageSOPInstanceUID): path.read_bytes()
        for path in folder.iterdir()
    }


def assert_same_content(received: bytes, sent_file: Path) -> None:
    """Same instance, transfer syntax and pixel data as the file storescu was given."""
    original = read(sent_file)
    got = read(received)
    assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert got.SOPClassUID == original.SOPClassUID
    if "PixelData" in original:
        assert got.PixelData == original.PixelData


def assert_same_as_sent(received: bytes, sop: str, sent: Sent) -> None:
    """`received` is what storescu sent of `sop`, byte for byte in its dataset."""
    assert_same_content(received, sent.files[sop])
    assert split_part10(received)[1] == split_part10(sent.reference[sop])[1]


def test_movescu_study_to_storescp(pacs: Pacs, sent: Sent) -> None:
    output = pacs.move("-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={sent.study}")
    assert "Received Final Move Response (Success)" in output
    received = moved_files(pacs.moved)
    expected = sent.in_study()
    assert set(expected) <= set(received)
    for sop in expected:
        assert_same_as_sent(received[sop], sop, sent)


def test_movescu_compressed_instances_keep_their_transfer_syntax(pacs: Pacs, sent: Sent) -> None:
    corpus = {uid: path for uid, path in sent.files.items() if path.name in CORPUS}
    for sop, path in corpus.items():
        ds = read(path)
        output = pacs.move(
            "-P",
            "QueryRetrieveLevel=IMAGE",
            f"PatientID={ds.PatientID}",
            f"StudyInstanceUID={ds.StudyInstanceUID}",
            f"SeriesInstanceUID={ds.SeriesInstanceUID}",
            f"SOPInstanceUID={sop}",
        )
        assert "Received Final Move Response (Success)" in output, path.name
    received = moved_files(pacs.moved)
    for sop in corpus:
        assert_same_as_sent(received[sop], sop, sent)


def test_movescu_to_an_unknown_destination(pacs: Pacs, sent: Sent) -> None:
    done = run(
        "movescu", "-aet", "MOVESCU", "-aec", "PACS", "-v", "-S", "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent.study}",
        "127.0.0.1", str(pacs.port),
    )  # fmt: skip
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in done.stdout


def test_getscu_series(pacs: Pacs, sent: Sent, tmp_path: Path) -> None:
    output = pacs.tool(
        "getscu",
        "GETSCU",
        "-v",
        "-S",
        "-od",
        tmp_path,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={sent.study}",
        "-k",
        f"SeriesInstanceUID={sent.series[1]}",
    )
    assert "Number of Completed Suboperations : 2" in output
    assert "Number of Failed Suboperations    : 0" in output
    received = moved_files(tmp_path)
    expected = {
        uid: p for uid, p in sent.in_study().items() if read(p).SeriesInstanceUID == sent.series[1]
    }
    assert set(received) == set(expected)
    for sop in expected:
        assert_same_as_sent(received[sop], sop, sent)


NOTHING_MATCHED = "no stored instance matches the identifier"


def test_getscu_of_nothing_stored_is_a_failed_transfer(pacs: Pacs, tmp_path: Path) -> None:
    """Regression: a C-GET that matched nothing left no audit event."""
    pacs.tool(
        "getscu", "GETSCU", "-S", "-od", tmp_path,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={generate_uid()}",
    )  # fmt: skip
    assert not any(tmp_path.iterdir())
    with httpx.Client(base_url=f"{pacs.url}/dicomweb", timeout=30) as http:
        deadline = time.monotonic() + 10
        while True:
            found = http.get("audit", params={"user": "GETSCU", "limit": "20"}).json()
            failed = [e for e in found if e["reason"] == NOTHING_MATCHED]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert failed, found
    assert (failed[0]["action"], failed[0]["outcome"]) == ("instances-transferred", 4)
    assert failed[0]["aeTitle"] == "GETSCU" and failed[0]["destination"] is None


def test_getscu_whole_study_with_compressed_file(pacs: Pacs, sent: Sent, tmp_path: Path) -> None:
    path = next(p for p in sent.files.values() if p.name == "SC_rgb_rle.dcm")
    ds = read(path)
    # getscu proposes uncompressed syntaxes only unless told: propose RLE for this one.
    output = pacs.tool(
        "getscu",
        "GETSCU",
        "-v",
        "-S",
        "+xr",
        "-od",
        tmp_path,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={ds.StudyInstanceUID}",
    )
    assert "Number of Completed Suboperations : 1" in output, output
    assert_same_as_sent(moved_files(tmp_path)[str(ds.SOPInstanceUID)], str(ds.SOPInstanceUID), sent)


# -- across protocols --------------------------------------------------------------------


def test_stored_by_stow_found_by_findscu_and_sent_by_movescu(pacs: Pacs, find: Finder) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    study = generate_uid()
    files = [
        make_file(study=study, seed=n, InstanceNumber=n, PatientID=f"STOW-{tag}") for n in (1, 2, 3)
    ]
    content_type, body = encode_multipart(files)
    with httpx.Client(base_url=f"{pacs.url}/dicomweb") as http:
        response = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200
    found = find(
        "QueryRetrieveLevel=STUDY", f"PatientID=STOW-{tag}", "NumberOfStudyRelatedInstances"
    )
    assert [(ds.StudyInstanceUID, ds.NumberOfStudyRelatedInstances) for ds in found] == [(study, 3)]
    output = pacs.move("-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert "Received Final Move Response (Success)" in output
    received = moved_files(pacs.moved)
    for data in files:
        sop = str(read(data).SOPInstanceUID)
        assert split_part10(received[sop])[1] == split_part10(data)[1]


def test_association_from_an_unlisted_ae_is_rejected(pacs: Pacs) -> None:
    done = run("echoscu", "-aet", "INTRUDER", "-aec", "PACS", "127.0.0.1", str(pacs.port))
    assert done.returncode != 0
    assert "Association Rejected" in done.stdout
    assert "Calling AE Title Not Recognized" in done.stdout
    assert "calling AE title 'INTRUDER' is not allowed" in pacs.log.read_text()


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ae-title", "A_TITLE_TOO_LONG_"], "is not an AE title"),
        (["--move-destination", "STORESCP"], "expected NAME=host:port"),
        (["--move-destination", "X=host:0"], "0 is not a port"),
        (["--dimse-allow", "BAD\\AE"], "is not an AE title"),
    ],
)
def test_bad_dimse_settings_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--data", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("pacs: ") and message in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_dimse_port_in_use_is_one_line(pacs: Pacs, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app.cli", "serve", "--data", str(tmp_path)]
    command += ["--port", str(free_port()), "--dimse-port", str(pacs.port)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"pacs: cannot listen for DICOM associations on 127.0.0.1:{pacs.port}" in done.stderr
    assert "Traceback" not in done.stderr
