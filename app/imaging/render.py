"""Rendered images (PS3.18 8.3.5, 10.4.1.1.3) and thumbnails: decoded frames to JPEG, PNG or GIF.

Grey data follows the grayscale pipeline of PS3.4 N.2.1: Modality LUT (rescale or LUT, per-frame
functional groups included), VOI LUT (window or LUT), then MONOCHROME1 inversion. Colour data is
brought to 8-bit RGB. Then the viewport crops, flips and scales, annotations are burnt in and
Pillow encodes. Everything here is synchronous: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # PS3.3 C.11.2.1.3
ANNOTATIONS = frozenset({"patient", "technique"})
DEFAULT_QUALITY = 90
DEFAULT_FRAME_TIME_MS = 100.0

_GREY = ("MONOCHROME1", "MONOCHROME2")
_YBR_FULL_MATRIX = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT")  # ICT uses the YBR_FULL equations
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}

Pixels = NDArray[Any]
Display = NDArray[np.uint8]


class RenderError(Exception):
    """The object cannot be rendered (message says why, e.g. no pixel data / unsupported
    photometric interpretation)."""


class ViewportError(RenderError):
    """The requested viewport selects no part of the image: a fault of the request."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT, SIGMOID (PS3.3 C.11.2.1.2)


@dataclass(frozen=True)
class Viewport:
    """PS3.18 8.3.5.1.3 `viewport=vw,vh[,sx,sy,sw,sh]`: the source region (default: the whole
    image) is scaled to fit within vw x vh; a negative sw or sh flips it."""

    width: int
    height: int
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    quality: int | None = None  # 1..100 (JPEG); None: DEFAULT_QUALITY
    window: Window | None = None  # None: from the object, else the range of its values
    viewport: Viewport | None = None  # None: native size
    annotation: frozenset[str] = frozenset()  # subset of ANNOTATIONS
    icc_profile: str | None = None  # iccprofile parameter; stored, not applied


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


def _first_float(value: object) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return _first_float(value[0]) if len(value) else None
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
    slope = _first_float(source.get("RescaleSlope"))
    intercept = _first_float(source.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _modality_values(header: Dataset, pixels: Pixels, frame_index: int) -> NDArray[np.float64]:
    """PS3.3 C.11.1: stored values to modality values."""
    if np.issubdtype(pixels.dtype, np.integer) and header.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(pixels, header), dtype=np.float64)
    slope, intercept = _rescale(header, frame_index)
    values = pixels.astype(np.float64)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def _window_from(source: Dataset) -> Window | None:
    center = _first_float(source.get("WindowCenter"))
    width = _first_float(source.get("WindowWidth"))
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


def _display(
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
        values, voi = _grey_display(header, pixels, window, frame_index)
        if photometric == "MONOCHROME1":
            values = 255.0 - values
        # Clipped: a LUT may hold entries beyond its declared bits, or 1-bit data stray bits.
        return np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8), voi
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
    return _display(header, pixels, photometric, window, frame_index)[0]


# --- Geometry, annotation, encoding ---------------------------------------------------------


def _apply_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    columns, rows = image.size
    sx, sy = viewport.sx or 0, viewport.sy or 0
    sw = columns - sx if viewport.sw is None else viewport.sw
    sh = rows - sy if viewport.sh is None else viewport.sh
    if viewport.width < 1 or viewport.height < 1:
        raise ViewportError("the viewport width and height must be positive")
    if not (0 <= sx < columns and 0 <= sy < rows) or sw == 0 or sh == 0:
        raise ViewportError(
            f"the viewport region (sx={sx}, sy={sy}, sw={sw}, sh={sh}) selects no part of "
            f"the {columns}x{rows} image"
        )
    region = image.crop((sx, sy, min(columns, sx + abs(sw)), min(rows, sy + abs(sh))))
    if sw < 0:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        region = region.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    width, height = region.size
    scale = min(viewport.width / width, viewport.height / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return region if size == region.size else region.resize(size, Image.Resampling.LANCZOS)


def _text(header: Dataset, keyword: str) -> str:
    return str(header.get(keyword) or "").replace("^", " ").strip()


def _date(value: str) -> str:
    return (
        f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
    )


def _patient_lines(header: Dataset) -> list[str]:
    patient_id = _text(header, "PatientID")
    born = " ".join(
        p for p in (_date(_text(header, "PatientBirthDate")), _text(header, "PatientSex")) if p
    )
    return [
        line
        for line in (_text(header, "PatientName"), patient_id and f"ID {patient_id}", born)
        if line
    ]


def _technique_lines(header: Dataset, voi: str, frame_index: int) -> list[str]:
    series = " ".join(
        p for p in (_text(header, "Modality"), _text(header, "SeriesDescription")) if p
    )
    frames = int(_first_float(header.get("NumberOfFrames")) or 1)
    frame = f"Frame {frame_index + 1}" + (f" of {frames}" if frames > 1 else "")
    return [line for line in (series, voi, frame) if line]


def _annotate(image: Image.Image, top_left: list[str], bottom_left: list[str]) -> None:
    """Burn in white text with a black outline: legible on any background."""
    size = max(10, min(image.size) // 24)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    white: int | tuple[int, int, int] = 255 if image.mode == "L" else (255, 255, 255)
    black: int | tuple[int, int, int] = 0 if image.mode == "L" else (0, 0, 0)
    margin, step, stroke = max(2, size // 3), size + size // 4, max(1, size // 10)

    def write(lines: list[str], y: float) -> None:
        for line in lines:
            draw.text(
                (margin, y), line, fill=white, font=font, stroke_width=stroke, stroke_fill=black
            )
            y += step

    write(top_left, margin)
    write(bottom_left, image.size[1] - margin - step * len(bottom_left))


def _frame_duration_ms(header: Dataset) -> float:
    """Time between GIF frames from Frame Time, else a frame rate, else DEFAULT_FRAME_TIME_MS."""
    frame_time = _first_float(header.get("FrameTime"))
    if frame_time and frame_time > 0:
        return frame_time
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _first_float(header.get(keyword))
        if rate and rate > 0:
            return 1000.0 / rate
    return DEFAULT_FRAME_TIME_MS


def _encode(
    images: list[Image.Image], media_type: str, quality: int | None, duration_ms: float
) -> bytes:
    out = io.BytesIO()
    first = images[0]
    if media_type == "image/jpeg":
        first.save(out, "JPEG", quality=quality or DEFAULT_QUALITY)
    elif media_type == "image/png":
        first.save(out, "PNG")
    elif len(images) == 1:
        first.save(out, "GIF")
    else:
        # Browsers treat delays under 20 ms as 100 ms: keep fast cines fast but valid.
        duration = max(20, round(duration_ms))
        first.save(out, "GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return out.getvalue()


def _check_media_type(media_type: str) -> None:
    if media_type not in RENDERED_MEDIA_TYPES:
        raise RenderError(
            f"{media_type} cannot be rendered; use one of {', '.join(RENDERED_MEDIA_TYPES)}"
        )


def render(
    header: Dataset,
    frames: Sequence[tuple[Pixels, str]],
    options: RenderOptions,
    frame_indexes: Sequence[int] | None = None,
) -> bytes:
    """Encoded image: one frame gives a JPEG, PNG or GIF of it; several an animated GIF (only
    with image/gif). `frame_indexes` are the frames' 0-based indexes in the object (for
    per-frame functional groups and annotations; default 0, 1, ...). The viewport crops,
    flips and scales to fit within vw x vh, aspect kept; annotation burns in "patient"
    (name, ID, birth date, sex; top left) and "technique" (modality, series, VOI, frame;
    bottom left)."""
    _check_media_type(options.media_type)
    if not frames:
        raise RenderError("there is no frame to render")
    if len(frames) > 1 and options.media_type != "image/gif":
        raise RenderError(
            f"several frames cannot be rendered as {options.media_type}; use image/gif"
        )
    indexes = list(range(len(frames))) if frame_indexes is None else list(frame_indexes)
    if len(indexes) != len(frames):
        raise RenderError("frame_indexes must name one index for each frame")
    images: list[Image.Image] = []
    for (pixels, photometric), index in zip(frames, indexes, strict=True):
        display, voi = _display(header, pixels, photometric, options.window, index)
        image = Image.fromarray(display)
        if options.viewport is not None:
            image = _apply_viewport(image, options.viewport)
        if options.annotation:
            _annotate(
                image,
                _patient_lines(header) if "patient" in options.annotation else [],
                _technique_lines(header, voi, index) if "technique" in options.annotation else [],
            )
        images.append(image)
    return _encode(images, options.media_type, options.quality, _frame_duration_ms(header))


def thumbnail(
    header: Dataset,
    pixels: Pixels,
    photometric: str,
    media_type: str = "image/jpeg",
    size: int = 128,
) -> bytes:
    """Small representative image that fits in size x size, aspect kept (never enlarged)."""
    _check_media_type(media_type)
    if size < 1:
        raise RenderError("the thumbnail size must be positive")
    image = Image.fromarray(display_pixels(header, pixels, photometric))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return _encode([image], media_type, None, DEFAULT_FRAME_TIME_MS)
