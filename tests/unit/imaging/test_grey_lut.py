"""The grayscale pipeline by lookup table gives exactly what the float pipeline gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from app.imaging import display
from app.imaging.display import Window, display_with_voi, grey_by_float

# (dtype, bits stored, pixel representation)
DEPTHS = [("uint8", 8, 0), ("int8", 8, 1), ("uint16", 12, 0), ("int16", 12, 1), ("uint16", 16, 0),
          ("int16", 16, 1)]  # fmt: skip
RESCALES = [(1.0, 0.0), (1.0, -1024.0), (0.5, 3.25), (-2.5, 100.0)]
WINDOWS = [
    Window(40, 400),
    Window(-600, 1500, "LINEAR_EXACT"),
    Window(10.5, 1, "LINEAR"),
    Window(0, 0.5, "LINEAR_EXACT"),
    Window(300, 2000, "SIGMOID"),
    Window(127.5, 256),
]


def _pixels(dtype: str, bits: int, signed: int) -> NDArray[Any]:
    """Every stored value of `bits` bits (and a few stray high ones), in a 2-D frame."""
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = np.arange(low, high + 1, dtype=np.int64)
    info = np.iinfo(dtype)
    values = np.concatenate([values, [info.min, info.max]]).astype(dtype)
    return np.resize(values, (len(values) // 64 + 1, 64))


def _header(bits: int, signed: int, slope: float, intercept: float) -> Dataset:
    header = Dataset()
    header.BitsAllocated = 16 if bits > 8 else 8
    header.BitsStored, header.HighBit, header.PixelRepresentation = bits, bits - 1, signed
    header.RescaleSlope, header.RescaleIntercept = slope, intercept
    return header


def _both(
    header: Dataset, pixels: NDArray[Any], photometric: str, window: Window | None
) -> tuple[tuple[NDArray[np.uint8], str], tuple[NDArray[np.uint8], str]]:
    before = display._window_lut.cache_info()
    by_lut = display_with_voi(header, pixels, photometric, window, 0)
    after = display._window_lut.cache_info()
    # The table was used: a test of the float path against itself could not fail.
    assert after.hits + after.misses == before.hits + before.misses + 1
    return by_lut, grey_by_float(header, pixels, photometric, window, 0)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize(("slope", "intercept"), RESCALES)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_lut_equals_float_pipeline_for_given_windows(
    depth: tuple[str, int, int], slope: float, intercept: float, photometric: str
) -> None:
    dtype, bits, signed = depth
    header, pixels = _header(bits, signed, slope, intercept), _pixels(dtype, bits, signed)
    for window in WINDOWS:
        (shown, voi), (expected, expected_voi) = _both(header, pixels, photometric, window)
        assert shown.dtype == np.uint8 and shown.flags.c_contiguous
        np.testing.assert_array_equal(shown, expected, err_msg=str(window))
        assert voi == expected_voi


@pytest.mark.parametrize(("dtype", "bits", "signed"), DEPTHS)
@pytest.mark.parametrize(("slope", "intercept"), RESCALES[1:])  # (1, 0) at 8 bits: as stored
def test_lut_equals_float_pipeline_for_header_and_value_range_windows(
    dtype: str, bits: int, signed: int, slope: float, intercept: float
) -> None:
    header, pixels = _header(bits, signed, slope, intercept), _pixels(dtype, bits, signed)
    # The value range (no window anywhere), on a frame that does not span the whole dtype.
    part = pixels[1:3]
    (shown, voi), (expected, expected_voi) = _both(header, part, "MONOCHROME2", None)
    np.testing.assert_array_equal(shown, expected)
    assert voi == expected_voi and shown.min() == 0 and shown.max() == 255
    header.WindowCenter, header.WindowWidth, header.VOILUTFunction = [30, 90], [80, 5], "SIGMOID"
    (shown, voi), (expected, expected_voi) = _both(header, pixels, "MONOCHROME1", None)
    np.testing.assert_array_equal(shown, expected)
    assert voi == expected_voi == "C 30 W 80 SIGMOID"


def test_big_endian_and_modality_lut_take_the_float_path() -> None:
    header = _header(16, 0, 1.0, 0.0)
    pixels = np.arange(4096, dtype=">u2").reshape(64, 64)
    before = display._window_lut.cache_info()
    shown, _ = display_with_voi(header, pixels, "MONOCHROME2", Window(2048, 4096), 0)
    assert display._window_lut.cache_info() == before
    expected, _ = grey_by_float(header, pixels.astype("<u2"), "MONOCHROME2", Window(2048, 4096), 0)
    np.testing.assert_array_equal(shown, expected)
