"""Build small, valid DICOM Part 10 files for tests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)


def make_dataset(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    rows: int = 8,
    columns: int = 8,
    frames: int = 1,
    seed: int = 0,
    **attrs: Any,
) -> Dataset:
    """A CT image with 16-bit pixels; keyword arguments set or override attributes."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "TEST-ID"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = "REF^DOC"
    ds.StudyDescription = "Test study"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Test series"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(seed)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    ds.PixelData = rng.integers(0, 4096, size=shape, dtype=np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_file(**kwargs: Any) -> bytes:
    return to_bytes(make_dataset(**kwargs))
