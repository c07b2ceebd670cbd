"""DICOMDIR of a File-set (PS3.10 Section 8, Basic Directory IOD of PS3.3 Annex F).

The DICOMDIR is built from the instances' DICOM JSON only: the instance files themselves are
written elsewhere (into a ZIP, say) at the File IDs their entries name. Records form the
PATIENT -> STUDY -> SERIES -> leaf hierarchy of PS3.3 F.4, with the keys of PS3.3 F.5. Type 1
keys an instance lacks are filled in the way DCMTK's dcmgpdir does with `--invent`, type 2
keys are present and empty, so the DICOMDIR stays valid whatever the instances hold.

Records are encoded one by one so that each record's byte offset is known: offsets are UL
values of fixed size, so encoding twice (offsets zero, then the real ones) gives the same
lengths and the offsets found by the first pass are right for the second.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# The archive's implementation identity, as in app/dimse/store.py (PS3.7 D.3.3.2).

# A File ID component: 1 to 8 characters of the ISO 646 subset of PS3.10 8.2; at most 8.
_FILE_ID_COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")
_MAX_FILE_ID_COMPONENTS = 8
_MAX_INDEX = 999_999
# File-set ID is CS (PS3.5 6.2): upper case letters, digits, space and underscore.
_FILE_SET_ID = re.compile(r"[A-Z0-9_ ]{0,16}")
_UTF8 = "ISO_IR 192"
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_ITEM = struct.Struct("<HHI")
_SEQUENCE_HEADER = struct.Struct("<HH2s2xI")


class DicomdirError(ValueError):
    """The entries cannot make a DICOMDIR (a bad File ID, an instance without UIDs...)."""


@dataclass(frozen=True)
class DicomdirEntry:
    """One instance of the File-set: where its file is and what it holds."""

    file_id: tuple[str, ...]  # Referenced File ID components, e.g. ("DICOM", "ST000001", ...)
    metadata: dict[str, Any]  # the instance's DICOM JSON (PS3.18 F); bulk data is ignored
    transfer_syntax_uid: str


def file_id_for(study_index: int, series_index: int, instance_index: int) -> tuple[str, ...]:
    """("DICOM", "ST%06d", "SE%06d", "IM%06d"): components of at most 8 characters of
    A-Z, 0-9 and _ as PS3.10 8.2 requires, so any reader of the media can open them."""
    for index in (study_index, series_index, instance_index):
        if not 0 <= index <= _MAX_INDEX:
            raise DicomdirError(f"a File ID index must be between 0 and {_MAX_INDEX}: {index}")
    return ("DICOM", f"ST{study_index:06d}", f"SE{series_index:06d}", f"IM{instance_index:06d}")


@dataclass
class _Node:
    """A directory record and the records of its lower-level directory entity."""

    record: Dataset
    children: list[_Node] = field(default_factory=list)
    offset: int = 0


class _Instance:
    """An entry's DICOM JSON by tag number, with the values a record takes from it."""

    def __init__(self, entry: DicomdirEntry) -> None:
        self.entry = entry
        self.elements: dict[int, Any] = {
            int(key.replace(" ", ""), 16): value for key, value in entry.metadata.items()
        }
        self.sop_class_uid = self._uid("SOPClassUID")
        self.sop_instance_uid = self._uid("SOPInstanceUID")
        self.study_uid = self._uid("StudyInstanceUID")
        self.series_uid = self._uid("SeriesInstanceUID")

    def _uid(self, keyword: str) -> str:
        value = self.text(keyword)
        if not value:
            file_id = "/".join(self.entry.file_id)
            raise DicomdirError(f"the instance at {file_id} has no {keyword} in its metadata")
        return value

    def text(self, keyword: str) -> str:
        """The first value of a string attribute, "" when absent or empty."""
        element = self.elements.get(_tag(keyword))
        values = element.get("Value") if isinstance(element, dict) else None
        if not values:
            return ""
        first = values[0]
        if isinstance(first, dict):  # PN
            return str(first.get("Alphabetic", ""))
        return "" if first is None else str(first)

    def first_text(self, *keywords: str) -> str:
        return next((value for keyword in keywords if (value := self.text(keyword))), "")

    def latest_verification(self) -> str:
        """The most recent Verification DateTime of the Verifying Observer Sequence."""
        element = self.elements.get(_tag("VerifyingObserverSequence"))
        items = element.get("Value") if isinstance(element, dict) else None
        times = [
            str(values[0])
            for item in items or []
            if isinstance(item, dict) and (values := item.get("0040A030", {}).get("Value"))
        ]
        return max(times, default="")

    def dataset(self, keywords: Sequence[str]) -> Dataset:
        """A Dataset of the attributes named that the metadata holds, bulk data left out."""
        selected = {
            f"{tag:08X}": _without_bulk_data(self.elements[tag])
            for tag in map(_tag, keywords)
            if tag in self.elements
        }
        try:
            return Dataset.from_json(selected)
        except (ValueError, TypeError, KeyError) as error:
            raise DicomdirError(
                f"the metadata of instance {self.sop_instance_uid} cannot be read: {error}"
            ) from error


# Values for type 1 keys the instance lacks: (instance, 1-based position among siblings).
Invent = Callable[[_Instance, int], Any]

_INVENTED: dict[str, Invent] = {
    "PatientID": lambda _, n: f"PAT{n:06d}",
    "StudyDate": lambda i, _: (
        i.first_text("SeriesDate", "AcquisitionDate", "ContentDate") or "19000101"
    ),
    "StudyTime": lambda i, _: (
        i.first_text("SeriesTime", "AcquisitionTime", "ContentTime") or "000000"
    ),
    "StudyID": lambda _, n: f"STUDY{n:06d}",
    "Modality": lambda _, __: "OT",
    "SeriesNumber": lambda _, n: n,
    "InstanceNumber": lambda _, n: n,
    "ContentDate": lambda i, _: i.first_text("StudyDate") or "19000101",
    "ContentTime": lambda i, _: i.first_text("StudyTime") or "000000",
    "PresentationCreationDate": lambda i, _: i.first_text("ContentDate", "StudyDate") or "19000101",
    "PresentationCreationTime": lambda i, _: i.first_text("ContentTime", "StudyTime") or "000000",
    "CompletionFlag": lambda _, __: "PARTIAL",
    "VerificationFlag": lambda _, __: "UNVERIFIED",
    "ContentLabel": lambda _, n: f"CONTENT{n}",
}

_CONTENT_IDENTIFICATION = (
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "ContentLabel",
    "ContentDescription",
    "ContentCreatorName",
)
# Keys of each record type (PS3.3 F.5): type 1 keys are invented when _INVENTED knows how,
# the others are present, empty when the instance has no value.
_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID"),
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "StudyInstanceUID",
        "StudyID",
        "AccessionNumber",
    ),
    "SERIES": ("Modality", "SeriesInstanceUID", "SeriesNumber"),
    "IMAGE": ("InstanceNumber",),
    "SR DOCUMENT": (
        "InstanceNumber",
        "CompletionFlag",
        "VerificationFlag",
        "ContentDate",
        "ContentTime",
        "ConceptNameCodeSequence",
    ),
    "KEY OBJECT DOC": ("InstanceNumber", "ContentDate", "ContentTime", "ConceptNameCodeSequence"),
    "PRESENTATION": (
        "PresentationCreationDate",
        "PresentationCreationTime",
        "InstanceNumber",
        "ContentLabel",
        "ContentDescription",
        "ContentCreatorName",
    ),
    "ENCAP DOC": (
        "ContentDate",
        "ContentTime",
        "InstanceNumber",
        "DocumentTitle",
        "ConceptNameCodeSequence",
        "MIMETypeOfEncapsulatedDocument",
    ),
    "RT DOSE": ("InstanceNumber", "DoseSummationType"),
    "RT STRUCTURE SET": (
        "InstanceNumber",
        "StructureSetLabel",
        "StructureSetDate",
        "StructureSetTime",
    ),
    "RT PLAN": ("InstanceNumber", "RTPlanLabel", "RTPlanDate", "RTPlanTime"),
    "RT TREAT RECORD": ("InstanceNumber", "TreatmentDate", "TreatmentTime"),
    "WAVEFORM": ("InstanceNumber", "ContentDate", "ContentTime"),
    "RAW DATA": ("InstanceNumber", "ContentDate", "ContentTime"),
    "REGISTRATION": _CONTENT_IDENTIFICATION,
    "FIDUCIAL": _CONTENT_IDENTIFICATION,
    "VALUE MAP": _CONTENT_IDENTIFICATION,
}

# Type 1C keys copied when the instance has them (their conditions hold exactly then).
_CONDITIONAL_KEYS: dict[str, tuple[str, ...]] = {
    "PRESENTATION": ("ReferencedSeriesSequence", "BlendingSequence"),
    "ENCAP DOC": ("HL7InstanceIdentifier",),
}
# Type 2 in a record although type 1 for other leaves (PS3.3 F.5 Raw Data Keys).
_TYPE_2 = {"RAW DATA": frozenset({"InstanceNumber"})}

# Leaf record type by SOP Class keyword (PS3.3 F.4), then by keyword suffix; IMAGE otherwise.
_RECORD_TYPES = {
    "KeyObjectSelectionDocumentStorage": "KEY OBJECT DOC",
    "ProcedureLogStorage": "SR DOCUMENT",
    "SpectaclePrescriptionReportStorage": "SR DOCUMENT",
    "MacularGridThicknessAndVolumeReportStorage": "SR DOCUMENT",
    "BasicStructuredDisplayStorage": "PRESENTATION",
    "EncapsulatedPDFStorage": "ENCAP DOC",
    "EncapsulatedCDAStorage": "ENCAP DOC",
    "EncapsulatedSTLStorage": "ENCAP DOC",
    "EncapsulatedOBJStorage": "ENCAP DOC",
    "EncapsulatedMTLStorage": "ENCAP DOC",
    "RTDoseStorage": "RT DOSE",
    "RTStructureSetStorage": "RT STRUCTURE SET",
    "RTPlanStorage": "RT PLAN",
    "RTIonPlanStorage": "RT PLAN",
    "RTBeamsTreatmentRecordStorage": "RT TREAT RECORD",
    "RTBrachyTreatmentRecordStorage": "RT TREAT RECORD",
    "RTTreatmentSummaryRecordStorage": "RT TREAT RECORD",
    "RTIonBeamsTreatmentRecordStorage": "RT TREAT RECORD",
    "RawDataStorage": "RAW DATA",
    "SpatialRegistrationStorage": "REGISTRATION",
    "DeformableSpatialRegistrationStorage": "REGISTRATION",
    "SpatialFiducialsStorage": "FIDUCIAL",
    "RealWorldValueMappingStorage": "VALUE MAP",
}
_RECORD_TYPE_SUFFIXES = (
    ("SRStorage", "SR DOCUMENT"),
    ("PresentationStateStorage", "PRESENTATION"),
    ("WaveformStorage", "WAVEFORM"),
)


def leaf_record_type(sop_class_uid: str) -> str:
    """The Directory Record Type (0004,1430) of an instance of the SOP Class."""
    keyword = UID(sop_class_uid).keyword
    if keyword in _RECORD_TYPES:
        return _RECORD_TYPES[keyword]
    for suffix, record_type in _RECORD_TYPE_SUFFIXES:
        if keyword.endswith(suffix):
            return record_type
    return "IMAGE"


def build_dicomdir(entries: Sequence[DicomdirEntry], file_set_id: str = "") -> bytes:
    """A complete DICOMDIR file: preamble, File Meta Information (Media Storage Directory
    Storage, Explicit VR Little Endian) and the Basic Directory IOD with one PATIENT, STUDY and
    SERIES record per patient, study and series and one leaf record per entry."""
    if not _FILE_SET_ID.fullmatch(file_set_id):
        raise DicomdirError(
            f"File-set ID {file_set_id!r} must be at most 16 upper case letters, digits, "
            "spaces or underscores"
        )
    instances = [_Instance(_checked(entry)) for entry in entries]
    patients = _hierarchy(instances)
    nodes = _depth_first(patients)

    head = _head(file_set_id, instances, first=0, last=0)
    # First pass: lengths with zero offsets give every record's position.
    position = len(head) + _SEQUENCE_HEADER.size
    for node in nodes:
        node.offset = position
        position += _ITEM.size + len(_encode(node.record))
    # Second pass: the same lengths (UL offsets have a fixed size) with the real offsets.
    for siblings in [patients, *(node.children for node in nodes)]:
        for index, node in enumerate(siblings):
            following = siblings[index + 1].offset if index + 1 < len(siblings) else 0
            node.record.OffsetOfTheNextDirectoryRecord = following
            lower = node.children[0].offset if node.children else 0
            node.record.OffsetOfReferencedLowerLevelDirectoryEntity = lower
    items = b"".join(_item(_encode(node.record)) for node in nodes)
    if patients:
        head = _head(file_set_id, instances, first=patients[0].offset, last=patients[-1].offset)
    sequence = _SEQUENCE_HEADER.pack(0x0004, 0x1220, b"SQ", len(items))
    return head + sequence + items


def _checked(entry: DicomdirEntry) -> DicomdirEntry:
    components = entry.file_id
    if not 0 < len(components) <= _MAX_FILE_ID_COMPONENTS or not all(
        _FILE_ID_COMPONENT.fullmatch(component) for component in components
    ):
        raise DicomdirError(
            f"File ID {'/'.join(components)!r} must have 1 to 8 components of 1 to 8 upper "
            "case letters, digits or underscores"
        )
    return entry


def _hierarchy(instances: Sequence[_Instance]) -> list[_Node]:
    """PATIENT nodes in order of first appearance, each with its studies, series, leaves.

    Patient ID identifies a patient, or Patient's Name when there is no ID (as dcmgpdir does);
    a study or series belongs to the patient or study of its first instance."""
    patients: dict[tuple[str, str], _Node] = {}
    studies: dict[str, _Node] = {}
    series: dict[str, _Node] = {}
    for instance in instances:
        patient_id = instance.text("PatientID")
        key = (patient_id, "" if patient_id else instance.text("PatientName"))
        if key not in patients:
            patients[key] = _Node(_record("PATIENT", instance, len(patients) + 1))
        if instance.study_uid not in studies:
            parent = patients[key]
            node = _Node(_record("STUDY", instance, len(parent.children) + 1))
            parent.children.append(node)
            studies[instance.study_uid] = node
        if instance.series_uid not in series:
            parent = studies[instance.study_uid]
            node = _Node(_record("SERIES", instance, len(parent.children) + 1))
            parent.children.append(node)
            series[instance.series_uid] = node
        parent = series[instance.series_uid]
        leaf = _record(leaf_record_type(instance.sop_class_uid), instance, len(parent.children) + 1)
        leaf.ReferencedFileID = list(instance.entry.file_id)
        leaf.ReferencedSOPClassUIDInFile = instance.sop_class_uid
        leaf.ReferencedSOPInstanceUIDInFile = instance.sop_instance_uid
        leaf.ReferencedTransferSyntaxUIDInFile = instance.entry.transfer_syntax_uid
        parent.children.append(_Node(leaf))
    return list(patients.values())


def _record(record_type: str, instance: _Instance, position: int) -> Dataset:
    """A directory record of the type with its keys taken from the instance."""
    keys = _KEYS[record_type]
    record = instance.dataset([*keys, *_CONDITIONAL_KEYS.get(record_type, ())])
    type_2 = _TYPE_2.get(record_type, frozenset())
    for keyword in keys:
        if keyword in record and not record[keyword].is_empty:
            continue
        invent = None if keyword in type_2 else _INVENTED.get(keyword)
        if invent is not None:
            setattr(record, keyword, invent(instance, position))
        elif keyword not in record:
            setattr(record, keyword, [] if dictionary_VR(keyword) == "SQ" else None)
    # 1C when verified: the latest one, found in the Verifying Observer Sequence (F.5.24).
    verified = record_type == "SR DOCUMENT" and record.VerificationFlag == "VERIFIED"
    if verified and (latest := instance.latest_verification()):
        record.VerificationDateTime = latest
    if not _is_ascii(record):
        # Values are decoded text: UTF-8 encodes them all (Specific Character Set, F.3-3).
        record.SpecificCharacterSet = _UTF8
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = record_type
    return record


def _depth_first(nodes: Sequence[_Node]) -> list[_Node]:
    """Records in the order they are encoded: each one followed by its lower-level entity."""
    ordered: list[_Node] = []
    for node in nodes:
        ordered.append(node)
        ordered.extend(_depth_first(node.children))
    return ordered


def _head(file_set_id: str, instances: Sequence[_Instance], *, first: int, last: int) -> bytes:
    """Preamble, File Meta Information and the root attributes before the record sequence."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    # Derived from the content, so that the same File-set gets the same DICOMDIR.
    sources = [file_set_id] + [
        f"{i.sop_instance_uid}={'/'.join(i.entry.file_id)}" for i in instances
    ]
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=sources)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    root = Dataset()
    root.FileSetID = file_set_id or None
    root.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    root.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    root.FileSetConsistencyFlag = 0x0000  # no known inconsistencies
    fp = _buffer()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, root)
    return fp.getvalue()


def _encode(record: Dataset) -> bytes:
    fp = _buffer()
    write_dataset(fp, record)
    return fp.getvalue()


def _item(body: bytes) -> bytes:
    return _ITEM.pack(0xFFFE, 0xE000, len(body)) + body


def _buffer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo in the tables above
        raise KeyError(keyword)
    return tag


def _without_bulk_data(element: Any) -> Any:
    """A DICOM JSON element with BulkDataURI values, also inside sequences, made empty."""
    if not isinstance(element, Mapping):
        return element
    if "BulkDataURI" in element:
        return {"vr": element.get("vr", "UN")}
    if element.get("vr") == "SQ" and element.get("Value"):
        items = [
            {key.replace(" ", ""): _without_bulk_data(value) for key, value in item.items()}
            for item in element["Value"]
        ]
        return {"vr": "SQ", "Value": items}
    return element


def _is_ascii(dataset: Dataset) -> bool:
    for element in dataset:
        if element.VR == "SQ":
            if not all(_is_ascii(item) for item in element.value):
                return False
        elif element.VR in _TEXT_VRS and not element.is_empty:
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            if not all(str(value).isascii() for value in values):
                return False
    return True
