"""WADO-RS rendered resources and thumbnails (PS3.18 8.3.5, 10.4.1.1.3, 10.4.1.1.4) over HTTP
against a running `pacs serve`.

Images are decoded with Pillow and checked for what the parameters promise: size and aspect
(viewport), brightness (window), inversion (MONOCHROME1), colour, animation (GIF).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    FORMATS,
    GIF,
    JPEG,
    PNG,
    Stored,
    error_message,
    media_params,
    open_image,
    parse_multipart,
    reuid_testdata,
    stored,
    stow_ok,
    token,
)
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.server import running_server

THUMBNAIL_MAX = 128

# The generated gradient: 80 columns x 40 rows, values rising from 0 (left) to 4095 (right).
WIDE_COLUMNS, WIDE_ROWS = 80, 40


@dataclass
class Corpus:
    study: str
    gray_series: str
    colour_series: str
    mr: Stored  # MR_small, MONOCHROME2 64 x 64, with a window in the file
    mono1: Stored  # MR_small's pixels and window as MONOCHROME1
    wide: Stored  # generated gradient, 80 x 40, no window in the file
    rgb: Stored  # SC_rgb_rle_2frame: RGB, RLE, 2 frames, 100 x 100
    palette: Stored  # OBXXXX1A_rle: PALETTE COLOR, RLE, 800 x 600
    emri: Stored  # emri_small: 10 frames, 64 x 64
    sr: Stored  # test-SR: no pixel data (own series)

    @property
    def images(self) -> list[Stored]:
        return [self.mr, self.mono1, self.wide, self.rgb, self.palette, self.emri]


def _wide(study: str, series: str, patient: str) -> bytes:
    ramp = (np.arange(WIDE_COLUMNS) * 4095 // (WIDE_COLUMNS - 1)).astype(np.uint16)
    ds = make_dataset(
        study=study,
        series=series,
        rows=WIDE_ROWS,
        columns=WIDE_COLUMNS,
        PatientID=patient,
        BitsStored=12,
        HighBit=11,
        InstanceNumber=3,
        PixelData=np.tile(ramp, (WIDE_ROWS, 1)).tobytes(),
    )
    return to_bytes(ds)


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    study, gray, colour = generate_uid(), generate_uid(), generate_uid()
    patient = token()

    def load(name: str, series: str | None = None, **attrs: Any) -> Stored:
        attrs.update(StudyInstanceUID=study, PatientID=patient, PatientName="RENDER^TEST")
        if series is not None:
            attrs["SeriesInstanceUID"] = series
        return stored(reuid_testdata(name, **attrs)[0])

    found = Corpus(
        study=study,
        gray_series=gray,
        colour_series=colour,
        mr=load("MR_small.dcm", gray, InstanceNumber=1),
        mono1=load("MR_small.dcm", gray, PhotometricInterpretation="MONOCHROME1", InstanceNumber=2),
        wide=stored(_wide(study, gray, patient)),
        rgb=load("SC_rgb_rle_2frame.dcm", colour, InstanceNumber=1),
        palette=load("OBXXXX1A_rle.dcm", colour, InstanceNumber=2),
        emri=load("emri_small.dcm", colour, InstanceNumber=3),
        sr=load("test-SR.dcm"),
    )
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        stow_ok(http, [i.data for i in (*found.images, found.sr)])
    yield found


def _get_image(
    http: httpx.Client, url: str, accept: str | None = None, **params: str
) -> Image.Image:
    """A single rendered image (asserting status, Content-Type and format)."""
    headers = {"Accept": accept} if accept else {}
    response = http.get(url, headers=headers, params=params)
    assert response.status_code == 200, (url, params, response.text)
    media_type = media_params(response.headers["content-type"])[0]
    assert media_type == (accept or JPEG)
    return open_image(response.content, FORMATS[media_type])


def _gray(image: Image.Image) -> NDArray[np.int16]:
    return np.asarray(image.convert("L"), dtype=np.int16)


def _colour_spread(image: Image.Image) -> NDArray[np.int16]:
    """Per pixel: the largest difference between two of its R, G, B values."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    spread: NDArray[np.int16] = rgb.max(axis=2) - rgb.min(axis=2)
    return spread


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", "image/*", JPEG, PNG, GIF])
def test_instance_formats(http: httpx.Client, corpus: Corpus, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = http.get(f"{corpus.mr.path}/rendered", headers=headers)
    assert response.status_code == 200, response.text
    media_type = media_params(response.headers["content-type"])[0]
    expected = accept if accept in (JPEG, PNG, GIF) else JPEG
    assert media_type == expected
    image = open_image(response.content, FORMATS[expected])
    assert image.size == (64, 64)


@pytest.mark.parametrize("accept", ["image/tiff", "application/dicom", "text/html"])
def test_unsupported_accept_is_406(http: httpx.Client, corpus: Corpus, accept: str) -> None:
    for url in (f"{corpus.mr.path}/rendered", f"/studies/{corpus.study}/rendered"):
        response = http.get(url, headers={"Accept": accept})
        assert response.status_code == 406, (url, response.text)
        error_message(response)


def test_sizes_follow_the_image(http: httpx.Client, corpus: Corpus) -> None:
    for instance, size in [
        (corpus.wide, (WIDE_COLUMNS, WIDE_ROWS)),
        (corpus.rgb, (100, 100)),
        (corpus.palette, (800, 600)),
    ]:
        assert _get_image(http, f"{instance.path}/rendered", PNG).size == size


# --- frames and multi-frame -------------------------------------------------------------------


def test_instance_renders_first_frame(http: httpx.Client, corpus: Corpus) -> None:
    whole = _gray(_get_image(http, f"{corpus.emri.path}/rendered", PNG))
    first = _gray(_get_image(http, f"{corpus.emri.path}/frames/1/rendered", PNG))
    last = _gray(_get_image(http, f"{corpus.emri.path}/frames/10/rendered", PNG))
    assert np.array_equal(whole, first)
    assert not np.array_equal(first, last)


def test_multiframe_instance_as_gif_is_animated(http: httpx.Client, corpus: Corpus) -> None:
    image = _get_image(http, f"{corpus.emri.path}/rendered", GIF)
    assert image.size == (64, 64)
    assert getattr(image, "n_frames", 1) == 10
    assert getattr(image, "is_animated", False)


@pytest.mark.parametrize("accept", [JPEG, PNG])
def test_frame_list_is_multipart(http: httpx.Client, corpus: Corpus, accept: str) -> None:
    response = http.get(f"{corpus.emri.path}/frames/1,7/rendered", headers={"Accept": accept})
    assert response.status_code == 200, response.text
    parts = parse_multipart(response)
    assert len(parts) == 2
    assert all(p.media_type == accept for p in parts)
    images = [open_image(p.content, FORMATS[accept]) for p in parts]
    assert all(i.size == (64, 64) for i in images)
    if accept == PNG:
        first = _gray(_get_image(http, f"{corpus.emri.path}/frames/1/rendered", PNG))
        seventh = _gray(_get_image(http, f"{corpus.emri.path}/frames/7/rendered", PNG))
        assert np.array_equal(_gray(images[0]), first)
        assert np.array_equal(_gray(images[1]), seventh)


def test_frame_list_as_gif_is_one_animation(http: httpx.Client, corpus: Corpus) -> None:
    image = _get_image(http, f"{corpus.emri.path}/frames/2,4,6/rendered", GIF)
    assert getattr(image, "n_frames", 1) == 3


def test_colour_frames(http: httpx.Client, corpus: Corpus) -> None:
    first = _get_image(http, f"{corpus.rgb.path}/frames/1/rendered", PNG)
    second = _get_image(http, f"{corpus.rgb.path}/frames/2/rendered", PNG)
    assert first.size == second.size == (100, 100)
    assert (_colour_spread(first) > 50).mean() > 0.25
    assert not np.array_equal(np.asarray(first.convert("RGB")), np.asarray(second.convert("RGB")))


@pytest.mark.parametrize("frames", ["11", "0", "1,11"])
def test_missing_frame(http: httpx.Client, corpus: Corpus, frames: str) -> None:
    response = http.get(f"{corpus.emri.path}/frames/{frames}/rendered")
    assert response.status_code in (400, 404), response.text
    error_message(response)


def test_no_pixel_data_is_501_logged_as_a_client_error(tmp_path: Path) -> None:
    # A client asking to render a report is told 501; nothing on the server failed, so the
    # log says INFO, and ERROR stays for real faults someone must look at.
    ds = make_dataset(PatientID=token())
    del ds.PixelData
    report = stored(to_bytes(ds))
    data = tmp_path / "data"
    with (
        running_server(data) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http,
    ):
        stow_ok(http, [report.data])
        response = http.get(f"{report.path}/rendered")
        assert response.status_code == 501, response.text
        assert "pixel data" in error_message(response)
    log = (data / "server.log").read_text()
    answered = [line for line in log.splitlines() if "no pixel data" in line]
    assert answered and all(" INFO " in line for line in answered), answered
    assert " ERROR " not in log


# --- study and series -------------------------------------------------------------------------


def test_study_is_multipart_one_image_per_instance(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(f"/studies/{corpus.study}/rendered", headers={"Accept": PNG})
    assert response.status_code == 200, response.text
    parts = parse_multipart(response)
    # The SR has no pixel data: no image for it.
    assert len(parts) == len(corpus.images)
    sizes = sorted(open_image(p.content, "PNG").size for p in parts)
    assert sizes == sorted([(64, 64), (64, 64), (80, 40), (100, 100), (800, 600), (64, 64)])
    assert all(p.media_type == PNG for p in parts)


def test_series_is_multipart(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(f"/studies/{corpus.study}/series/{corpus.gray_series}/rendered")
    assert response.status_code == 200, response.text
    parts = parse_multipart(response)
    assert [p.media_type for p in parts] == [JPEG] * 3
    sizes = sorted(open_image(p.content, "JPEG").size for p in parts)
    assert sizes == [(64, 64), (64, 64), (80, 40)]


# --- window, viewport, quality, annotation ----------------------------------------------------


def test_window_maps_values_to_grey_levels(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.wide.path}/rendered"
    # A 2-wide window at 2048: everything left of the middle black, right of it white.
    hard = _gray(_get_image(http, url, PNG, window="2048,2"))
    assert hard[:, : WIDE_COLUMNS // 2 - 2].max() <= 2
    assert hard[:, WIDE_COLUMNS // 2 + 2 :].min() >= 253
    # Without a window the whole range is shown: a ramp from black to white.
    ramp = _gray(_get_image(http, url, PNG))[0]
    assert ramp[0] <= 5 and ramp[-1] >= 250
    assert np.all(np.diff(ramp) >= 0)
    # A higher centre darkens the image.
    low = _gray(_get_image(http, url, PNG, window="1000,2000"))
    high = _gray(_get_image(http, url, PNG, window="3000,2000"))
    assert low.mean() > high.mean() + 50


def test_window_functions(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.wide.path}/rendered"
    # Column 50 holds 2591, i.e. centre + width/2 for the window below.
    column = 50
    linear = _gray(_get_image(http, url, PNG, window="2048,1086,LINEAR"))
    exact = _gray(_get_image(http, url, PNG, window="2048,1086,LINEAR_EXACT"))
    sigmoid = _gray(_get_image(http, url, PNG, window="2048,1086,SIGMOID"))
    assert linear[0, column] >= 250 and exact[0, column] >= 250
    # PS3.3 C.11.2.1.3.1: SIGMOID gives 255 / (1 + e^-2), about 225, there.
    assert 210 <= sigmoid[0, column] <= 240


def test_monochrome1_is_inverted(http: httpx.Client, corpus: Corpus) -> None:
    for params in ({}, {"window": "1000,1500"}):
        mono2 = _gray(_get_image(http, f"{corpus.mr.path}/rendered", PNG, **params))
        mono1 = _gray(_get_image(http, f"{corpus.mono1.path}/rendered", PNG, **params))
        assert mono2.std() > 10
        assert np.abs(mono1 + mono2 - 255).max() <= 1, params


def test_colour_images_are_colour(http: httpx.Client, corpus: Corpus) -> None:
    for instance in (corpus.rgb, corpus.palette):
        image = _get_image(http, f"{instance.path}/rendered", PNG)
        assert (_colour_spread(image) > 50).mean() > 0.05, instance.sop
    grey = _get_image(http, f"{corpus.mr.path}/rendered", PNG)
    assert _colour_spread(grey).max() <= 2


@pytest.mark.parametrize(
    ("viewport", "size"),
    [("40,40", (40, 20)), ("60,10", (20, 10)), ("80,40", (80, 40)), ("20,100", (20, 10))],
)
def test_viewport_fits_and_keeps_aspect(
    http: httpx.Client, corpus: Corpus, viewport: str, size: tuple[int, int]
) -> None:
    image = _get_image(http, f"{corpus.wide.path}/rendered", JPEG, viewport=viewport)
    assert image.size == size


def test_viewport_fits_without_distortion(http: httpx.Client, corpus: Corpus) -> None:
    image = _get_image(http, f"{corpus.palette.path}/rendered", JPEG, viewport="300,300")
    width, height = image.size
    assert width <= 300 and height <= 300
    assert max(width, height) == 300
    assert abs(width / height - 800 / 600) < 0.02


def test_viewport_source_region(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.wide.path}/rendered"
    left = _gray(_get_image(http, url, PNG, viewport="40,40,0,0,40,40", window="2048,4096"))
    right = _gray(_get_image(http, url, PNG, viewport="40,40,40,0,40,40", window="2048,4096"))
    assert left.shape == right.shape == (40, 40)
    # The left half of the ramp is darker; each crop still rises left to right.
    assert left.max() <= right.min() + 5
    assert left[:, -1].mean() > left[:, 0].mean() + 50


def test_quality_changes_jpeg_size(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.palette.path}/rendered"
    sizes = []
    for quality in ("5", "95"):
        response = http.get(url, params={"quality": quality}, headers={"Accept": JPEG})
        assert response.status_code == 200, response.text
        open_image(response.content, "JPEG")
        sizes.append(len(response.content))
    assert sizes[0] * 2 < sizes[1]


def test_annotation_burns_in_text(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.palette.path}/rendered"
    plain = _get_image(http, url, PNG)
    for annotation in ("patient", "technique", "patient,technique"):
        marked = _get_image(http, url, PNG, annotation=annotation)
        assert marked.size == plain.size
        assert not np.array_equal(
            np.asarray(marked.convert("RGB")), np.asarray(plain.convert("RGB"))
        )


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("window", "abc"),
        ("window", "40"),
        ("window", "40,0"),
        ("window", "40,400,CUBIC"),
        ("viewport", "abc"),
        ("viewport", "0,10"),
        ("viewport", "10"),
        ("quality", "0"),
        ("quality", "101"),
        ("quality", "high"),
        ("annotation", "colour"),
    ],
)
def test_bad_parameter_is_400_naming_it(
    http: httpx.Client, corpus: Corpus, param: str, value: str
) -> None:
    for url in (f"{corpus.mr.path}/rendered", f"{corpus.emri.path}/frames/1/rendered"):
        response = http.get(url, params={param: value})
        assert response.status_code == 400, (url, param, value, response.text)
        assert param in error_message(response)


def test_unknown_instance_is_404(http: httpx.Client, corpus: Corpus) -> None:
    url = f"/studies/{corpus.study}/series/{corpus.gray_series}/instances/{generate_uid()}"
    for suffix in ("/rendered", "/thumbnail"):
        response = http.get(url + suffix)
        assert response.status_code == 404, response.text
        error_message(response)


# --- thumbnails -------------------------------------------------------------------------------


def test_thumbnails_at_every_level(http: httpx.Client, corpus: Corpus) -> None:
    urls = [
        f"/studies/{corpus.study}/thumbnail",
        f"/studies/{corpus.study}/series/{corpus.colour_series}/thumbnail",
        f"{corpus.palette.path}/thumbnail",
        f"{corpus.emri.path}/thumbnail",
        f"{corpus.emri.path}/frames/3/thumbnail",
    ]
    for url in urls:
        image = _get_image(http, url)
        assert 0 < max(image.size) <= THUMBNAIL_MAX, (url, image.size)
    png = _get_image(http, f"{corpus.palette.path}/thumbnail", PNG)
    assert 0 < max(png.size) <= THUMBNAIL_MAX


def test_thumbnail_keeps_aspect_and_colour(http: httpx.Client, corpus: Corpus) -> None:
    image = _get_image(http, f"{corpus.palette.path}/thumbnail", PNG)
    width, height = image.size
    assert abs(width / height - 800 / 600) < 0.05
    assert (_colour_spread(image) > 50).mean() > 0.05


def test_thumbnail_viewport_changes_size(http: httpx.Client, corpus: Corpus) -> None:
    url = f"{corpus.palette.path}/thumbnail"
    default = _get_image(http, url)
    small = _get_image(http, url, viewport="64,64")
    assert max(small.size) <= 64
    assert small.size != default.size
