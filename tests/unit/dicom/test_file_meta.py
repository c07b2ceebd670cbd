"""The archive's file meta header, encoded by hand for speed, is byte for byte what
pydicom's writer makes of the same values, and reads back as them."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, generate_uid

from app.dicom.file_meta import file_header
from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pydicom(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae.strip():
        meta.SourceApplicationEntityTitle = source_ae.strip()
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("sop_instance", "syntax", "source_ae"),
    [
        ("1.2.3.4", ExplicitVRLittleEndian, "STORESCU"),  # even lengths
        ("1.2.3.45", JPEG2000, "MODALITY1"),  # odd UID, odd AE title
        (generate_uid(), ExplicitVRLittleEndian, "  AE  "),  # padded title
        (generate_uid(), ExplicitVRLittleEndian, "   "),  # no title: no element
        (generate_uid(), ExplicitVRLittleEndian, ""),
    ],
)
def test_the_header_is_what_pydicom_writes(sop_instance: str, syntax: str, source_ae: str) -> None:
    ours = file_header(CT, sop_instance, syntax, source_ae)
    assert ours == _pydicom(CT, sop_instance, syntax, source_ae)
    meta = dcmread(io.BytesIO(ours + b"\x08\x00\x16\x00UI\x00\x00"), force=True).file_meta
    assert meta.MediaStorageSOPInstanceUID == sop_instance
    assert meta.TransferSyntaxUID == syntax
    assert meta.get("SourceApplicationEntityTitle", "") == source_ae.strip()
