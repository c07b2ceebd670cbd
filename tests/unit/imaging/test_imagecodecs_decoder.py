"""The imagecodecs decoding plugin (CharLS, libjpeg-turbo) against pydicom's own plugins and
DCMTK: it goes first for lossless JPEG and JPEG-LS, so it must give the very same values; it
goes last for lossy JPEG, where it reads what libjpeg refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from app.imaging import imagecodecs_decoder
from app.imaging.codecs import decode_frame, encode_pixels
from tests.support.dcmtk import check, require_dcmtk
from tests.unit.imaging import (
    corpus_path,
    frame_count,
    header_of,
    pixels_of,
    read,
    stored_frames,
)

# Lossless corpus files: signed and unsigned, 8 and 16 bits, near-lossless.
LOSSLESS = [
    ("JPEG-LL.dcm", JPEGLosslessSV1),  # 16-bit signed
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGLosslessSV1),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),  # 16-bit signed
    ("emri_small_jpeg_ls_lossless.dcm", JPEGLSLossless),  # 10 frames
    ("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless),
]


def _plugin_only(syntax: str) -> Decoder:
    decoder = Decoder(syntax)
    decoder.add_plugin("imagecodecs", (imagecodecs_decoder.__name__, "_decode_frame"))
    assert decoder.is_available
    return decoder


def _options(name: str) -> dict[str, Any]:
    ds = read(name)
    return {
        "rows": ds.Rows,
        "columns": ds.Columns,
        "samples_per_pixel": ds.SamplesPerPixel,
        "bits_allocated": ds.BitsAllocated,
        "bits_stored": ds.BitsStored,
        "pixel_representation": ds.PixelRepresentation,
        "photometric_interpretation": ds.PhotometricInterpretation,
        "number_of_frames": 1,
    }


@pytest.mark.parametrize(("name", "syntax"), LOSSLESS, ids=[name for name, _ in LOSSLESS])
def test_plugin_alone_decodes_lossless_frames_as_pydicom_does(name: str, syntax: str) -> None:
    ds = read(name)
    expected = pixels_of(ds)
    decoder = _plugin_only(syntax)
    count = frame_count(ds)
    for index, data in enumerate(stored_frames(ds)):
        pixels, _ = decoder.as_array(encapsulate([data]), index=0, **_options(name))
        reference = expected[index] if count > 1 else expected
        np.testing.assert_array_equal(pixels, reference)
        assert pixels.dtype == reference.dtype


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEGLSNearLossless])
def test_colour_jpeg_ls_decodes_colour_by_pixel(syntax: str) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (33, 17, 3), dtype=np.uint8)
    codestream = encode_pixels(image, syntax, bits_stored=8, photometric="RGB")
    header = pydicom.Dataset()
    header.Rows, header.Columns = image.shape[:2]
    header.SamplesPerPixel = 3
    header.BitsAllocated = header.BitsStored = 8
    header.PixelRepresentation = header.PlanarConfiguration = 0
    header.PhotometricInterpretation = "RGB"
    pixels = decode_frame(header, syntax, codestream).pixels
    assert pixels.shape == image.shape
    assert np.abs(pixels.astype(int) - image).max() <= (2 if syntax == JPEGLSNearLossless else 0)


def _dcmdjpeg(name: str, folder: Path) -> NDArray[Any]:
    require_dcmtk(("dcmdjpeg",))
    target = folder / "native.dcm"
    check("dcmdjpeg", corpus_path(name), target)
    return pixels_of(pydicom.dcmread(target))


def test_jpeg_lossy_that_libjpeg_refuses_decodes_as_dcmdjpeg_does(tmp_path: Path) -> None:
    """JPEG-lossy.dcm (12-bit JPEG Extended with odd scan parameters): pydicom's plugins
    refuse it, libjpeg-turbo reads it to DCMTK's values (IJG libjpeg, another decoder)."""
    name = "JPEG-lossy.dcm"
    ds = read(name)
    with pytest.raises(Exception):  # noqa: B017 (the premise: pydicom cannot decode it)
        pixels_of(ds)
    (data,) = stored_frames(ds)
    frame = decode_frame(header_of(name), JPEGExtended12Bit, data)
    reference = _dcmdjpeg(name, tmp_path).astype(np.int64)
    assert frame.pixels.shape == reference.shape == (1024, 256)
    assert np.ptp(reference) > 0
    # Lossy: within rounding of the inverse DCT, as for the other lossy syntaxes.
    assert np.abs(frame.pixels.astype(np.int64) - reference).max() <= 2
