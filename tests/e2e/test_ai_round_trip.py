"""The AI round trip (issue 12): the example consumer (examples/ai_consumer.py, only public
client libraries: dicomweb-client, highdicom) runs as its own process and follows the change
feed of a tenant of the archive. CT studies stored with STOW-RS after it started come back as
a DICOM SEG in the same study, found by QIDO, referencing the CT series, and with a mask equal
to the 300 HU threshold computed here from the CT values that were sent, slice by slice (so a
SEG of the wrong data, with a wrong rescale or with frames on the wrong slices fails). It is a
loop: a second study stored later is segmented too; a study stored in two requests gets one
SEG covering both; its own SEGs are not segmented again; stopped and started again, it
resumes from its saved offset (a study stored meanwhile is segmented, the earlier ones not
again)."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.support.ct_series import CtSeries, make_ct_series
from tests.support.processes import background_process

CONSUMER = Path(__file__).resolve().parents[2] / "examples" / "ai_consumer.py"
QUIET = 1.0  # the consumer's quiet time (seconds) before a study counts as arrived
BONE_HU = 300
SEGMENTED = "segmented, SEG"  # the consumer's log line for each series it answered

T = TypeVar("T")


def _eventually(probe: Callable[[], T | None], what: str, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)
    return found


@contextmanager
def _consumer(url: str, state: Path, log: Path) -> Iterator[None]:
    """The example consumer as its own process, ready once it has saved its first offset."""
    command = [sys.executable, str(CONSUMER), url, "--state", str(state),
               "--quiet", str(QUIET), "--wait", "2"]  # fmt: skip
    ready = "following the change feed"
    with background_process(command, log, lambda: ready in log.read_text(), timeout=30):
        yield


def _offset(state: Path) -> int:
    return int(json.loads(state.read_text())["offset"])


def _latest(url: str) -> int:
    return int(httpx.get(f"{url}/changefeed/latest", timeout=30).json()["Sequence"])


def _seg_series(client: DICOMwebClient, study: str) -> list[Dataset]:
    found = client.search_for_series(study, search_filters={"Modality": "SEG"})
    return [Dataset.from_json(item) for item in found]


def _store(client: DICOMwebClient, ct: CtSeries, parts: int = 1) -> None:
    """STOW-RS the series in a shuffled order (the consumer must sort it by geometry)."""
    images = list(ct.images)
    random.Random(ct.study).shuffle(images)
    for n in range(parts):
        client.store_instances(images[n::parts], study_instance_uid=ct.study)


def _check_seg(client: DICOMwebClient, ct: CtSeries) -> None:
    """The study's one SEG references the CT series and masks exactly its bone (> 300 HU)."""
    series = _eventually(lambda: _seg_series(client, ct.study) or None, "a SEG in the study")
    assert len(series) == 1, [s.SeriesInstanceUID for s in series]
    (seg,) = client.retrieve_series(ct.study, series[0].SeriesInstanceUID)
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == ct.study
    assert seg.SegmentationType == "BINARY"
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == ct.series
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
        ct.hounsfield
    )

    (shared,) = seg.SharedFunctionalGroupsSequence
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    masks: dict[str, np.ndarray] = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        # One segment: highdicom names it once for all frames, in the shared groups.
        segment = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        assert segment[0].ReferencedSegmentNumber == 1
        (source,) = item.DerivationImageSequence[0].SourceImageSequence
        sop = source.ReferencedSOPInstanceUID
        assert sop not in masks, f"two frames for slice {sop}"
        masks[sop] = frame.astype(bool)
    for sop, hu in ct.hounsfield.items():
        expected = hu > BONE_HU
        # Slices without bone may be left out of the SEG (highdicom omits empty frames).
        found = masks.get(sop, np.zeros_like(expected))
        assert np.array_equal(found, expected), (
            f"slice {sop}: {int(found.sum())} voxels masked, {int(expected.sum())} expected"
        )
    assert len(masks) >= len(ct.hounsfield) - 1, "a slice with bone has no frame"


def _settled(url: str, state: Path) -> None:
    """Wait until the consumer has handled every change in the feed, its own SEGs' too. Its
    saved offset stays below a study it has still to segment, so once it has reached the
    feed's latest sequence, a SEG it would have made of its own SEG is already stored."""
    latest = _latest(url)
    _eventually(lambda: _offset(state) >= latest or None, f"the consumer at sequence {latest}")


def test_ai_round_trip(dicomweb: str, tmp_path: Path) -> None:
    url = f"{dicomweb}/tenants/ai-{uuid.uuid4().hex[:10]}"  # a tenant: a feed of its own
    client = DICOMwebClient(url)
    state, logs = tmp_path / "consumer.json", [tmp_path / "first.log", tmp_path / "second.log"]
    studies = [make_ct_series(seed=n, PatientID=f"AI-{n}") for n in range(3)]

    with _consumer(url, state, logs[0]):
        assert _offset(state) == 0  # started from now, before anything was stored
        _store(client, studies[0])
        _check_seg(client, studies[0])
        _store(client, studies[1], parts=2)  # one study, two requests: one SEG
        _check_seg(client, studies[1])
        _settled(url, state)
    stopped_at = _offset(state)
    assert stopped_at == _latest(url)

    _store(client, studies[2])  # while the consumer is down
    with _consumer(url, state, logs[1]):
        assert f"from sequence {stopped_at}" in logs[1].read_text()
        _check_seg(client, studies[2])
        _settled(url, state)

    for ct in studies:
        assert len(_seg_series(client, ct.study)) == 1, "a SEG of the SEG, or a study twice"
    for log in logs:
        assert " ERROR " not in log.read_text(), log.read_text()
    answered = [[x for x in log.read_text().splitlines() if SEGMENTED in x] for log in logs]
    assert [len(lines) for lines in answered] == [2, 1], answered
    feed = httpx.get(f"{url}/changefeed", params={"limit": 100}, timeout=30).json()
    modalities = [entry["Metadata"]["00080060"]["Value"][0] for entry in feed]
    assert sorted(modalities) == sorted(["CT"] * 15 + ["SEG"] * 3)
