"""The PS3.10 header (preamble, 'DICM', file meta information) of a file this archive writes
around a dataset received over the network."""

from __future__ import annotations

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME


def file_header(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the file meta information (PS3.10 7.1) naming this archive as
    the implementation that wrote the file and `source_ae` as the sender."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae.strip():
        meta.SourceApplicationEntityTitle = source_ae.strip()
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()
