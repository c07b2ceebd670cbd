"""What ingest learns about one stored instance (filled by `dicom/parse.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# One frame is the list of (offset, length) byte ranges in the stored file whose
# concatenation is that frame: one range for native pixel data, one per fragment for
# encapsulated pixel data.
FrameRanges = tuple[tuple[int, int], ...]

# Placeholder written into stored metadata JSON in front of each BulkDataURI path; the
# web layer swaps it for the instance's absolute URL when it answers a request.
BULK_BASE = "{{pacs-bulk-base}}"

# Bulk data paths of the top-level pixel data elements: Pixel Data, Float and Double Float.
PIXEL_DATA_PATHS = ("7FE00010", "7FE00008", "7FE00009")


@dataclass(frozen=True)
class BulkRange:
    """Where a bulk data element's value lies in the stored file."""

    offset: int
    length: int
    vr: str


@dataclass(frozen=True)
class ParsedInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    # DICOM JSON (PS3.18 Annex F) of the whole dataset (file meta group excluded). Bulk data
    # elements carry {"vr": .., "BulkDataURI": BULK_BASE + "/bulkdata/<path>"}.
    metadata: dict[str, Any]
    # Bulk data value locations, keyed by the <path> used in the BulkDataURI.
    bulk: dict[str, BulkRange]
    # Frames of the top-level Pixel Data (or Float/Double Float Pixel Data); empty if none.
    frames: tuple[FrameRanges, ...]
    # Whether the pixel data is encapsulated (compressed) rather than native.
    encapsulated: bool
    # Attributes pydicom had to coerce or could not decode, for the STOW WarningReason.
    warnings: tuple[str, ...] = ()
