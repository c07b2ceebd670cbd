"""Query parameters and Accept header of the Retrieve Rendered Transaction (PS3.18 8.3.5)."""

from __future__ import annotations

import pytest

from app.imaging.display import Window
from app.imaging.render import RenderOptions, Viewport
from app.web.render_params import (
    NotRenderable,
    RenderParamError,
    check_output_size,
    parse_render_options,
    rendered_media_type,
)


def _options(accept: str | None = None, allow_gif: bool = False, **query: str) -> RenderOptions:
    return parse_render_options(query, accept, allow_gif=allow_gif)


def test_no_parameters_give_the_defaults() -> None:
    assert _options() == RenderOptions()


def test_every_parameter_together_and_unknown_ones_ignored() -> None:
    options = _options(
        "image/png",
        window="40,400,SIGMOID",
        viewport="256,128,10,20,-100,50",
        quality="75",
        annotation="patient,technique",
        iccprofile="sRGB",
        charset="UTF-8",
        foo="bar",
    )
    assert options == RenderOptions(
        media_type="image/png",
        quality=75,
        window=Window(40.0, 400.0, "SIGMOID"),
        viewport=Viewport(256, 128, 10, 20, -100, 50),
        annotation=frozenset({"patient", "technique"}),
        icc_profile="srgb",
    )


@pytest.mark.parametrize(
    ("value", "window"),
    [
        ("40,400", Window(40.0, 400.0, "LINEAR")),
        ("40,400,LINEAR", Window(40.0, 400.0, "LINEAR")),
        ("40,400,", Window(40.0, 400.0, "LINEAR")),
        ("-600.5, 1500 ,linear", Window(-600.5, 1500.0, "LINEAR")),
        ("40,1,LINEAR", Window(40.0, 1.0, "LINEAR")),
        ("40,400,LINEAR_EXACT", Window(40.0, 400.0, "LINEAR_EXACT")),
        ("40,400,linear-exact", Window(40.0, 400.0, "LINEAR_EXACT")),
        ("40,0.5,LINEAR_EXACT", Window(40.0, 0.5, "LINEAR_EXACT")),
        ("1e3,2e3,Sigmoid", Window(1000.0, 2000.0, "SIGMOID")),
        ("40,0.25,SIGMOID", Window(40.0, 0.25, "SIGMOID")),
    ],
)
def test_window(value: str, window: Window) -> None:
    assert _options(window=value).window == window


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "window: a value is required"),
        (" ", "window: a value is required"),
        ("40", "window: expected center,width[,function], got 1 value(s)"),
        ("40,400,LINEAR,1", "got 4 value(s)"),
        ("abc,400", "window: the center must be a number, not 'abc'"),
        ("40,", "window: the width must be a number, not ''"),
        ("40,wide", "the width must be a number, not 'wide'"),
        ("nan,400", "the center must be a number, not 'nan'"),
        ("40,inf", "the width must be a number, not 'inf'"),
        ("40,0.5", "window: the window width must be at least 1 for LINEAR, not 0.5"),
        ("40,0,LINEAR_EXACT", "window: the window width must be greater than 0 for LINEAR_EXACT"),
        ("40,-3,SIGMOID", "greater than 0 for SIGMOID"),
        ("40,400,cubic", "window: unknown function 'cubic' (use LINEAR, LINEAR_EXACT, SIGMOID)"),
    ],
)
def test_invalid_window(value: str, message: str) -> None:
    with pytest.raises(RenderParamError) as caught:
        _options(window=value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("value", "viewport"),
    [
        ("512,512", Viewport(512, 512)),
        (" 640 , 480 ", Viewport(640, 480)),
        ("512,256,10,20,100,-50", Viewport(512, 256, 10, 20, 100, -50)),
        ("100,100,0,0,-64,-64", Viewport(100, 100, 0, 0, -64, -64)),
        ("100,100,,,,", Viewport(100, 100)),
        ("100,100,5,,-10,", Viewport(100, 100, 5, None, -10, None)),
    ],
)
def test_viewport(value: str, viewport: Viewport) -> None:
    assert _options(viewport=value).viewport == viewport


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "viewport: a value is required (vw,vh or vw,vh,sx,sy,sw,sh)"),
        ("512", "viewport: expected vw,vh or vw,vh,sx,sy,sw,sh, got 1 value(s)"),
        ("512,512,1", "got 3 value(s)"),
        ("512,512,1,2,3,4,5", "got 7 value(s)"),
        ("0,10", "viewport: vw and vh must be positive, not 0,10"),
        ("10,-5", "vw and vh must be positive, not 10,-5"),
        ("wide,10", "viewport: vw must be an integer, not 'wide'"),
        (",10", "viewport: vw must be an integer, not ''"),
        ("10,10.5", "viewport: vh must be an integer, not '10.5'"),
        ("10,10,-1,0,5,5", "viewport: sx must not be negative, not -1"),
        ("10,10,0,-2,5,5", "viewport: sy must not be negative, not -2"),
        ("10,10,1.5,0,5,5", "viewport: sx must be an integer, not '1.5'"),
        ("10,10,0,0,0,5", "viewport: sw must not be 0"),
        ("10,10,0,0,5,0", "viewport: sh must not be 0"),
        # issue 10: ASCII digits only, and values within 32 bits
        ("\u0661\u0660,10", "viewport: vw must be an integer, not '\u0661\u0660'"),
        ("1_0,10", "viewport: vw must be an integer, not '1_0'"),
        ("10,10,0,0,99999999999,5", "viewport: sw must be from -2147483648 to 2147483647"),
    ],
)
def test_invalid_viewport(value: str, message: str) -> None:
    with pytest.raises(RenderParamError) as caught:
        _options(viewport=value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("value", "quality"), [("1", 1), ("100", 100), (" 50 ", 50)])
def test_quality(value: str, quality: int) -> None:
    assert _options(quality=value).quality == quality


@pytest.mark.parametrize("value", ["0", "101", "-5", "abc", "", "50.5", "\u0665\u0660", "5_0"])
def test_invalid_quality(value: str) -> None:
    with pytest.raises(RenderParamError) as caught:
        _options(quality=value)
    assert str(caught.value) == f"quality: must be an integer from 1 to 100, not {value!r}"


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        ("patient", {"patient"}),
        ("technique", {"technique"}),
        ("patient,technique", {"patient", "technique"}),
        (" Technique , PATIENT ", {"patient", "technique"}),
        ("patient,patient", {"patient"}),
    ],
)
def test_annotation(value: str, annotation: set[str]) -> None:
    assert _options(annotation=value).annotation == frozenset(annotation)


@pytest.mark.parametrize(("value", "item"), [("foo", "foo"), ("patient,", ""), ("", "")])
def test_invalid_annotation(value: str, item: str) -> None:
    with pytest.raises(RenderParamError) as caught:
        _options(annotation=value)
    expected = f"annotation: unknown value {item!r} (use a comma list of patient, technique)"
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("value", "profile"),
    [
        ("no", "no"),
        ("YES", "yes"),
        ("srgb", "srgb"),
        ("adobergb", "adobergb"),
        ("rommrgb", "rommrgb"),
        ("displayp3", "displayp3"),
    ],
)
def test_icc_profile(value: str, profile: str) -> None:
    assert _options(iccprofile=value).icc_profile == profile


@pytest.mark.parametrize("value", ["cmyk", "", "s rgb"])
def test_invalid_icc_profile(value: str) -> None:
    with pytest.raises(RenderParamError) as caught:
        _options(iccprofile=value)
    assert str(caught.value).startswith(f"iccprofile: unknown value {value!r} (use one of no, yes")


@pytest.mark.parametrize(
    ("accept", "allow_gif", "media_type"),
    [
        (None, False, "image/jpeg"),
        ("", False, "image/jpeg"),
        ("*/*", False, "image/jpeg"),
        ("image/*", True, "image/jpeg"),
        ("image/jpeg", False, "image/jpeg"),
        ("image/png", False, "image/png"),
        ("IMAGE/PNG", False, "image/png"),
        ("image/gif", True, "image/gif"),
        ("image/png;q=0.5, image/jpeg;q=0.9", False, "image/jpeg"),
        ("image/jpeg;q=0.5, image/png", False, "image/png"),
        ("image/gif, image/png;q=0.8", False, "image/png"),
        ("application/dicom, image/*;q=0.1", False, "image/jpeg"),
        ("image/jpeg;q=0, */*", False, "image/png"),
        ("image/jpeg;q=0, image/png;q=0, image/*", True, "image/gif"),
        ("text/html, image/gif;q=0.8", True, "image/gif"),
        ("image/png;q=oops", False, "image/png"),
    ],
)
def test_media_type_from_accept(accept: str | None, allow_gif: bool, media_type: str) -> None:
    assert rendered_media_type(accept, allow_gif=allow_gif) == media_type
    assert _options(accept, allow_gif).media_type == media_type


@pytest.mark.parametrize(
    ("accept", "allow_gif", "offered"),
    [
        ("image/gif", False, "image/jpeg, image/png"),
        ("application/dicom", True, "image/jpeg, image/png, image/gif"),
        ('multipart/related; type="image/jpeg"', False, "image/jpeg, image/png"),
        ("*/*;q=0", False, "image/jpeg, image/png"),
        ("image/jpeg;q=0, image/png;q=0, image/*", False, "image/jpeg, image/png"),
    ],
)
def test_media_type_not_renderable(accept: str, allow_gif: bool, offered: str) -> None:
    with pytest.raises(NotRenderable) as caught:
        _options(accept, allow_gif)
    assert str(caught.value) == (
        f"none of the accepted media types ({accept}) can be rendered; "
        f"rendered images are available as {offered}"
    )
    assert not isinstance(caught.value, RenderParamError)


@pytest.mark.parametrize(
    ("value", "pixels"),
    [("100000,100000", 10**10), ("16777216,2", 2**25), ("4097,4096", 4097 * 4096)],
)
def test_a_viewport_over_the_pixel_limit_is_refused(value: str, pixels: int) -> None:
    """Issue 10: viewport=100000,100000 rendered a 10-gigapixel image (9.7 GB resident)."""
    with pytest.raises(RenderParamError) as caught:
        _options(viewport=value)
    assert str(caught.value).endswith(
        f"is {pixels} pixels, over the limit of 16777216 pixels per rendered image"
        " (PACS_MAX_RENDERED_PIXELS)"
    )


def test_the_pixel_limit_is_the_callers() -> None:
    viewport = parse_render_options({"viewport": "10,10"}, None, allow_gif=False, max_pixels=100)
    assert viewport.viewport == Viewport(10, 10)
    assert _options(viewport="4096,4096").viewport == Viewport(4096, 4096)
    with pytest.raises(RenderParamError, match="over the limit of 99 pixels"):
        parse_render_options({"viewport": "10,10"}, None, allow_gif=False, max_pixels=99)


def test_an_animation_counts_every_frame() -> None:
    check_output_size("viewport", 10, 10, 300, frames=3)
    with pytest.raises(RenderParamError) as caught:
        check_output_size("viewport", 10, 10, 299, frames=3)
    assert str(caught.value) == (
        "viewport: 3 frames of 10x10 is 300 pixels, over the limit of 299 pixels per rendered"
        " image (PACS_MAX_RENDERED_PIXELS)"
    )
