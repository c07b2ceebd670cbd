"""The DICOMDIR read back by pydicom's FileSet, by walking its offsets and by DCMTK."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from app.dicom.dicomdir import (
    DicomdirEntry,
    DicomdirError,
    build_dicomdir,
    file_id_for,
    leaf_record_type,
)
from tests.support.dicom_factory import make_dataset, to_bytes

ITEM_TAG = b"\xfe\xff\x00\xe0"
LOWER_LEVEL = {"PATIENT": "STUDY", "STUDY": "SERIES", "SERIES": None}


@dataclass(frozen=True)
class Instance:
    entry: DicomdirEntry
    data: bytes
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str


def bulk_uri(_: Any) -> str:
    return "https://pacs.example/bulk"


def instance_of(ds: Dataset, file_id: tuple[str, ...], data: bytes | None = None) -> Instance:
    """The entry of a dataset, its Part 10 bytes being `data` or those of `to_bytes`."""
    if data is None:
        data = to_bytes(ds)
    # Large values as BulkDataURI, like the metadata the archive stores.
    metadata = ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=bulk_uri)
    entry = DicomdirEntry(file_id, metadata, str(ds.file_meta.TransferSyntaxUID))
    uids = (ds.get(k, "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    return Instance(entry, data, ds.get("PatientID", ""), *uids)


def from_testdata(name: str, file_id: tuple[str, ...]) -> Instance:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom's test file {name} is missing"
    with warnings.catch_warnings():
        # rtdose.dcm references its plan by a UID with a leading zero in a component.
        warnings.filterwarnings("ignore", "Invalid value for VR UI", UserWarning)
        return instance_of(dcmread(path), file_id, Path(path).read_bytes())


def generated_corpus() -> list[Instance]:
    """2 patients, 3 studies, 5 series of generated CT images, entries interleaved."""
    layout = [
        # (patient id, patient name, study index, number of instances per series)
        ("PAT-A", "DOE^JANE", 1, [2, 1]),
        ("PAT-A", "DOE^JANE", 2, [3]),
        ("PAT-B", "MÜLLER^JÜRGEN", 3, [1, 2]),
    ]
    series_lists: list[list[Instance]] = []
    for patient_id, name, study_index, counts in layout:
        study_uid = generate_uid()
        for series_index, count in enumerate(counts, start=1):
            series_uid = generate_uid()
            instances = []
            for number in range(1, count + 1):
                ds = make_dataset(
                    study=study_uid,
                    series=series_uid,
                    PatientID=patient_id,
                    PatientName=name,
                    SeriesNumber=series_index,
                    InstanceNumber=number,
                    StudyDescription=f"Study {study_index}",
                    seed=number,
                )
                if not name.isascii():
                    ds.SpecificCharacterSet = "ISO_IR 100"
                instances.append(instance_of(ds, file_id_for(study_index, series_index, number)))
            series_lists.append(instances)
    # Round robin across series, so that the builder has to group them itself.
    interleaved: list[Instance] = []
    while any(series_lists):
        for instances in series_lists:
            if instances:
                interleaved.append(instances.pop(0))
    return interleaved


@pytest.fixture
def corpus() -> list[Instance]:
    return [
        *generated_corpus(),
        from_testdata("CT_small.dcm", ("DICOM", "CT")),
        from_testdata("test-SR.dcm", ("DICOM", "REPORTS", "SR1")),
        from_testdata("rtdose.dcm", ("DICOM", "RT", "DOSE1")),
    ]


@contextmanager
def file_set(dicomdir: Path) -> Iterator[FileSet]:
    fs = FileSet(dicomdir)
    try:
        yield fs
    finally:
        # FileSet's staging TemporaryDirectory is otherwise left to a ResourceWarning at exit.
        fs._stage["t"].cleanup()


def write_file_set(root: Path, instances: list[Instance], file_set_id: str = "") -> Path:
    dicomdir = root / "DICOMDIR"
    dicomdir.write_bytes(build_dicomdir([i.entry for i in instances], file_set_id))
    for instance in instances:
        path = root.joinpath(*instance.entry.file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(instance.data)
    return dicomdir


def test_fileset_finds_every_instance_in_its_place(tmp_path: Path, corpus: list[Instance]) -> None:
    with file_set(write_file_set(tmp_path, corpus, "PACS_EXPORT")) as fs:
        assert fs.ID == "PACS_EXPORT"
        assert len(fs) == len(corpus)
        found_studies = fs.find_values("StudyInstanceUID")
        found = {instance.sop_uid: fs.find(SOPInstanceUID=instance.sop_uid) for instance in corpus}
    assert sorted(found_studies) == sorted({i.study_uid for i in corpus})
    for instance in corpus:
        (found_instance,) = found[instance.sop_uid]
        assert Path(found_instance.path) == tmp_path.joinpath(*instance.entry.file_id)
        assert found_instance.load().SOPInstanceUID == instance.sop_uid
        assert found_instance.TransferSyntaxUID == instance.entry.transfer_syntax_uid
        kinds = [node.record_type for node in found_instance.node.reverse()]
        assert kinds[1:] == ["SERIES", "STUDY", "PATIENT"]
        # Each attribute is found in the record of its level.
        assert found_instance.SeriesInstanceUID == instance.series_uid
        assert found_instance.StudyInstanceUID == instance.study_uid
        if instance.patient_id:
            assert found_instance.PatientID == instance.patient_id


def test_hierarchy_groups_interleaved_entries(tmp_path: Path) -> None:
    corpus = generated_corpus()
    with file_set(write_file_set(tmp_path, corpus)) as fs:
        assert sorted(fs.find_values("PatientID")) == ["PAT-A", "PAT-B"]
        for patient_id in ("PAT-A", "PAT-B"):
            studies = fs.find_values("StudyInstanceUID", fs.find(PatientID=patient_id))
            expected = {i.study_uid for i in corpus if i.patient_id == patient_id}
            assert sorted(studies) == sorted(expected)
        for study_uid in {i.study_uid for i in corpus}:
            series = fs.find_values("SeriesInstanceUID", fs.find(StudyInstanceUID=study_uid))
            expected = {i.series_uid for i in corpus if i.study_uid == study_uid}
            assert sorted(series) == sorted(expected)
    # One PATIENT, STUDY and SERIES record each, however the entries were ordered.
    ds = dcmread(tmp_path / "DICOMDIR")
    types = [record.DirectoryRecordType for record in ds.DirectoryRecordSequence]
    assert types.count("PATIENT") == 2
    assert types.count("STUDY") == 3
    assert types.count("SERIES") == 5
    assert types.count("IMAGE") == len(corpus)


def walk(raw: bytes, ds: FileDataset, offset: int, parent: str | None) -> Iterator[Dataset]:
    """Records from `offset` on, following Next and Lower-Level offsets, checking each one."""
    by_offset = {record.seq_item_tell: record for record in ds.DirectoryRecordSequence}
    while offset:
        assert raw[offset : offset + 4] == ITEM_TAG, f"no item at offset {offset}"
        record = by_offset[offset]
        kind = record.DirectoryRecordType
        if parent is None:
            assert kind == "PATIENT"
        elif parent in LOWER_LEVEL:
            assert kind == LOWER_LEVEL[parent] or (parent == "SERIES" and kind != "SERIES")
        assert record.RecordInUseFlag == 0xFFFF
        yield record
        lower = record.OffsetOfReferencedLowerLevelDirectoryEntity
        if kind in LOWER_LEVEL:
            assert lower, f"{kind} record at {offset} has no lower-level records"
            yield from walk(raw, ds, lower, kind)
        else:
            assert lower == 0
        offset = record.OffsetOfTheNextDirectoryRecord


def test_offsets_reach_every_record_once(tmp_path: Path, corpus: list[Instance]) -> None:
    dicomdir = write_file_set(tmp_path, corpus)
    raw = dicomdir.read_bytes()
    ds = dcmread(dicomdir)

    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert raw[128:132] == b"DICM"
    assert ds.FileSetConsistencyFlag == 0
    visited = list(walk(raw, ds, ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity, None))
    assert len(visited) == len(ds.DirectoryRecordSequence)
    assert len({id(record) for record in visited}) == len(visited)
    patients = [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
    assert patients[-1].seq_item_tell == (ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity)
    assert patients[-1].OffsetOfTheNextDirectoryRecord == 0
    leaves = {tuple(r.ReferencedFileID) for r in visited if "ReferencedFileID" in r}
    assert leaves == {i.entry.file_id for i in corpus}


def test_record_keys_copied_from_metadata(tmp_path: Path) -> None:
    corpus = generated_corpus()
    ds = dcmread(write_file_set(tmp_path, corpus))
    records = ds.DirectoryRecordSequence
    first = corpus[0]
    source = dcmread(tmp_path.joinpath(*first.entry.file_id))

    (patient,) = [r for r in records if r.get("PatientID") == "PAT-A"]
    assert patient.PatientName == "DOE^JANE"
    assert "SpecificCharacterSet" not in patient
    (study,) = [r for r in records if r.get("StudyInstanceUID") == first.study_uid]
    for keyword in ("StudyDate", "StudyTime", "StudyDescription", "StudyID", "AccessionNumber"):
        assert study[keyword].value == source[keyword].value
    (series,) = [r for r in records if r.get("SeriesInstanceUID") == first.series_uid]
    assert (series.Modality, series.SeriesNumber) == ("CT", source.SeriesNumber)
    (image,) = [r for r in records if r.get("ReferencedSOPInstanceUIDInFile") == first.sop_uid]
    assert image.DirectoryRecordType == "IMAGE"
    assert image.InstanceNumber == source.InstanceNumber
    assert image.ReferencedSOPClassUIDInFile == source.SOPClassUID
    assert image.ReferencedTransferSyntaxUIDInFile == source.file_meta.TransferSyntaxUID
    assert list(image.ReferencedFileID) == list(first.entry.file_id)


def test_non_ascii_values_get_a_character_set(tmp_path: Path) -> None:
    ds = dcmread(write_file_set(tmp_path, generated_corpus()))
    (patient,) = [r for r in ds.DirectoryRecordSequence if r.get("PatientID") == "PAT-B"]
    assert patient.SpecificCharacterSet == "ISO_IR 192"
    assert str(patient.PatientName) == "MÜLLER^JÜRGEN"
    # The bytes are UTF-8, whatever character set the instance itself used.
    assert "MÜLLER^JÜRGEN".encode() in (tmp_path / "DICOMDIR").read_bytes()


def test_sr_and_rt_dose_get_their_record_types(tmp_path: Path) -> None:
    sr = from_testdata("test-SR.dcm", ("SR1",))
    dose = from_testdata("rtdose.dcm", ("DOSE1",))
    ds = dcmread(write_file_set(tmp_path, [sr, dose]))
    leaves = {
        r.DirectoryRecordType: r
        for r in ds.DirectoryRecordSequence
        if "ReferencedSOPInstanceUIDInFile" in r
    }
    source = dcmread(get_testdata_file("test-SR.dcm"))
    record = leaves["SR DOCUMENT"]
    for keyword in ("CompletionFlag", "VerificationFlag", "ContentDate", "ContentTime"):
        assert record[keyword].value == source[keyword].value
    # VERIFIED: the latest Verification DateTime of the Verifying Observer Sequence (F.5.24)
    assert source.VerificationFlag == "VERIFIED"
    latest = max(item.VerificationDateTime for item in source.VerifyingObserverSequence)
    assert record.VerificationDateTime == latest
    assert record.ConceptNameCodeSequence[0].CodeValue == (
        source.ConceptNameCodeSequence[0].CodeValue
    )
    assert leaves["RT DOSE"].DoseSummationType == dcmread(get_testdata_file("rtdose.dcm")).get(
        "DoseSummationType"
    )


@pytest.mark.parametrize(
    ("sop_class", "record_type"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "IMAGE"),  # CT Image
        ("1.2.840.10008.5.1.4.1.1.66.4", "IMAGE"),  # Segmentation
        ("1.2.840.10008.5.1.4.1.1.88.11", "SR DOCUMENT"),  # Basic Text SR
        ("1.2.840.10008.5.1.4.1.1.88.67", "SR DOCUMENT"),  # X-Ray Radiation Dose SR
        ("1.2.840.10008.5.1.4.1.1.88.59", "KEY OBJECT DOC"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "PRESENTATION"),  # Grayscale Softcopy PS
        ("1.2.840.10008.5.1.4.1.1.9.1.1", "WAVEFORM"),  # 12-lead ECG
        ("1.2.840.10008.5.1.4.1.1.104.1", "ENCAP DOC"),  # Encapsulated PDF
        ("1.2.840.10008.5.1.4.1.1.481.2", "RT DOSE"),
        ("1.2.840.10008.5.1.4.1.1.481.5", "RT PLAN"),
        ("1.2.840.10008.5.1.4.1.1.66", "RAW DATA"),
        ("1.2.840.10008.5.1.4.1.1.66.1", "REGISTRATION"),
        ("1.2.3.4.5", "IMAGE"),  # unknown (private) SOP Class
    ],
)
def test_leaf_record_type(sop_class: str, record_type: str) -> None:
    assert leaf_record_type(sop_class) == record_type


def test_missing_type_1_values_are_invented_and_type_2_left_empty(tmp_path: Path) -> None:
    ds = make_dataset(SeriesDate="20230405", SeriesTime="090000")
    for keyword in (
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "StudyDescription",
        "Modality",
        "SeriesNumber",
        "InstanceNumber",
    ):
        delattr(ds, keyword)
    instance = instance_of(ds, ("IM1",))
    with_id = make_dataset(study=ds.StudyInstanceUID, series=generate_uid(), StudyID="7")
    other = instance_of(with_id, ("IM2",))

    out = dcmread(write_file_set(tmp_path, [instance, other]))
    records = {r.DirectoryRecordType: r for r in out.DirectoryRecordSequence[:4]}
    patient, study, series, image = (records[t] for t in ("PATIENT", "STUDY", "SERIES", "IMAGE"))
    assert patient.PatientID == "PAT000001"
    assert patient.PatientName == ""  # type 2: present, empty
    assert (study.StudyDate, study.StudyTime) == ("20230405", "090000")  # from the series
    assert study.StudyID == "STUDY000001"
    assert study.AccessionNumber == "" and study.StudyDescription == ""
    assert (series.Modality, series.SeriesNumber) == ("OT", 1)
    assert image.InstanceNumber == 1
    # The second instance has another patient (an ID), same study UID under the first
    # patient: a study belongs to the patient of its first instance.
    assert [r.DirectoryRecordType for r in out.DirectoryRecordSequence] == [
        "PATIENT",
        "STUDY",
        "SERIES",
        "IMAGE",
        "SERIES",
        "IMAGE",
        "PATIENT",
    ]
    second_series = out.DirectoryRecordSequence[4]
    assert second_series.SeriesNumber == with_id.SeriesNumber


def test_study_date_without_any_date_gets_placeholder(tmp_path: Path) -> None:
    ds = make_dataset()
    del ds.StudyDate, ds.StudyTime
    out = dcmread(write_file_set(tmp_path, [instance_of(ds, ("IM1",))]))
    study = out.DirectoryRecordSequence[1]
    assert (study.StudyDate, study.StudyTime) == ("19000101", "000000")


def test_bulk_data_in_sequences_is_ignored(tmp_path: Path) -> None:
    ds = make_dataset(rows=16, columns=16)  # 512 bytes of Pixel Data: a BulkDataURI
    item = Dataset()
    item.CodeValue = "113000"
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = "Of Interest"
    item.TextValue = "a long text stored as bulk data"
    ds.ConceptNameCodeSequence = [item]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection
    ds.ContentDate, ds.ContentTime = "20240102", "101500"
    instance = instance_of(ds, ("KO1",))
    # The archive's metadata may hold a BulkDataURI for a UT value (PS3.18 F.2.2), nested too.
    text = {"vr": "UT", "BulkDataURI": "https://pacs.example/bulk/1"}
    instance.entry.metadata["0040A043"]["Value"][0]["0040A160"] = text
    assert "BulkDataURI" in instance.entry.metadata["7FE00010"]

    out = dcmread(write_file_set(tmp_path, [instance]))
    record = out.DirectoryRecordSequence[3]
    assert record.DirectoryRecordType == "KEY OBJECT DOC"
    (concept,) = record.ConceptNameCodeSequence
    assert (concept.CodeValue, concept.CodeMeaning) == ("113000", "Of Interest")
    assert concept.TextValue == ""


def test_same_entries_same_bytes(corpus: list[Instance]) -> None:
    entries = [i.entry for i in corpus]
    assert build_dicomdir(entries, "A") == build_dicomdir(entries, "A")
    assert build_dicomdir(entries, "A") != build_dicomdir(entries, "B")


def test_empty_file_set(tmp_path: Path) -> None:
    dicomdir = write_file_set(tmp_path, [])
    ds = dcmread(dicomdir)
    assert ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == 0
    assert ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity == 0
    assert len(ds.DirectoryRecordSequence) == 0
    with file_set(dicomdir) as fs:
        assert len(fs) == 0


def test_file_id_for() -> None:
    assert file_id_for(1, 22, 333) == ("DICOM", "ST000001", "SE000022", "IM000333")
    assert file_id_for(0, 0, 999_999)[-1] == "IM999999"
    for bad in ((-1, 0, 0), (0, 1_000_000, 0)):
        with pytest.raises(DicomdirError, match="between 0 and 999999"):
            file_id_for(*bad)


@pytest.mark.parametrize(
    "file_id",
    [(), ("dicom",), ("TOOLONGNAME",), ("A.DCM",), ("A",) * 9, ("",), ("Ä",)],
)
def test_bad_file_ids_are_refused(file_id: tuple[str, ...]) -> None:
    ds = make_dataset()
    entry = instance_of(ds, file_id).entry
    with pytest.raises(DicomdirError, match="File ID"):
        build_dicomdir([entry])


@pytest.mark.parametrize("file_set_id", ["lower", "X" * 17, "A-B"])
def test_bad_file_set_ids_are_refused(file_set_id: str) -> None:
    with pytest.raises(DicomdirError, match="File-set ID"):
        build_dicomdir([], file_set_id)


def test_instance_without_series_uid_is_refused() -> None:
    ds = make_dataset()
    del ds.SeriesInstanceUID
    entry = instance_of(ds, ("IM1",)).entry
    with pytest.raises(DicomdirError, match="IM1 has no SeriesInstanceUID"):
        build_dicomdir([entry])


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"DCMTK's {tool} is required in CI")
        pytest.skip(f"DCMTK's {tool} is not installed")
    return path


def test_dcmtk_dcmdump_lists_referenced_files(tmp_path: Path, corpus: list[Instance]) -> None:
    dcmdump = dcmtk("dcmdump")
    dicomdir = write_file_set(tmp_path, corpus)
    dumped = subprocess.run(
        [dcmdump, "+P", "0004,1500", str(dicomdir)], capture_output=True, text=True, check=False
    )
    assert dumped.returncode == 0, dumped.stderr
    # e.g. (0004,1500) CS [DICOM\ST000001\SE000001\IM000001]   #  32, 4  ReferencedFileID
    listed = {
        tuple(line.split("[", 1)[1].split("]", 1)[0].split("\\"))
        for line in dumped.stdout.splitlines()
        if line.startswith("(0004,1500)")
    }
    assert listed == {i.entry.file_id for i in corpus}
    # dcmdump reports structural problems (bad lengths, offsets past the end) on stderr.
    assert "E:" not in dumped.stderr


def summary(dicomdir: Path) -> list[tuple[str, str]]:
    """Each record as (type, the UID or ID that identifies it)."""
    keys = ("ReferencedSOPInstanceUIDInFile", "SeriesInstanceUID", "StudyInstanceUID")
    records = dcmread(dicomdir).DirectoryRecordSequence
    return sorted(
        (r.DirectoryRecordType, next((r[k].value for k in keys if k in r), r.get("PatientID")))
        for r in records
    )


def test_dcmtk_dcmmkdir_finds_every_record(tmp_path: Path, corpus: list[Instance]) -> None:
    # DCMTK follows our offsets to load the DICOMDIR, then adds the same files again: records
    # it failed to find through the offsets would be added a second time.
    dcmmkdir = dcmtk("dcmmkdir")
    dicomdir = write_file_set(tmp_path, corpus)
    before = summary(dicomdir)
    files = ["/".join(i.entry.file_id) for i in corpus]
    # +U update, +I invent what test-SR.dcm lacks, -Nxc accept rtdose.dcm's Implicit VR.
    updated = subprocess.run(
        [dcmmkdir, "+U", "+I", "-Nxc", "+D", "DICOMDIR", *files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    output = updated.stdout + updated.stderr
    assert updated.returncode == 0, output
    assert "E:" not in output
    assert summary(dicomdir) == before
    # 2 + 3 patients, 3 + 3 studies, 5 + 3 series (generated + pydicom's files), the leaves
    assert len(before) == 5 + 6 + 8 + len(corpus)


def test_item_lengths_are_explicit(tmp_path: Path, corpus: list[Instance]) -> None:
    # Explicit lengths let readers skip records without parsing them; check each one.
    dicomdir = write_file_set(tmp_path, corpus)
    raw = dicomdir.read_bytes()
    ds = dcmread(dicomdir)
    records = ds.DirectoryRecordSequence
    for record, following in zip(records, [*records[1:], None], strict=True):
        (length,) = struct.unpack_from("<I", raw, record.seq_item_tell + 4)
        end = record.seq_item_tell + 8 + length
        assert end == (following.seq_item_tell if following is not None else len(raw))
