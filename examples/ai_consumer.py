"""An AI service that follows the archive's change feed and answers each new CT series with a
DICOM segmentation, written only with public client libraries: dicomweb-client (DICOMweb and
its requests session), highdicom (DICOM SEG) and numpy.

    pip install dicomweb-client highdicom
    python examples/ai_consumer.py http://127.0.0.1:8080/dicomweb --state consumer.json

The loop:
1. Long poll `GET {url}/changefeed?offset=N&wait=...` from the last sequence handled (kept in
   the state file, so a restart resumes where it stopped; without one it starts from now).
2. Collect the changes of CT instances by study; changes of other modalities (among them the
   SEGs this program stores, which would otherwise start it over) are skipped.
3. A study is ready when no new change came for it within a quiet time: its instances have
   arrived (the archive's own "study stable" events, once there, can replace this). Each
   of its CT series is retrieved (WADO-RS), sorted along the slice normal, thresholded (the
   stand-in for a model: HU > 300 is bone), written as a binary DICOM SEG and stored
   (STOW-RS) into the same study.

Delivery is at least once: a study whose changes are read again after a crash or restart is
segmented again, and so is a study that receives new CT instances after its SEG was made.
Replace `segment` with your model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import highdicom as hd
import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

BONE_HU = 300  # Hounsfield units above which a voxel counts as bone
SEG_SERIES_NUMBER = 9001
# Actions whose instance is there to segment; consumers skip actions they do not know.
ACTIONS = {"instance.stored", "instance.replaced"}
MODALITY = "00080060"  # the (0008,0060) key of the feed's DICOM JSON metadata
PAGE = 100  # entries per change feed request (the archive's default maximum)

log = logging.getLogger("ai_consumer")

BONE = hd.seg.SegmentDescription(
    segment_number=1,
    segment_label="Bone",
    segmented_property_category=codes.cid7150.Tissue,
    segmented_property_type=codes.cid7166.BoneTissue,
    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
    algorithm_identification=hd.AlgorithmIdentificationSequence(
        name="Bone threshold",
        version="1.0",
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"threshold_hu": str(BONE_HU)},
    ),
)


class ChangeFeed:
    """The archive's change feed (modelled on Microsoft's DICOM service)."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self._session = session
        self._url = f"{url.rstrip('/')}/changefeed"

    def latest(self) -> int:
        answer = self._session.get(f"{self._url}/latest", params={"includemetadata": "false"})
        answer.raise_for_status()
        return int(answer.json()["Sequence"])

    def after(self, offset: int, wait: int) -> list[dict[str, Any]]:
        """Entries above `offset`, in order; waits up to `wait` seconds for the first one."""
        answer = self._session.get(
            self._url,
            params={"offset": offset, "limit": PAGE, "wait": wait},
            timeout=wait + 30,
        )
        answer.raise_for_status()
        entries: list[dict[str, Any]] = answer.json()
        return entries


@dataclass
class PendingStudy:
    """A study with CT changes not yet segmented."""

    first_sequence: int  # its earliest change not yet handled: where a restart must re-read
    last_change: float  # time.monotonic() when its latest change was read
    series: set[str] = field(default_factory=set)


def modality(entry: dict[str, Any]) -> str | None:
    metadata = entry.get("Metadata") or {}
    values = metadata.get(MODALITY, {}).get("Value") or [None]
    return values[0] if isinstance(values[0], str) else None


def slice_position(image: Dataset) -> float:
    """Where the slice lies along the normal of its plane: sorts a series whatever order its
    instances were stored or numbered in."""
    orientation = np.array(image.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(normal, np.array(image.ImagePositionPatient, dtype=float)))


def segment(volume_hu: np.ndarray) -> np.ndarray:
    """The model: a boolean mask of the volume (slices, rows, columns)."""
    mask: np.ndarray = volume_hu > BONE_HU
    return mask


def segmentation(images: Sequence[Dataset]) -> Dataset:
    """A DICOM SEG of one CT series: one bone segment, a frame per slice that has bone."""
    ordered = sorted(images, key=slice_position)
    volume = np.stack([apply_modality_lut(image.pixel_array, image) for image in ordered])
    return hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=segment(volume).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[BONE],
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="pacs examples",
        manufacturer_model_name="ai_consumer",
        software_versions="1.0",
        device_serial_number="1",
        series_description="Bone (threshold)",
    )


def process_study(client: DICOMwebClient, study: str, series: set[str]) -> None:
    for uid in sorted(series):
        images = client.retrieve_series(study, uid)
        seg = segmentation([image for image in images if image.get("Modality") == "CT"])
        client.store_instances([seg], study_instance_uid=study)
        log.info("study %s: series %s segmented, SEG %s stored", study, uid, seg.SOPInstanceUID)


def load_offset(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["offset"])
    except FileNotFoundError:
        return None


def save_offset(path: Path, offset: int) -> None:
    """Write the state file whole or not at all (a crash leaves the previous one)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"offset": offset}))
    os.replace(partial, path)


def follow(url: str, state: Path, quiet: float, wait: int) -> None:
    session = requests.Session()  # one session (and its auth) for the feed and DICOMweb
    client = DICOMwebClient(url, session=session)
    feed = ChangeFeed(session, url)
    seen = load_offset(state)
    if seen is None:
        seen = feed.latest()
        save_offset(state, seen)
    log.info("following the change feed of %s from sequence %d", url, seen)
    pending: dict[str, PendingStudy] = {}
    while True:
        # Wait no longer than until the next pending study has been quiet long enough.
        due = [p.last_change + quiet - time.monotonic() for p in pending.values()]
        timeout = min([wait, *(max(0, math.ceil(d)) for d in due)])
        try:
            entries = feed.after(seen, timeout)
        except requests.RequestException as exc:
            log.warning("change feed: %s; trying again", exc)
            time.sleep(2)
            continue
        for entry in entries:
            seen = entry["Sequence"]
            if entry["Action"] not in ACTIONS or modality(entry) != "CT":
                continue
            study = entry["StudyInstanceUid"]
            found = pending.setdefault(study, PendingStudy(seen, 0.0))
            found.last_change = time.monotonic()
            found.series.add(entry["SeriesInstanceUid"])
        for study, found in list(pending.items()):
            if time.monotonic() - found.last_change < quiet:
                continue
            try:
                process_study(client, study, found.series)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # The archive is away for a while: keep the study and try again later.
                log.warning("study %s: %s; trying again", study, exc)
                found.last_change = time.monotonic()
                continue
            except Exception:
                # A study that cannot be segmented must not stop the others.
                log.exception("study %s: not segmented", study)
            del pending[study]
        # Handled: everything read, less the pending studies (a restart reads those again).
        save_offset(state, min([seen, *(p.first_sequence - 1 for p in pending.values())]))


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the archive's DICOMweb base URL")
    parser.add_argument(
        "--state",
        type=Path,
        default=Path("ai_consumer.json"),
        help="file keeping the last change feed sequence handled",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=10.0,
        help="seconds without a new change before a study counts as arrived",
    )
    parser.add_argument(
        "--wait",
        type=int,
        default=25,
        help="long poll, seconds (at most the archive's PACS_CHANGEFEED_MAX_WAIT)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for chatty in ("dicomweb_client", "highdicom"):  # a line per request and per module
        logging.getLogger(chatty).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)
    follow(args.url, args.state, args.quiet, args.wait)


if __name__ == "__main__":
    main()
