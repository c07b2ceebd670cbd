"""Rendered images: display values checked against pydicom's own LUT functions, and the encoded
output decoded again with Pillow."""

from __future__ import annotations

import copy
import io
import warnings
from functools import cache
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_palette_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
)
from pydicom.pixels.utils import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from app.imaging.display import RenderError, Window, display_pixels
from app.imaging.render import RenderOptions, Viewport, ViewportError, render, thumbnail
from tests.support.dicom_factory import make_dataset


@cache
def _load(name: str) -> tuple[Dataset, NDArray[Any]]:
    """Header (no pixel data, file meta kept) and pixel array of a pydicom test file."""
    path = get_testdata_file(name)
    assert path is not None, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some corpus files carry odd values on purpose
        header = dcmread(path, stop_before_pixels=True)
        pixels = dcmread(path).pixel_array
    return header, pixels


def _full(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _png(header: Dataset, pixels: NDArray[Any], photometric: str, **options: Any) -> NDArray[Any]:
    data = render(header, [(pixels, photometric)], RenderOptions(media_type="image/png", **options))
    return np.asarray(_decode(data))


def _voi_range(ds: Dataset) -> tuple[float, float]:
    """The output range pydicom's apply_windowing maps onto (its y_min, y_max)."""
    bits = int(ds.BitsStored)
    low, high = (
        (0, 2**bits - 1)
        if ds.PixelRepresentation == 0
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if "RescaleSlope" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = low * slope + intercept, high * slope + intercept
    return low, high


def _pydicom_display(ds: Dataset, pixels: NDArray[Any]) -> NDArray[np.float64]:
    """pydicom's Modality LUT + VOI LUT, rescaled from its output range to 0..255."""
    voi = apply_voi_lut(apply_modality_lut(pixels, ds), ds, prefer_lut=False)
    low, high = _voi_range(ds)
    return (np.asarray(voi, dtype=np.float64) - low) / (high - low) * 255.0


# --- Grey ----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_given_window_equals_pydicom_modality_and_voi_lut(function: str) -> None:
    header, pixels = _load("CT_small.dcm")  # signed 16-bit with rescale
    window = Window(center=40.0, width=400.0, function=function)
    ds = copy.deepcopy(header)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, function

    shown = display_pixels(header, pixels, "MONOCHROME2", window)

    assert shown.dtype == np.uint8 and shown.shape == pixels.shape
    np.testing.assert_allclose(shown, _pydicom_display(ds, pixels), atol=1.0)
    assert 0 < shown.mean() < 255


def test_window_from_header_by_default() -> None:
    header, pixels = _load("MR_small.dcm")  # WindowCenter/Width in the header
    shown = display_pixels(header, pixels, "MONOCHROME2")
    np.testing.assert_allclose(shown, _pydicom_display(header, pixels), atol=1.0)
    explicit = display_pixels(
        header, pixels, "MONOCHROME2", Window(float(header.WindowCenter), float(header.WindowWidth))
    )
    np.testing.assert_array_equal(shown, explicit)


def test_without_window_the_value_range_fills_0_to_255() -> None:
    header, pixels = _load("CT_small.dcm")  # no window in the header
    values = pixels * float(header.RescaleSlope) + float(header.RescaleIntercept)
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    shown = display_pixels(header, pixels, "MONOCHROME2")
    np.testing.assert_allclose(shown, expected, atol=0.5 + 1e-9)
    assert shown.min() == 0 and shown.max() == 255


def test_unusable_header_window_falls_back_to_the_value_range() -> None:
    header, pixels = _load("MR_small.dcm")
    broken = copy.deepcopy(header)
    broken.WindowWidth = 0  # not valid for LINEAR: skipped rather than fatal
    shown = display_pixels(broken, pixels, "MONOCHROME2")
    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255.0
    np.testing.assert_allclose(shown, expected, atol=0.5 + 1e-9)


def test_narrow_window_saturates_and_higher_center_darkens() -> None:
    header, pixels = _load("CT_small.dcm")
    values = pixels * float(header.RescaleSlope) + float(header.RescaleIntercept)
    center = float(np.median(values))
    narrow = display_pixels(header, pixels, "MONOCHROME2", Window(center, 1.0))
    assert set(np.unique(narrow)) == {0, 255}
    np.testing.assert_array_equal(narrow == 255, values > center - 0.5)
    wide = display_pixels(header, pixels, "MONOCHROME2", Window(center, 2000.0))
    assert len(np.unique(wide)) > 50
    higher = display_pixels(header, pixels, "MONOCHROME2", Window(center + 300, 2000.0))
    assert (higher <= wide).all() and higher.mean() < wide.mean()


def test_invalid_given_window_is_refused() -> None:
    header, pixels = _load("CT_small.dcm")
    with pytest.raises(RenderError, match="at least 1 for LINEAR"):
        display_pixels(header, pixels, "MONOCHROME2", Window(40, 0.5))


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    header, pixels = _load("RG3_UNCI.dcm")  # MONOCHROME1 radiograph with a window
    part = np.ascontiguousarray(pixels[::4, ::4])
    as_mono1 = display_pixels(header, part, "MONOCHROME1")
    as_mono2 = display_pixels(header, part, "MONOCHROME2")
    np.testing.assert_array_equal(as_mono1.astype(int), 255 - as_mono2.astype(int))
    assert as_mono1.std() > 10
    np.testing.assert_array_equal(_png(header, part, "MONOCHROME1"), as_mono1)


def test_modality_lut_sequence() -> None:
    header, pixels = _load("mlut_18.dcm")
    values = np.asarray(apply_modality_lut(pixels, _full("mlut_18.dcm")), dtype=np.float64)
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    np.testing.assert_allclose(
        display_pixels(header, pixels, "MONOCHROME2"), expected, atol=0.5 + 1e-9
    )


def test_voi_lut_sequence() -> None:
    header, pixels = _load("vlut_04.dcm")  # 8-bit data through a 16-bit VOI LUT
    lut_output = apply_voi_lut(pixels, _full("vlut_04.dcm"))
    expected = np.asarray(lut_output, dtype=np.float64) * 255 / 65535
    np.testing.assert_allclose(
        display_pixels(header, pixels, "MONOCHROME2"), expected, atol=0.5 + 1e-9
    )


def test_enhanced_ct_takes_rescale_and_window_from_functional_groups() -> None:
    header, pixels = _load("eCT_Supplemental.dcm")  # shared groups: rescale -1024, window 49/102
    assert "RescaleIntercept" not in header and "WindowCenter" not in header
    flat = Dataset()
    flat.PhotometricInterpretation = "MONOCHROME2"
    flat.BitsStored, flat.PixelRepresentation = header.BitsStored, header.PixelRepresentation
    flat.RescaleSlope, flat.RescaleIntercept = 1, -1024
    flat.WindowCenter, flat.WindowWidth = 49, 102
    for index in (0, 1):
        shown = display_pixels(header, pixels[index], "MONOCHROME2", frame_index=index)
        np.testing.assert_allclose(shown, _pydicom_display(flat, pixels[index]), atol=1.0)


def _frame_groups(*windows: tuple[float, float]) -> Sequence:
    items = []
    for center, width in windows:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        items.append(item)
    return Sequence(items)


def test_per_frame_window_wins_over_shared_and_top_level() -> None:
    ds = make_dataset(rows=16, columns=16, frames=2, WindowCenter=3000, WindowWidth=100)
    shared = Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 2, -100
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = _frame_groups((1000, 2000), (6000, 500))
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(2, 16, 16)
    del ds.PixelData

    for index, (center, width) in enumerate([(1000, 2000), (6000, 500)]):
        shown = display_pixels(ds, pixels[index], "MONOCHROME2", frame_index=index)
        values = pixels[index] * 2.0 - 100
        lower, span = center - 0.5 - (width - 1) / 2, width - 1
        expected = np.clip((values - lower) / span * 255, 0, 255)
        np.testing.assert_allclose(shown, expected, atol=0.5 + 1e-9)


def test_eight_bit_data_is_shown_as_stored_unless_windowed() -> None:
    ds = make_dataset(rows=8, columns=8, BitsAllocated=8, BitsStored=8, HighBit=7)
    pixels = np.arange(20, 84, dtype=np.uint8).reshape(8, 8)
    np.testing.assert_array_equal(display_pixels(ds, pixels, "MONOCHROME2"), pixels)
    windowed = display_pixels(ds, pixels, "MONOCHROME2", Window(52, 64, "LINEAR_EXACT"))
    assert windowed.min() == 0 and windowed.max() == 251


def test_one_bit_segmentation() -> None:
    header, pixels = _load("liver_1frame.dcm")
    shown = display_pixels(header, pixels, "MONOCHROME2")
    np.testing.assert_array_equal(shown, pixels * 255)


def test_float_pixel_data() -> None:
    ds = make_dataset(rows=4, columns=4)
    pixels = np.linspace(-1.5, 2.5, 16, dtype=np.float32).reshape(4, 4)
    pixels[0, 1] = np.nan
    shown = display_pixels(ds, pixels, "MONOCHROME2")
    assert shown[0, 0] == 0 and shown[3, 3] == 255 and shown[0, 1] == 0
    expected = (pixels - pixels[0, 0]) / 4.0 * 255
    np.testing.assert_allclose(shown[1:], expected[1:], atol=0.5 + 1e-6)
    windowed = display_pixels(ds, pixels, "MONOCHROME2", Window(0.5, 1.0, "LINEAR_EXACT"))
    assert windowed[0, 0] == 0 and windowed[3, 3] == 255 and 0 < windowed[2, 0] < 255


# --- Colour --------------------------------------------------------------------------------


def test_rgb_as_is_and_16_bit_rgb_keeps_the_high_byte() -> None:
    header, pixels = _load("SC_rgb.dcm")
    np.testing.assert_array_equal(display_pixels(header, pixels, "RGB"), pixels)
    header16, pixels16 = _load("SC_rgb_16bit.dcm")
    np.testing.assert_array_equal(display_pixels(header16, pixels16, "RGB"), pixels)


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("SC_ybr_full_uncompressed.dcm", "YBR_FULL"),
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
        ("SC_ybr_full_uncompressed.dcm", "YBR_ICT"),  # the ICT has the YBR_FULL equations
    ],
)
def test_ybr_is_converted_like_pydicom(name: str, photometric: str) -> None:
    header, _ = _load(name)
    path = get_testdata_file(name)
    assert path is not None
    ybr = pixel_array(path, as_rgb=False)
    shown = display_pixels(header, ybr, photometric)
    np.testing.assert_array_equal(shown, convert_color_space(ybr, "YBR_FULL", "RGB"))
    assert not np.array_equal(shown, ybr)


@pytest.mark.parametrize("signed", [True, False])
def test_ybr_rct_is_inverted_exactly(signed: bool) -> None:
    header, rgb = _load("SC_rgb.dcm")
    # Keep B-G and R-G within a byte so that the unsigned form (offset 128) holds them.
    rgb = (rgb.astype(np.int64) // 2 + 64).astype(np.uint8)
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    y, cb, cr = (r + 2 * g + b) // 4, b - g, r - g
    ybr = np.stack([y, cb, cr], axis=-1)
    ybr = ybr.astype(np.int16) if signed else (ybr + np.array([0, 128, 128])).astype(np.uint8)
    np.testing.assert_array_equal(display_pixels(header, ybr, "YBR_RCT"), rgb)


def test_palette_colour_16_bit_entries_equal_pydicom_lut() -> None:
    header, pixels = _load("OBXXXX1A.dcm")
    lut = apply_color_lut(pixels, _full("OBXXXX1A.dcm"))
    assert lut.dtype == np.uint16
    np.testing.assert_array_equal(display_pixels(header, pixels, "PALETTE COLOR"), lut >> 8)


def test_segmented_palette_with_16_bit_pixels() -> None:
    header, pixels = _load("gdcm-US-ALOKA-16.dcm")
    lut = apply_color_lut(pixels, _full("gdcm-US-ALOKA-16.dcm"))
    shown = display_pixels(header, pixels, "PALETTE COLOR")
    np.testing.assert_array_equal(shown, lut >> 8)
    assert shown.shape == (*pixels.shape, 3) and shown.std() > 10


def test_segmented_palette_with_8_bit_entries() -> None:
    palette = dcmread(next(p for p in get_palette_files() if p.endswith("spring.dcm")))
    ds = make_dataset(
        rows=16, columns=16, BitsAllocated=8, BitsStored=8, HighBit=7,
        PhotometricInterpretation="PALETTE COLOR",
    )  # fmt: skip
    for colour in ("Red", "Green", "Blue"):
        for keyword in (
            f"{colour}PaletteColorLookupTableDescriptor",
            f"Segmented{colour}PaletteColorLookupTableData",
        ):
            ds[keyword] = copy.deepcopy(palette[keyword])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = apply_color_lut(pixels, palette="1.2.840.10008.1.5.5")  # SPRING
    np.testing.assert_array_equal(display_pixels(ds, pixels, "PALETTE COLOR"), expected)


def test_unsupported_photometric_and_shapes_are_refused() -> None:
    header, pixels = _load("SC_rgb.dcm")
    with pytest.raises(RenderError, match="HSV cannot be rendered"):
        display_pixels(header, pixels, "HSV")
    with pytest.raises(RenderError, match="three samples"):
        display_pixels(header, pixels[..., 0], "RGB")
    with pytest.raises(RenderError, match="one sample"):
        display_pixels(header, pixels, "MONOCHROME2")


# --- Encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "photometric", "mode"),
    [("CT_small.dcm", "MONOCHROME2", "L"), ("OBXXXX1A.dcm", "PALETTE COLOR", "RGB")],
)
def test_png_is_lossless(name: str, photometric: str, mode: str) -> None:
    header, pixels = _load(name)
    data = render(header, [(pixels, photometric)], RenderOptions(media_type="image/png"))
    image = _decode(data)
    assert image.format == "PNG" and image.mode == mode
    np.testing.assert_array_equal(np.asarray(image), display_pixels(header, pixels, photometric))


def test_jpeg_size_mode_and_quality() -> None:
    header, pixels = _load("MR_small.dcm")
    low = render(header, [(pixels, "MONOCHROME2")], RenderOptions(quality=10))
    high = render(header, [(pixels, "MONOCHROME2")], RenderOptions(quality=95))
    image = _decode(high)
    assert image.format == "JPEG" and image.mode == "L" and image.size == (64, 64)
    assert len(low) < len(high)
    shown = display_pixels(header, pixels, "MONOCHROME2").astype(int)
    assert np.abs(np.asarray(image).astype(int) - shown).mean() < 3
    colour_header, colour = _load("SC_rgb.dcm")
    assert _decode(render(colour_header, [(colour, "RGB")], RenderOptions())).mode == "RGB"


def _pillow_jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "photometric"), [("CT_small.dcm", "MONOCHROME2"), ("SC_rgb.dcm", "RGB")]
)
@pytest.mark.parametrize("quality", [None, 1, 50, 100])
@pytest.mark.parametrize("viewport", [None, Viewport(40, 40)])
def test_jpeg_is_byte_for_byte_what_pillow_writes(
    name: str, photometric: str, quality: int | None, viewport: Viewport | None
) -> None:
    """libjpeg-turbo through imagecodecs (which releases the GIL) keeps Pillow's output: the
    same quality scaling, colour 4:2:0, headers; with and without the viewport's resizing."""
    header, pixels = _load(name)
    options = RenderOptions(quality=quality, viewport=viewport)
    data = render(header, [(pixels, photometric)], options)
    image = Image.fromarray(display_pixels(header, pixels, photometric))
    if viewport is not None:
        image = image.resize(_decode(data).size, Image.Resampling.LANCZOS)
    assert data == _pillow_jpeg(image, quality or 90)


def test_multi_frame_gif_has_every_frame() -> None:
    header, pixels = _load("emri_small.dcm")
    frames = [(pixels[i], "MONOCHROME2") for i in range(len(pixels))]
    image = _decode(render(header, frames, RenderOptions(media_type="image/gif")))
    n_frames = getattr(image, "n_frames", 1)
    assert image.format == "GIF" and n_frames == len(pixels) == 10 and image.size == (64, 64)
    decoded = []
    for i in range(n_frames):
        image.seek(i)
        decoded.append(np.asarray(image.convert("L")))
    # A grey GIF keeps the exact display values of each frame.
    for i in (0, 5, 9):
        np.testing.assert_array_equal(
            decoded[i], display_pixels(header, pixels[i], "MONOCHROME2", frame_index=i)
        )


@pytest.mark.parametrize(
    ("timing", "duration"),
    [
        ({"FrameTime": 40}, 40),
        ({"CineRate": 25}, 40),
        ({"RecommendedDisplayFrameRate": 5}, 200),
        ({}, 100),
    ],
)
def test_gif_frame_duration_from_the_header(timing: dict[str, Any], duration: int) -> None:
    ds = make_dataset(rows=8, columns=8, frames=3, **timing)
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(3, 8, 8)
    frames = [(frame, "MONOCHROME2") for frame in pixels]
    image = _decode(render(ds, frames, RenderOptions(media_type="image/gif")))
    assert getattr(image, "n_frames", 1) == 3 and image.info["duration"] == duration


def test_several_frames_need_gif() -> None:
    header, pixels = _load("emri_small.dcm")
    with pytest.raises(RenderError, match="use image/gif"):
        render(header, [(pixels[0], "MONOCHROME2"), (pixels[1], "MONOCHROME2")], RenderOptions())


def test_unknown_media_type_is_refused() -> None:
    header, pixels = _load("MR_small.dcm")
    with pytest.raises(RenderError, match="image/bmp cannot be rendered"):
        render(header, [(pixels, "MONOCHROME2")], RenderOptions(media_type="image/bmp"))


# --- Viewport ------------------------------------------------------------------------------


def _pattern() -> tuple[Dataset, NDArray[np.uint8]]:
    """An 8-bit 40 x 80 image shown as stored: a gradient and a bright block top left."""
    ds = make_dataset(rows=40, columns=80, BitsAllocated=8, BitsStored=8, HighBit=7)
    pixels = np.tile((np.arange(80) * 2).astype(np.uint8), (40, 1))
    pixels[2:10, 4:20] = 255
    return ds, pixels


@pytest.mark.parametrize(
    ("viewport", "size"),
    [((200, 200), (200, 100)), ((20, 100), (20, 10)), ((80, 40), (80, 40)), ((50, 10), (20, 10))],
)
def test_viewport_scales_to_fit_keeping_aspect(
    viewport: tuple[int, int], size: tuple[int, int]
) -> None:
    ds, pixels = _pattern()
    data = render(ds, [(pixels, "MONOCHROME2")], RenderOptions(viewport=Viewport(*viewport)))
    assert _decode(data).size == size


def test_viewport_crops_the_source_region() -> None:
    ds, pixels = _pattern()
    shown = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(16, 8, sx=4, sy=2, sw=16, sh=8))
    np.testing.assert_array_equal(shown, pixels[2:10, 4:20])
    assert (shown == 255).all()
    right = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(40, 40, sx=40))
    np.testing.assert_array_equal(right, pixels[:, 40:])


def test_viewport_region_is_clipped_to_the_image() -> None:
    ds, pixels = _pattern()
    shown = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(100, 100, sx=60, sy=30, sw=50, sh=50))
    assert shown.shape == (50, 100)  # the 20 x 10 corner, scaled by 5


def test_negative_region_size_flips() -> None:
    ds, pixels = _pattern()
    flipped = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(80, 40, sw=-80))
    np.testing.assert_array_equal(flipped, pixels[:, ::-1])
    upside_down = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(80, 40, sh=-40))
    np.testing.assert_array_equal(upside_down, pixels[::-1, :])
    both = _png(ds, pixels, "MONOCHROME2", viewport=Viewport(16, 8, sx=4, sy=2, sw=-16, sh=-8))
    np.testing.assert_array_equal(both, pixels[2:10, 4:20][::-1, ::-1])


def test_viewport_outside_the_image_is_an_error() -> None:
    ds, pixels = _pattern()
    with pytest.raises(ViewportError, match="selects no part of the 80x40 image"):
        render(ds, [(pixels, "MONOCHROME2")], RenderOptions(viewport=Viewport(10, 10, sx=80)))


# --- Annotation ----------------------------------------------------------------------------


def _changed(annotation: frozenset[str], frame_index: int = 0) -> NDArray[np.bool_]:
    header, pixels = _load("CT_small.dcm")
    options = RenderOptions(media_type="image/png", viewport=Viewport(512, 512))
    annotated = RenderOptions(
        media_type="image/png", viewport=Viewport(512, 512), annotation=annotation
    )
    plain = _decode(render(header, [(pixels, "MONOCHROME2")], options, [frame_index]))
    burnt = _decode(render(header, [(pixels, "MONOCHROME2")], annotated, [frame_index]))
    changed: NDArray[np.bool_] = np.not_equal(np.asarray(plain), np.asarray(burnt))
    return changed


def _bounds(changed: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(changed)
    return int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())


def test_patient_annotation_is_top_left_only() -> None:
    changed = _changed(frozenset({"patient"}))
    top, bottom, left, _ = _bounds(changed)
    assert changed.sum() > 500
    assert top < 16 and bottom < 128 and left < 16  # the top-left corner, three lines


def test_technique_annotation_is_bottom_left_only() -> None:
    changed = _changed(frozenset({"technique"}))
    top, bottom, left, _ = _bounds(changed)
    assert changed.sum() > 500
    assert top > 512 - 128 and bottom > 512 - 16 and left < 16


def test_technique_annotation_names_the_frame() -> None:
    first, second = _changed(frozenset({"technique"}), 0), _changed(frozenset({"technique"}), 1)
    assert not np.array_equal(first, second)
    assert np.array_equal(_changed(frozenset({"patient"}), 0), _changed(frozenset({"patient"}), 1))


def test_annotation_on_colour_images() -> None:
    header, pixels = _load("SC_rgb.dcm")
    options = RenderOptions(media_type="image/png", viewport=Viewport(300, 300))
    plain = np.asarray(_decode(render(header, [(pixels, "RGB")], options)))
    burnt = _png(
        header, pixels, "RGB", viewport=Viewport(300, 300), annotation=frozenset({"patient"})
    )
    assert burnt.shape == plain.shape == (300, 300, 3)
    changed = (plain != burnt).any(axis=2)
    assert changed[:75, :150].any() and not changed[150:, :].any()


# --- Thumbnail -----------------------------------------------------------------------------


def test_thumbnail_fits_and_keeps_aspect() -> None:
    header, pixels = _load("OBXXXX1A.dcm")  # 800 x 600
    image = _decode(thumbnail(header, pixels, "PALETTE COLOR"))
    assert image.format == "JPEG" and image.size == (128, 96) and image.mode == "RGB"
    png = _decode(thumbnail(header, pixels, "PALETTE COLOR", "image/png", size=64))
    assert png.format == "PNG" and png.size == (64, 48)


def test_thumbnail_never_enlarges() -> None:
    header, pixels = _load("MR_small.dcm")  # 64 x 64
    image = _decode(thumbnail(header, pixels, "MONOCHROME2", "image/gif"))
    assert image.format == "GIF" and image.size == (64, 64)
