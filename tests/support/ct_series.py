"""A small CT series that looks real to image tools: one frame of reference, slice geometry
(position, orientation, spacing, thickness), Hounsfield units through a rescale, and anatomy
of sorts: air, an elliptic body of soft tissue and a bone whose place, size and density change
from slice to slice (one slice has none), so that a mask put on the wrong slice shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from tests.support.dicom_factory import make_dataset

INTERCEPT = -1024  # stored value 0 is -1024 HU, as most scanners write it
SPACING = 2.5  # mm between slices


@dataclass(frozen=True)
class CtSeries:
    study: str
    series: str
    images: list[Dataset]  # in slice order, head to feet
    hounsfield: dict[str, np.ndarray]  # each image's HU values, by SOP Instance UID


def _slice_hu(rng: np.random.Generator, index: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(float)
    centre = size / 2
    hu = np.full((size, size), -1000.0)
    body = ((x - centre) / (size * 0.42)) ** 2 + ((y - centre) / (size * 0.33)) ** 2 <= 1
    hu[body] = 40 + rng.normal(0, 20, int(body.sum()))
    if index:
        # A bone drifting across the slices, denser towards one side: the 300 HU threshold
        # cuts through it, so the mask depends on every value being rescaled right.
        bx, by, radius = centre - 8 + 3 * index, centre + 2, 2 + index
        bone = (x - bx) ** 2 + (y - by) ** 2 <= radius**2
        hu[bone] = 150 + 120 * (x[bone] - bx + radius) + rng.normal(0, 30, int(bone.sum()))
    return np.clip(np.rint(hu), -1024, 3071)


def make_ct_series(slices: int = 5, size: int = 48, seed: int = 0, **attrs: object) -> CtSeries:
    """`slices` axial slices of `size` x `size` pixels; keyword arguments set attributes of
    every image (PatientID, ...)."""
    rng = np.random.default_rng(seed)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    images: list[Dataset] = []
    hounsfield: dict[str, np.ndarray] = {}
    for index in range(slices):
        hu = _slice_hu(rng, index, size)
        ds = make_dataset(
            study=study,
            series=series,
            rows=size,
            columns=size,
            InstanceNumber=index + 1,
            FrameOfReferenceUID=frame_of_reference,
            PositionReferenceIndicator="",
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            # Head first: the slice number grows towards the feet, z falls.
            ImagePositionPatient=[-30.0, -30.0, -SPACING * index],
            PixelSpacing=[1.25, 1.25],
            SliceThickness=SPACING,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
            BitsStored=12,
            HighBit=11,
            RescaleIntercept=INTERCEPT,
            RescaleSlope=1,
            RescaleType="HU",
            Manufacturer="pacs tests",
            **attrs,
        )
        ds.PixelData = (hu - INTERCEPT).astype(np.uint16).tobytes()
        # Ready to store as it is: dicomweb-client writes a Part 10 file (preamble, DICM)
        # only for a dataset that has a preamble and file meta.
        ds.preamble = b"\0" * 128
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        images.append(ds)
        hounsfield[ds.SOPInstanceUID] = hu
    return CtSeries(study, series, images, hounsfield)
