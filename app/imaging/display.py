"""Display values of a decoded frame: what a grayscale or colour pipeline shows, in 8 bits.

Grey data follows the grayscale pipeline of PS3.4 N.2.1: Modality LUT (rescale or LUT, per-frame
functional groups included), VOI LUT (window or LUT), then MONOCHROME1 inversion. Colour data is
brought to 8-bit RGB (YBR converted, palette colour looked up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # PS3.3 C.11.2.1.3

_GREY = ("MONOCHROME1", "MONOCHROME2")
_YBR_FULL_MATRIX = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT")  # ICT uses the YBR_FULL equations

Pixels = NDArray[Any]
Display = NDArray[np.uint8]


class RenderError(Exception):
    """The object cannot be rendered (message says why, e.g. no pixel data / unsupported
    photometric interpretation)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT, SIGMOID (PS3.3 C.11.2.1.2)


def window_problem(window: Window) -> str | None:
    """Why `window` cannot be applied (PS3.3 C.11.2.1.2), or None when it can."""
    if window.function not in WINDOW_FUNCTIONS:
        return f"unknown VOI LUT function {window.function!r} (use {', '.join(WINDOW_FUNCTIONS)})"
    if not (math.isfinite(window.center) and math.isfinite(window.width)):
        return "the window center and width must be finite numbers"
    if window.function == "LINEAR" and window.width < 1:
        return f"the window width must be at least 1 for LINEAR, not {window.width:g}"
    if window.width <= 0:
        return f"the window width must be greater than 0 for {window.function}"
    return None


# --- Grayscale pipeline -------------------------------------------------------------------


def first_float(value: object) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return first_float(value[0]) if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _frame_macro(header: Dataset, keyword: str, frame_index: int) -> Dataset | None:
    """First item of functional group `keyword` for a frame: per-frame, else shared (C.7.6.16)."""
    for groups_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame_index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = header.get(groups_keyword)
        if groups and 0 <= index < len(groups):
            macro = groups[index].get(keyword)
            if macro:
                item: Dataset = macro[0]
                return item
    return None


def _rescale(header: Dataset, frame_index: int) -> tuple[float, float]:
    source = _frame_macro(header, "PixelValueTransformationSequence", frame_index) or header
    slope = first_float(source.get("RescaleSlope"))
    intercept = first_float(source.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _modality_values(header: Dataset, pixels: Pixels, frame_index: int) -> NDArray[np.float64]:
    """PS3.3 C.11.1: stored values to modality values."""
    if np.issubdtype(pixels.dtype, np.integer) and header.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(pixels, header), dtype=np.float64)
    return _rescaled(pixels, *_rescale(header, frame_index))


def _rescaled(pixels: Pixels, slope: float, intercept: float) -> NDArray[np.float64]:
    values = pixels.astype(np.float64)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def _window_from(source: Dataset) -> Window | None:
    center = first_float(source.get("WindowCenter"))
    width = first_float(source.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
    window = Window(center, width, function if function in WINDOW_FUNCTIONS else "LINEAR")
    # A header window that cannot be applied is skipped, not fatal: the image still renders.
    return None if window_problem(window) else window


def _object_voi(header: Dataset, frame_index: int) -> tuple[Window | None, Dataset | None]:
    """The object's own VOI: (first window, None) or (None, dataset holding a VOI LUT)."""
    frame_voi = _frame_macro(header, "FrameVOILUTSequence", frame_index)
    for source in (frame_voi, header):
        if source is not None and (window := _window_from(source)) is not None:
            return window, None
    for source in (frame_voi, header):
        if source is not None and source.get("VOILUTSequence"):
            return None, source
    return None, None


def _apply_window(values: NDArray[np.float64], window: Window) -> NDArray[np.float64]:
    """PS3.3 C.11.2.1.2/C.11.2.1.3 with the output range 0..255."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        exponent = np.clip(-4.0 * (values - center) / width, -700.0, 700.0)
        return 255.0 / (1.0 + np.exp(exponent))
    if window.function == "LINEAR":
        center, width = center - 0.5, width - 1.0
        if width == 0:  # a width of 1 is a threshold
            return np.where(values > center, 255.0, 0.0)
    scaled = ((values - center) / width + 0.5) * 255.0
    return np.clip(scaled, 0.0, 255.0, out=scaled)


def _apply_voi_lut(values: NDArray[np.float64], source: Dataset) -> NDArray[np.float64] | None:
    """The first VOI LUT of `source` scaled to 0..255; None when the LUT is unusable."""
    try:
        entries, first, bits = (int(v) for v in source.VOILUTSequence[0].LUTDescriptor)
        entries = entries or 65536
        # LUT input is integral; clipping first keeps pydicom's uint16 index arithmetic exact.
        inputs = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
        output = apply_voi(inputs, source)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, NotImplementedError):
        return None
    return np.asarray(output, dtype=np.float64) * (255.0 / ((1 << bits) - 1))


def _is_narrow_unsigned(header: Dataset, pixels: Pixels) -> bool:
    """Integer data of at most 8 bits with no modality transform: shown as stored."""
    if not np.issubdtype(pixels.dtype, np.integer) or header.get("ModalityLUTSequence"):
        return False
    bits = int(header.get("BitsStored") or pixels.dtype.itemsize * 8)
    return bits <= 8 and int(header.get("PixelRepresentation") or 0) == 0


def _format_window(window: Window) -> str:
    text = f"C {window.center:.6g} W {window.width:.6g}"
    return text if window.function == "LINEAR" else f"{text} {window.function}"


def _grey_display(
    header: Dataset, pixels: Pixels, window: Window | None, frame_index: int
) -> tuple[NDArray[np.float64], str]:
    """Display values 0..255 (before inversion) and how they were obtained, for annotations."""
    if window is not None and (problem := window_problem(window)):
        raise RenderError(problem)
    values = _modality_values(header, pixels, frame_index)
    if window is not None:
        return _apply_window(values, window), _format_window(window)
    object_window, lut_source = _object_voi(header, frame_index)
    if object_window is not None:
        return _apply_window(values, object_window), _format_window(object_window)
    if lut_source is not None and (mapped := _apply_voi_lut(values, lut_source)) is not None:
        explanation = str(lut_source.VOILUTSequence[0].get("LUTExplanation") or "").strip()
        return mapped, f"VOI LUT {explanation}".strip()
    slope, intercept = _rescale(header, frame_index)
    if (slope, intercept) == (1.0, 0.0) and _is_narrow_unsigned(header, pixels):
        top = 2.0 ** int(header.get("BitsStored") or 8) - 1.0
        return values * (255.0 / top), f"C {(top + 1) / 2:g} W {top + 1:g}"
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros_like(values), f"C {low:.6g} W 0"
    full = Window((low + high) / 2, high - low, "LINEAR_EXACT")
    return _apply_window(values, full), f"C {full.center:.6g} W {full.width:.6g}"


def _to_display(values: NDArray[np.float64], photometric: str) -> Display:
    """Display values 0..255 to uint8, MONOCHROME1 inverted."""
    if photometric == "MONOCHROME1":
        values = 255.0 - values
    # Clipped: a LUT may hold entries beyond its declared bits, or 1-bit data stray bits.
    return np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)


def grey_by_float(
    header: Dataset, pixels: Pixels, photometric: str, window: Window | None, frame_index: int
) -> tuple[Display, str]:
    """The grayscale pipeline computed pixel by pixel in floating point: the reference the
    lookup tables of `_grey_by_lut` are built from, and the path for what they do not cover."""
    values, voi = _grey_display(header, pixels, window, frame_index)
    return _to_display(values, photometric), voi


# --- Grayscale pipeline by lookup table ----------------------------------------------------
#
# For integer data of at most 16 bits with a rescale (no Modality LUT) and a window, every
# step is a function of the stored value alone: one uint8 table over all values of the dtype
# (built with the float pipeline itself, so the output is identical) replaces five float
# passes over the frame by one indexing pass. Signed data indexes the table by its bit pattern
# (a view as unsigned), so no subtraction pass is needed.


@lru_cache(maxsize=32)  # a table is at most 64 KiB; a viewer uses a few windows at a time
def _window_lut(
    dtype: str, slope: float, intercept: float, window: Window, photometric: str
) -> Display:
    kind = np.dtype(dtype)
    unsigned = np.dtype(f"u{kind.itemsize}")
    stored = np.arange(1 << (8 * kind.itemsize), dtype=unsigned).view(kind)
    lut = _to_display(_apply_window(_rescaled(stored, slope, intercept), window), photometric)
    lut.setflags(write=False)  # shared between threads and requests
    return lut


def _value_range_window(pixels: Pixels, slope: float, intercept: float) -> Window | None:
    """The min/max window `_grey_display` falls back to, from the stored extremes (the same
    float operations on the same values); None when the float path should decide."""
    ends = _rescaled(np.array([pixels.min(), pixels.max()]), slope, intercept)
    low, high = float(ends.min()), float(ends.max())
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return None
    return Window((low + high) / 2, high - low, "LINEAR_EXACT")


def _grey_by_lut(
    header: Dataset, pixels: Pixels, photometric: str, window: Window | None, frame_index: int
) -> tuple[Display, str] | None:
    """`grey_by_float`'s result by lookup table, or None when no table applies."""
    dtype = pixels.dtype
    if dtype.kind not in "iu" or dtype.itemsize > 2 or not dtype.isnative or not pixels.size:
        return None
    if header.get("ModalityLUTSequence"):
        return None
    slope, intercept = _rescale(header, frame_index)
    if window is None:
        window, lut_source = _object_voi(header, frame_index)
        if window is None:
            if lut_source is not None or (
                (slope, intercept) == (1.0, 0.0) and _is_narrow_unsigned(header, pixels)
            ):
                return None
            window = _value_range_window(pixels, slope, intercept)
            if window is None:
                return None
            voi = f"C {window.center:.6g} W {window.width:.6g}"
            lut = _window_lut(dtype.str, slope, intercept, window, photometric)
            return _lookup(lut, pixels), voi
    lut = _window_lut(dtype.str, slope, intercept, window, photometric)
    return _lookup(lut, pixels), _format_window(window)


def _lookup(lut: Display, pixels: Pixels) -> Display:
    index = pixels.view(f"u{pixels.dtype.itemsize}")
    shown: Display = np.take(lut, index)  # twice as fast as lut[index]; releases the GIL
    return shown


# --- Colour --------------------------------------------------------------------------------


def _to_8_bits(values: Pixels, bits: int) -> Display:
    """Integer samples of `bits` bits to 0..255 by their high bits; floats clipped to 0..255."""
    if not np.issubdtype(values.dtype, np.integer):
        values = np.nan_to_num(values)
    elif bits > 8:
        values = np.right_shift(values, bits - 8)
    clipped: Pixels = np.clip(values, 0, 255)
    return clipped.astype(np.uint8)


def _rct_to_rgb(ybr: Pixels, bits: int) -> Pixels:
    """Inverse reversible colour transform (ITU-T T.800 G.2). Cb = B - G and Cr = R - G are
    signed; unsigned arrays carry them with the mid-range offset YBR_FULL uses."""
    y, cb, cr = (ybr[..., i].astype(np.int64) for i in range(3))
    if not np.issubdtype(ybr.dtype, np.signedinteger):
        cb, cr = cb - (1 << (bits - 1)), cr - (1 << (bits - 1))
    green: NDArray[np.int64] = y - np.floor_divide(cb + cr, 4)
    rgb: NDArray[np.int64] = np.stack([cr + green, green, cb + green], axis=-1)
    return np.clip(rgb, 0, (1 << bits) - 1)


def _colour_display(header: Dataset, pixels: Pixels, photometric: str) -> Display:
    if photometric == "PALETTE COLOR":
        if pixels.ndim != 2:
            raise RenderError("PALETTE COLOR pixel data must have one sample per pixel")
        try:
            rgb = apply_color_lut(pixels, header)
            bits = int(header.RedPaletteColorLookupTableDescriptor[2])
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise RenderError(f"the palette colour lookup table cannot be applied: {exc}") from exc
        return _to_8_bits(rgb[..., :3], bits)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise RenderError(f"{photometric} pixel data must have three samples per pixel")
    bits = int(header.get("BitsStored") or pixels.dtype.itemsize * 8)
    if photometric == "YBR_RCT":
        return _to_8_bits(_rct_to_rgb(pixels, bits), bits)
    rgb8 = _to_8_bits(pixels, bits)
    if photometric in _YBR_FULL_MATRIX:
        return np.asarray(convert_color_space(rgb8, "YBR_FULL", "RGB"), dtype=np.uint8)
    return rgb8


# --- Display values ------------------------------------------------------------------------


def display_with_voi(
    header: Dataset, pixels: Pixels, photometric: str, window: Window | None, frame_index: int
) -> tuple[Display, str]:
    photometric = photometric.strip().upper()
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    if photometric in _GREY:
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim != 2:
            raise RenderError(f"{photometric} pixel data must have one sample per pixel")
        if window is not None and (problem := window_problem(window)):
            raise RenderError(problem)
        by_lut = _grey_by_lut(header, pixels, photometric, window, frame_index)
        return by_lut or grey_by_float(header, pixels, photometric, window, frame_index)
    if photometric in ("RGB", "PALETTE COLOR", "YBR_RCT", *_YBR_FULL_MATRIX):
        return _colour_display(header, pixels, photometric), ""
    raise RenderError(f"photometric interpretation {photometric or '(none)'} cannot be rendered")


def display_pixels(
    header: Dataset,
    pixels: Pixels,
    photometric: str,
    window: Window | None = None,
    frame_index: int = 0,
) -> Display:
    """8-bit display values: (rows, cols) uint8 for grey, (rows, cols, 3) uint8 RGB for colour.

    Grey: Modality LUT (rescale or LUT sequence, per-frame functional groups too), then VOI
    (given window, else the object's first window, else the VOI LUT sequence, else the min/max
    of the modality values), MONOCHROME1 inverted. Integer data of at most 8 bits without a
    modality transform is shown as stored unless a window applies. Colour: RGB as is; YBR_FULL,
    YBR_FULL_422, YBR_ICT and YBR_RCT converted to RGB (the array is still in that colour
    space: pydicom's decoders label what they converted "RGB"); PALETTE COLOR through its LUT
    (8 or 16-bit entries, segmented too). Wider samples keep their high 8 bits.
    """
    return display_with_voi(header, pixels, photometric, window, frame_index)[0]


# --- Geometry, annotation, encoding ---------------------------------------------------------
