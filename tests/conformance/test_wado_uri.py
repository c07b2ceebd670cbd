"""WADO-URI (PS3.18 9) over HTTP against a running `pacs serve`.

`/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..` at the server root and under
the DICOMweb root: the PS3.10 file (as stored or in `transferSyntax`) or a rendered image
shaped by frameNumber, windowCenter/windowWidth, rows/columns, region, annotation and
imageQuality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    DICOM,
    EXPLICIT_VR_LE,
    FORMATS,
    GIF,
    JPEG,
    PNG,
    Stored,
    error_message,
    media_params,
    open_image,
    pixels,
    read_dicom,
    reuid_testdata,
    stored,
    stow_ok,
    token,
)
from tests.support.dicom_factory import make_dataset, to_bytes

BASES = ["/wado", "/dicomweb/wado"]
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# The generated gradient: 80 columns x 40 rows, values rising from 0 (left) to 4095 (right).
WIDE_COLUMNS, WIDE_ROWS = 80, 40


@dataclass
class Corpus:
    mr: Stored  # MR_small: 64 x 64, 16-bit, Explicit VR LE
    jll: Stored  # JPEG-LL: JPEG lossless, 256 x 1024
    emri: Stored  # emri_small: 10 frames
    wide: Stored  # generated gradient, 80 x 40


def _wide(patient: str) -> bytes:
    ramp = (np.arange(WIDE_COLUMNS) * 4095 // (WIDE_COLUMNS - 1)).astype(np.uint16)
    ds = make_dataset(
        rows=WIDE_ROWS,
        columns=WIDE_COLUMNS,
        PatientID=patient,
        BitsStored=12,
        HighBit=11,
        PixelData=np.tile(ramp, (WIDE_ROWS, 1)).tobytes(),
    )
    return to_bytes(ds)


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    patient = token()

    def load(name: str) -> Stored:
        return stored(reuid_testdata(name, PatientID=patient)[0])

    found = Corpus(
        mr=load("MR_small.dcm"),
        jll=load("JPEG-LL.dcm"),
        emri=load("emri_small.dcm"),
        wide=stored(_wide(patient)),
    )
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        stow_ok(http, [found.mr.data, found.jll.data, found.emri.data, found.wide.data])
    yield found


@pytest.fixture
def root(server: str) -> Iterator[httpx.Client]:
    """A client at the server root (WADO-URI is mounted there and under /dicomweb)."""
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


def _query(instance: Stored, **params: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": instance.study,
        "seriesUID": instance.series,
        "objectUID": instance.sop,
        **params,
    }


def _wado(
    root: httpx.Client, instance: Stored, base: str = "/wado", **params: str
) -> httpx.Response:
    return root.get(base, params=_query(instance, **params))


def _image(
    root: httpx.Client, instance: Stored, media_type: str = JPEG, **params: str
) -> Image.Image:
    """The rendered image (asserting status, Content-Type and format)."""
    response = _wado(root, instance, **params)
    assert response.status_code == 200, (params, response.text)
    assert media_params(response.headers["content-type"])[0] == media_type
    return open_image(response.content, FORMATS[media_type])


def _gray(image: Image.Image) -> NDArray[np.int16]:
    return np.asarray(image.convert("L"), dtype=np.int16)


# --- application/dicom ------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
def test_dicom_as_stored(root: httpx.Client, corpus: Corpus, base: str) -> None:
    for instance in (corpus.mr, corpus.jll):
        response = _wado(root, instance, base, contentType=DICOM)
        assert response.status_code == 200, response.text
        assert media_params(response.headers["content-type"])[0] == DICOM
        assert response.content == instance.data


@pytest.mark.parametrize(
    ("which", "syntax"), [("jll", EXPLICIT_VR_LE), ("mr", JPEG_LS), ("emri", EXPLICIT_VR_LE)]
)
def test_dicom_in_transfer_syntax(
    root: httpx.Client, corpus: Corpus, which: str, syntax: str
) -> None:
    original: Stored = getattr(corpus, which)
    response = _wado(root, original, contentType=DICOM, transferSyntax=syntax)
    assert response.status_code == 200, response.text
    assert media_params(response.headers["content-type"])[0] == DICOM
    returned = read_dicom(response.content)
    assert returned.file_meta.TransferSyntaxUID == syntax
    assert returned.SOPInstanceUID == original.sop
    assert np.array_equal(pixels(returned), pixels(original.dataset))


def test_impossible_transfer_syntax_is_406(root: httpx.Client, corpus: Corpus) -> None:
    response = _wado(root, corpus.mr, contentType=DICOM, transferSyntax=JPEG_BASELINE)
    assert response.status_code == 406, response.text
    error_message(response)


# --- rendered ---------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("content_type", [None, JPEG, PNG, GIF])
def test_rendered_formats(
    root: httpx.Client, corpus: Corpus, base: str, content_type: str | None
) -> None:
    params = {"contentType": content_type} if content_type else {}
    response = _wado(root, corpus.mr, base, **params)
    assert response.status_code == 200, response.text
    media_type = content_type or JPEG  # image/jpeg is the default for images
    assert media_params(response.headers["content-type"])[0] == media_type
    assert open_image(response.content, FORMATS[media_type]).size == (64, 64)


def test_frame_number(root: httpx.Client, corpus: Corpus) -> None:
    default = _gray(_image(root, corpus.emri, PNG, contentType=PNG))
    first = _gray(_image(root, corpus.emri, PNG, contentType=PNG, frameNumber="1"))
    fourth = _gray(_image(root, corpus.emri, PNG, contentType=PNG, frameNumber="4"))
    assert np.array_equal(default, first)
    assert not np.array_equal(first, fourth)


@pytest.mark.parametrize(("frame", "statuses"), [("11", (400, 404)), ("x", (400,)), ("0", (400,))])
def test_bad_frame_number(
    root: httpx.Client, corpus: Corpus, frame: str, statuses: tuple[int, ...]
) -> None:
    response = _wado(root, corpus.emri, frameNumber=frame)
    assert response.status_code in statuses, response.text
    error_message(response)


def test_window(root: httpx.Client, corpus: Corpus) -> None:
    hard = _gray(
        _image(root, corpus.wide, PNG, contentType=PNG, windowCenter="2048", windowWidth="2")
    )
    assert hard[:, : WIDE_COLUMNS // 2 - 2].max() <= 2
    assert hard[:, WIDE_COLUMNS // 2 + 2 :].min() >= 253
    low = _gray(
        _image(root, corpus.wide, PNG, contentType=PNG, windowCenter="1000", windowWidth="2000")
    )
    high = _gray(
        _image(root, corpus.wide, PNG, contentType=PNG, windowCenter="3000", windowWidth="2000")
    )
    assert low.mean() > high.mean() + 50


@pytest.mark.parametrize("params", [{"windowCenter": "40"}, {"windowWidth": "400"}])
def test_window_needs_centre_and_width(
    root: httpx.Client, corpus: Corpus, params: dict[str, str]
) -> None:
    response = _wado(root, corpus.wide, **params)
    assert response.status_code == 400, response.text
    message = error_message(response)
    assert "windowCenter" in message and "windowWidth" in message


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"rows": "20"}, (40, 20)),
        ({"columns": "40"}, (40, 20)),
        # Both given: each is a maximum and the aspect ratio is kept (PS3.18 9.1.2.1.9).
        ({"rows": "20", "columns": "20"}, (20, 10)),
        ({"rows": "80"}, (160, 80)),
    ],
)
def test_rows_and_columns(
    root: httpx.Client, corpus: Corpus, params: dict[str, str], size: tuple[int, int]
) -> None:
    assert _image(root, corpus.wide, **params).size == size


def test_region(root: httpx.Client, corpus: Corpus) -> None:
    window = {"windowCenter": "2048", "windowWidth": "4096", "contentType": PNG}
    left = _gray(_image(root, corpus.wide, PNG, region="0,0,0.5,1", **window))
    right = _gray(_image(root, corpus.wide, PNG, region="0.5,0,1,1", **window))
    assert left.shape == right.shape == (WIDE_ROWS, WIDE_COLUMNS // 2)
    assert left.max() <= right.min() + 5
    # A region with a size: the region is scaled to it.
    scaled = _image(root, corpus.wide, region="0,0,0.5,1", rows="20")
    assert scaled.size == (20, 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("region", "0.5,0,0.2,1"),
        ("region", "a,b"),
        ("region", "0,0,1.5,1"),
        ("rows", "x"),
        ("columns", "0"),
        ("imageQuality", "0"),
        ("imageQuality", "101"),
        ("annotation", "colour"),
    ],
)
def test_bad_rendering_parameter_is_400(
    root: httpx.Client, corpus: Corpus, name: str, value: str
) -> None:
    response = _wado(root, corpus.wide, **{name: value})
    assert response.status_code == 400, response.text
    assert name in error_message(response)


def test_annotation(root: httpx.Client, corpus: Corpus) -> None:
    plain = _image(root, corpus.mr, PNG, contentType=PNG)
    marked = _image(root, corpus.mr, PNG, contentType=PNG, annotation="patient,technique")
    assert marked.size == plain.size
    assert not np.array_equal(_gray(plain), _gray(marked))


def test_image_quality(root: httpx.Client, corpus: Corpus) -> None:
    sizes = []
    for quality in ("5", "95"):
        response = _wado(root, corpus.mr, imageQuality=quality)
        assert response.status_code == 200, response.text
        open_image(response.content, "JPEG")
        sizes.append(len(response.content))
    assert sizes[0] < sizes[1]


# --- errors and warnings ----------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("missing", ["requestType", "studyUID", "seriesUID", "objectUID"])
def test_missing_required_parameter_is_400(
    root: httpx.Client, corpus: Corpus, base: str, missing: str
) -> None:
    params = _query(corpus.mr)
    del params[missing]
    response = root.get(base, params=params)
    assert response.status_code == 400, response.text
    error_message(response)


@pytest.mark.parametrize(
    "params",
    [{"requestType": "WADOX"}, {"objectUID": "1.2.abc"}, {"studyUID": "not a uid"}],
)
def test_bad_required_parameter_is_400(
    root: httpx.Client, corpus: Corpus, params: dict[str, str]
) -> None:
    response = root.get("/wado", params={**_query(corpus.mr), **params})
    assert response.status_code == 400, response.text
    error_message(response)


@pytest.mark.parametrize("which", ["objectUID", "seriesUID", "studyUID"])
def test_unknown_instance_is_404(root: httpx.Client, corpus: Corpus, which: str) -> None:
    for content_type in (DICOM, JPEG):
        params = {**_query(corpus.mr), which: generate_uid(), "contentType": content_type}
        response = root.get("/wado", params=params)
        assert response.status_code == 404, response.text
        error_message(response)


def test_unknown_parameter_is_served_with_a_warning(root: httpx.Client, corpus: Corpus) -> None:
    response = _wado(root, corpus.mr, contentType=DICOM, cacheBuster="12345")
    assert response.status_code == 200, response.text
    assert response.content == corpus.mr.data
    warning = response.headers.get("warning", "")
    assert warning.startswith("299 "), warning
    assert "cacheBuster" in warning
    rendered = _wado(root, corpus.mr, vendorOption="x")
    assert rendered.status_code == 200, rendered.text
    assert "vendorOption" in rendered.headers.get("warning", "")


def test_unknown_parameter_names_are_escaped_in_the_warning(
    root: httpx.Client, corpus: Corpus
) -> None:
    """A name outside Latin-1 was a 500 (found by tests/fuzz); one with a control character
    an answer uvicorn refused to send; many long names are listed in part."""
    for content_type in (DICOM, JPEG):
        names = {"\u0661": "", 'a\x01"b': "x"}
        response = _wado(root, corpus.mr, contentType=content_type, **names)
        assert response.status_code == 200, response.text
        warning = response.headers["warning"]
        assert "\\u0661" in warning, warning
        assert 'a\\x01\\"b' in warning, warning
    many = {f"n{i:02}" * 40: "" for i in range(14)}
    response = _wado(root, corpus.mr, contentType=DICOM, **many)
    assert response.status_code == 200, response.text
    warning = response.headers["warning"]
    assert "and 4 more" in warning, warning
    assert len(warning) < 1000, warning


def test_known_parameters_give_no_warning(root: httpx.Client, corpus: Corpus) -> None:
    response = _wado(root, corpus.mr, contentType=JPEG, rows="32", imageQuality="80")
    assert response.status_code == 200, response.text
    assert "warning" not in response.headers
