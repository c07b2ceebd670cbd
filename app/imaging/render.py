"""Rendered images (PS3.18 8.3.5, 10.4.1.1.3) and thumbnails: decoded frames to JPEG, PNG or GIF.

`display.py` turns each frame into 8-bit display values; here the viewport crops, flips and
scales, annotations are burnt in; libjpeg-turbo (imagecodecs) encodes JPEG, Pillow PNG and GIF.
Everything here is synchronous: callers run it in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import imagecodecs
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from app.imaging.display import (
    Pixels,
    RenderError,
    Window,
    display_pixels,
    display_with_voi,
    first_float,
)

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
ANNOTATIONS = frozenset({"patient", "technique"})
DEFAULT_QUALITY = 90
DEFAULT_FRAME_TIME_MS = 100.0

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}


class ViewportError(RenderError):
    """The requested viewport selects no part of the image: a fault of the request."""


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
    frames = int(first_float(header.get("NumberOfFrames")) or 1)
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
    frame_time = first_float(header.get("FrameTime"))
    if frame_time and frame_time > 0:
        return frame_time
    for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = first_float(header.get(keyword))
        if rate and rate > 0:
            return 1000.0 / rate
    return DEFAULT_FRAME_TIME_MS


def encode_jpeg(display: NDArray[np.uint8], quality: int | None) -> bytes:
    """8-bit grey (rows, columns) or RGB (rows, columns, 3) display values as a baseline JPEG,
    byte for byte what Pillow's save(quality=...) writes (libjpeg's quality scaling, 4:2:0
    YCbCr for colour), but through imagecodecs, which releases the GIL while it encodes: two
    rendering workers then encode on two cores."""
    level = quality or DEFAULT_QUALITY
    display = np.ascontiguousarray(display)
    if display.ndim == 3:
        return bytes(
            imagecodecs.jpeg8_encode(
                display, level=level, colorspace="RGB", outcolorspace="YCbCr", subsampling="420"
            )
        )
    return bytes(imagecodecs.jpeg8_encode(display, level=level))


def _encode(
    images: list[Image.Image], media_type: str, quality: int | None, duration_ms: float
) -> bytes:
    out = io.BytesIO()
    first = images[0]
    if media_type == "image/jpeg" and first.mode in ("L", "RGB"):
        return encode_jpeg(np.asarray(first), quality)
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
        display, voi = display_with_voi(header, pixels, photometric, options.window, index)
        plain = options.viewport is None and not options.annotation
        if plain and options.media_type == "image/jpeg" and display.dtype == np.uint8:
            return encode_jpeg(display, options.quality)  # one frame: nothing to add
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
