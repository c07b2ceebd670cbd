"""Query parameters and media type of the Retrieve Rendered Transaction (PS3.18 8.3.5)."""

from __future__ import annotations

from collections.abc import Mapping

from app.digits import INT32, NumberError, parse_decimal, parse_int
from app.services import plan
from app.services.imaging import (
    ANNOTATIONS,
    RENDERED_MEDIA_TYPES,
    WINDOW_FUNCTIONS,
    RenderOptions,
    Viewport,
    Window,
    window_problem,
)
from app.web.negotiation import accept_ranges

ICC_PROFILES = ("no", "yes", "srgb", "adobergb", "rommrgb", "displayp3")  # PS3.18 8.3.5.1.5
DEFAULT_MAX_PIXELS = 4096 * 4096  # Settings.max_rendered_pixels


class RenderParamError(ValueError):
    """A rendering query parameter is malformed (HTTP 400); the message names it."""


class NotRenderable(ValueError):
    """None of the accepted media types can be rendered (HTTP 406)."""


def _parts(name: str, value: str, form: str) -> list[str]:
    if not value.strip():
        raise RenderParamError(f"{name}: a value is required ({form})")
    return [part.strip() for part in value.split(",")]


def _float(name: str, what: str, text: str) -> float:
    try:
        return parse_decimal(text)
    except NumberError:
        raise RenderParamError(f"{name}: the {what} must be a number, not {text!r}") from None


def _int(name: str, what: str, text: str, low: int = INT32[0], high: int = INT32[1]) -> int:
    try:
        return parse_int(text, low, high, signed=True)
    except NumberError as exc:
        must = "be an integer" if exc.value is None else f"be from {low} to {high}"
        raise RenderParamError(f"{name}: {what} must {must}, not {text!r}") from None


def parse_window(value: str) -> Window:
    """`center,width[,function]`; the function is LINEAR (default), LINEAR_EXACT or SIGMOID,
    in any case, with '-' or '_' (PS3.18 spells them linear, linear-exact, sigmoid)."""
    parts = _parts("window", value, "center,width[,function]")
    if len(parts) not in (2, 3):
        raise RenderParamError(
            f"window: expected center,width[,function], got {len(parts)} value(s) in {value!r}"
        )
    center = _float("window", "center", parts[0])
    width = _float("window", "width", parts[1])
    function = (parts[2] if len(parts) == 3 else "") or "LINEAR"
    function = function.upper().replace("-", "_")
    if function not in WINDOW_FUNCTIONS:
        raise RenderParamError(
            f"window: unknown function {parts[2]!r} (use {', '.join(WINDOW_FUNCTIONS)})"
        )
    window = Window(center, width, function)
    if problem := window_problem(window):
        raise RenderParamError(f"window: {problem}")
    return window


def check_output_size(name: str, width: int, height: int, max_pixels: int, frames: int = 1) -> None:
    """Refuse output images of more than `max_pixels` in all: rendering allocates each whole,
    and an animated GIF holds all of its `frames`."""
    total = width * height * frames
    if total > max_pixels:
        size = f"{width}x{height}" if frames == 1 else f"{frames} frames of {width}x{height}"
        raise RenderParamError(
            f"{name}: {size} is {total} pixels, over the limit of "
            f"{max_pixels} pixels per rendered image (PACS_MAX_RENDERED_PIXELS)"
        )


def parse_viewport(value: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Viewport:
    """`vw,vh` or `vw,vh,sx,sy,sw,sh`; sx..sh may be empty (their defaults); a negative sw or
    sh flips the image. The image fits within vw x vh, so vw * vh may not exceed
    `max_pixels`."""
    parts = _parts("viewport", value, "vw,vh or vw,vh,sx,sy,sw,sh")
    if len(parts) not in (2, 6):
        raise RenderParamError(
            f"viewport: expected vw,vh or vw,vh,sx,sy,sw,sh, got {len(parts)} value(s) in {value!r}"
        )
    width, height = _int("viewport", "vw", parts[0]), _int("viewport", "vh", parts[1])
    if width < 1 or height < 1:
        raise RenderParamError(f"viewport: vw and vh must be positive, not {width},{height}")
    check_output_size("viewport", width, height, max_pixels)
    region: list[int | None] = []
    for label, text in zip(("sx", "sy", "sw", "sh"), parts[2:], strict=False):
        number = _int("viewport", label, text) if text else None
        if number is not None and label in ("sx", "sy") and number < 0:
            raise RenderParamError(f"viewport: {label} must not be negative, not {number}")
        if number == 0 and label in ("sw", "sh"):
            raise RenderParamError(f"viewport: {label} must not be 0")
        region.append(number)
    return Viewport(width, height, *region)


def parse_quality(value: str) -> int:
    try:
        return parse_int(value, 1, 100)
    except NumberError:
        raise RenderParamError(
            f"quality: must be an integer from 1 to 100, not {value!r}"
        ) from None


def parse_annotation(value: str) -> frozenset[str]:
    items = [item.strip().lower() for item in value.split(",")]
    allowed = ", ".join(sorted(ANNOTATIONS))
    for item in items:
        if item not in ANNOTATIONS:
            raise RenderParamError(
                f"annotation: unknown value {item!r} (use a comma list of {allowed})"
            )
    return frozenset(items)


def parse_icc_profile(value: str) -> str:
    profile = value.strip().lower()
    if profile not in ICC_PROFILES:
        raise RenderParamError(
            f"iccprofile: unknown value {value!r} (use one of {', '.join(ICC_PROFILES)})"
        )
    return profile


def rendered_media_type(accept: str | None, *, allow_gif: bool) -> str:
    """The media type to render for an Accept header (see the plan's `rendered_media_type`);
    NotRenderable when none of the accepted ones can be."""
    media_type = plan.rendered_media_type(accept_ranges(accept), allow_gif=allow_gif)
    if media_type is None:
        offered = [t for t in RENDERED_MEDIA_TYPES if allow_gif or t != "image/gif"]
        raise NotRenderable(
            f"none of the accepted media types ({accept}) can be rendered; "
            f"rendered images are available as {', '.join(offered)}"
        )
    return media_type


def parse_render_options(
    query: Mapping[str, str],
    accept: str | None,
    *,
    allow_gif: bool,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RenderOptions:
    """PS3.18 8.3.5 query parameters: `window`, `viewport`, `quality`, `annotation`,
    `iccprofile`; the media type from the Accept header. Unknown parameters are ignored.
    Raises RenderParamError (400) for a malformed parameter and NotRenderable (406) when no
    accepted media type can be rendered; a viewport over `max_pixels` is malformed."""
    window = query.get("window")
    viewport = query.get("viewport")
    quality = query.get("quality")
    annotation = query.get("annotation")
    icc_profile = query.get("iccprofile")
    return RenderOptions(
        window=None if window is None else parse_window(window),
        viewport=None if viewport is None else parse_viewport(viewport, max_pixels),
        quality=None if quality is None else parse_quality(quality),
        annotation=frozenset() if annotation is None else parse_annotation(annotation),
        icc_profile=None if icc_profile is None else parse_icc_profile(icc_profile),
        media_type=rendered_media_type(accept, allow_gif=allow_gif),
    )
