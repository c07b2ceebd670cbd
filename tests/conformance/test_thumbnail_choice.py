"""Which image a thumbnail shows (PS3.18 10.4.1.1.4; README: "the middle image of the first
series with images"), over HTTP against a running `pacs serve`.

Every image here has its own pattern (ramps in different directions), so a thumbnail of the
wrong image or frame (the first, the last) is far from the right one. The expected thumbnail is
the server's own rendering of the middle image scaled to the thumbnail's size: what is checked
is the choice of image, not the rendering pipeline (test_rendered.py checks that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from tests.conformance.helpers import PNG, Stored, media_params, open_image, stored, stow_ok, token
from tests.support.dicom_factory import make_dataset, to_bytes

SIZE = 256  # each image is SIZE x SIZE, twice the thumbnail's 128: thumbnails are scaled down
THUMBNAIL = 128

_AXIS = np.arange(SIZE, dtype=np.uint16) * 4095 // (SIZE - 1)


def _left_to_right() -> NDArray[np.uint16]:
    return np.tile(_AXIS, (SIZE, 1))


def _top_to_bottom() -> NDArray[np.uint16]:
    return np.tile(_AXIS[:, None], (1, SIZE))


def _right_to_left() -> NDArray[np.uint16]:
    return np.tile(_AXIS[::-1], (SIZE, 1))


# Rendered without a window (the value range), any two of these differ by a third of the grey
# range or more on average.
PATTERNS: list[Callable[[], NDArray[np.uint16]]] = [_left_to_right, _top_to_bottom, _right_to_left]


@dataclass
class Corpus:
    study: str
    first_series: list[Stored]  # SeriesNumber 1, InstanceNumber 1, 2, 3 (stored out of order)
    multiframe: Stored  # SeriesNumber 2: one instance of 3 frames, one pattern each


def _image(study: str, series: str, patient: str, **attrs: object) -> Stored:
    ds = make_dataset(
        study=study,
        series=series,
        rows=SIZE,
        columns=SIZE,
        PatientID=patient,
        BitsStored=12,
        HighBit=11,
        **attrs,
    )
    return stored(to_bytes(ds))


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    study, series, other = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    first = [
        _image(
            study,
            series,
            patient,
            SeriesNumber=1,
            InstanceNumber=n,
            PixelData=PATTERNS[n - 1]().tobytes(),
        )
        for n in (1, 2, 3)
    ]
    frames = np.stack([PATTERNS[i]() for i in (1, 0, 2)])  # frame 2 differs from 1 and 3
    multiframe = _image(
        study,
        other,
        patient,
        SeriesNumber=2,
        InstanceNumber=1,
        NumberOfFrames=3,
        PixelData=frames.tobytes(),
    )
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        # Stored last-first, the multi-frame series first: the order of arrival is no guide.
        stow_ok(http, [multiframe.data, first[2].data, first[0].data, first[1].data])
    yield Corpus(study, first, multiframe)


def _png(http: httpx.Client, url: str, **params: str) -> NDArray[np.float64]:
    response = http.get(url, headers={"Accept": PNG}, params=params)
    assert response.status_code == 200, (url, response.text)
    assert media_params(response.headers["content-type"])[0] == PNG
    image = open_image(response.content, "PNG").convert("L")
    return np.asarray(image, dtype=np.float64)


def _renderings(http: httpx.Client, urls: list[str]) -> list[NDArray[np.float64]]:
    """Each image rendered at the thumbnail's size: the candidates a thumbnail may show."""
    viewport = f"{THUMBNAIL},{THUMBNAIL}"
    return [_png(http, f"{url}/rendered", viewport=viewport) for url in urls]


def _assert_shows(
    thumbnail: NDArray[np.float64], candidates: list[NDArray[np.float64]], expected: int
) -> None:
    assert all(c.shape == thumbnail.shape for c in candidates), [c.shape for c in candidates]
    distances = [float(np.abs(thumbnail - c).mean()) for c in candidates]
    # Scaling may round differently from the rendering; another image is 40+ levels away.
    assert distances[expected] < 4, distances
    others = [d for i, d in enumerate(distances) if i != expected]
    assert min(others) > 40, distances


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_thumbnail_is_the_middle_image(http: httpx.Client, corpus: Corpus, level: str) -> None:
    """Study and series: the middle instance (by Instance Number) of the first series."""
    middle = corpus.first_series[1]
    url = {
        "study": f"/studies/{corpus.study}",
        "series": f"/studies/{corpus.study}/series/{middle.series}",
        "instance": middle.path,
    }[level]
    thumbnail = _png(http, f"{url}/thumbnail")
    assert thumbnail.shape == (THUMBNAIL, THUMBNAIL)
    _assert_shows(thumbnail, _renderings(http, [i.path for i in corpus.first_series]), 1)


@pytest.mark.parametrize("level", ["series", "instance"])
def test_multiframe_thumbnail_is_the_middle_frame(
    http: httpx.Client, corpus: Corpus, level: str
) -> None:
    instance = corpus.multiframe
    url = (
        instance.path
        if level == "instance"
        else f"/studies/{instance.study}/series/{instance.series}"
    )
    thumbnail = _png(http, f"{url}/thumbnail")
    frames = [f"{instance.path}/frames/{n}" for n in (1, 2, 3)]
    _assert_shows(thumbnail, _renderings(http, frames), 1)


def test_frame_thumbnail_is_that_frame(http: httpx.Client, corpus: Corpus) -> None:
    instance = corpus.multiframe
    frames = [f"{instance.path}/frames/{n}" for n in (1, 2, 3)]
    candidates = _renderings(http, frames)
    for number in (1, 3):
        thumbnail = _png(http, f"{instance.path}/frames/{number}/thumbnail")
        _assert_shows(thumbnail, candidates, number - 1)
