"""Transcoder: whole PS3.10 files built from prefix, frame items and suffix, read back by pydicom
and compared with pydicom's decoding of the source; the refusals and their reasons."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from app.imaging.codecs import JPEG_LS_NEAR, CodecError, decode_frame
from app.imaging.transcode import (
    LOSSLESS_SYNTAXES,
    TARGET_SYNTAXES,
    NotTranscodable,
    Transcoder,
)
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.unit.imaging import frame_count, header_of, pixels_of, read, stored_frames

LOSSLESS_TARGETS = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
]
LOSSLESS_SOURCES = [
    "CT_small.dcm",  # 16-bit signed
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "emri_small.dcm",  # 10 frames, 12 bits stored
    "SC_rgb_rle_2frame.dcm",  # colour, 2 frames, planar configuration 1 in RLE
    "SC_rgb_expb_2frame.dcm",  # colour, big endian
    "SC_rgb_16bit.dcm",
    "OBXXXX1A.dcm",  # PALETTE COLOR
    "emri_small_jpeg_2k_lossless.dcm",
    "JPEG-LL.dcm",
    "GDCMJ2K_TextGBR.dcm",  # YBR_RCT
    "J2K_pixelrep_mismatch.dcm",  # signed 13-bit data in an unsigned J2K codestream
]


def build(transcoder: Transcoder, frames: list[bytes]) -> bytes:
    """The output file, assembled as the web layer does."""
    items = b"".join(transcoder.frame_item(transcoder.encode_frame(f)) for f in frames)
    return transcoder.prefix(len(frames), None) + items + transcoder.suffix()


def transcode(name: str, target: str) -> tuple[Dataset, Transcoder, Dataset]:
    """(source, transcoder, output read back) for a corpus file."""
    source = read(name)
    transcoder = Transcoder(header_of(name), source.file_meta.TransferSyntaxUID, target)
    return source, transcoder, reread(build(transcoder, stored_frames(source)))


def reread(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def generated(**attrs: object) -> tuple[Dataset, Dataset]:
    """(whole dataset, header) of a file made by the test factory, as read from storage."""
    data = to_bytes(make_dataset(**attrs))
    return reread(data), pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio against the reference image's own value range, in dB."""
    error = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    peak = float(reference.max()) - float(reference.min())
    return float(10 * np.log10(peak**2 / error)) if error else float("inf")


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("name", LOSSLESS_SOURCES)
def test_lossless_targets_reproduce_the_pixels(name: str, target: str) -> None:
    source, transcoder, out = transcode(name, target)
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == source.SOPInstanceUID  # the same instance, re-encoded
    assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPClassUID == source.SOPClassUID
    expected = pixels_of(source)
    np.testing.assert_array_equal(pixels_of(out), expected)  # colour: both in RGB
    assert "LossyImageCompressionMethod" not in out
    if transcoder.encapsulated:
        fragments, _ = parse_fragments(out.PixelData)
        assert fragments == frame_count(source) + 1  # one per frame, after the offset table
        assert out.PixelData[:8] == struct.pack("<HHL", 0xFFFE, 0xE000, 0)  # empty table
    if source.SamplesPerPixel == 3 and target != source.file_meta.TransferSyntaxUID:
        assert out.PhotometricInterpretation == "RGB"
        assert out.PlanarConfiguration == 0


# (file, target, max abs error or None, min PSNR in dB or None): the tolerances transcode.py
# states. JPEG: PSNR >= 30 dB; JPEG-LS near-lossless: NEAR; JPEG 2000 10:1: PSNR >= 25 dB.
LOSSY_CASES = [
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGBaseline8Bit, None, 30.0),
    ("SC_rgb.dcm", JPEGBaseline8Bit, None, 30.0),
    ("SC_rgb_rle_2frame.dcm", JPEGBaseline8Bit, None, 30.0),
    ("emri_small.dcm", JPEGExtended12Bit, None, 30.0),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGExtended12Bit, None, 30.0),
    ("CT_small.dcm", JPEGLSNearLossless, JPEG_LS_NEAR, None),
    ("emri_small.dcm", JPEGLSNearLossless, JPEG_LS_NEAR, None),
    ("SC_rgb_expb_2frame.dcm", JPEGLSNearLossless, JPEG_LS_NEAR, None),
    ("JPEG2000.dcm", JPEGLSNearLossless, JPEG_LS_NEAR, None),  # lossy to lossy
    ("CT_small.dcm", JPEG2000, None, 25.0),
    ("emri_small.dcm", JPEG2000, None, 25.0),
    ("SC_rgb_rle_2frame.dcm", JPEG2000, None, 25.0),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEG2000, None, 25.0),  # lossy to lossy
]
METHODS = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}


@pytest.mark.parametrize(("name", "target", "max_error", "min_psnr"), LOSSY_CASES)
def test_lossy_targets_stay_within_the_stated_tolerance(
    name: str, target: str, max_error: int | None, min_psnr: float | None
) -> None:
    source, _, out = transcode(name, target)
    assert out.file_meta.TransferSyntaxUID == target
    expected, decoded = pixels_of(source), pixels_of(out)
    assert decoded.shape == expected.shape
    if max_error is not None:
        assert np.abs(decoded.astype(np.int64) - expected).max() <= max_error
    if min_psnr is not None:
        assert psnr(expected, decoded) >= min_psnr
    assert out.LossyImageCompression == "01"
    methods = out.LossyImageCompressionMethod
    assert (methods[-1] if isinstance(methods, pydicom.multival.MultiValue) else methods) == (
        METHODS[target]
    )
    if target == JPEG2000:
        ratios = out.LossyImageCompressionRatio
        assert (
            float(ratios[-1] if isinstance(ratios, pydicom.multival.MultiValue) else ratios) == 10
        )
    if source.SamplesPerPixel == 3:
        assert out.PhotometricInterpretation == (
            "YBR_FULL_422" if target == JPEGBaseline8Bit else "RGB"
        )
        assert out.PlanarConfiguration == 0


def test_jpeg_baseline_and_extended_set_the_precision_they_encode() -> None:
    _, _, extended = transcode("emri_small.dcm", JPEGExtended12Bit)
    assert (extended.BitsAllocated, extended.BitsStored, extended.HighBit) == (16, 12, 11)
    _, _, baseline = transcode("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGBaseline8Bit)
    assert (baseline.BitsAllocated, baseline.BitsStored, baseline.HighBit) == (8, 8, 7)


def test_near_lossless_widens_bits_stored_to_the_codestream_precision() -> None:
    # A 12-bit sample may come back as 4097: a reader must not cut it at High Bit 11.
    _, _, out = transcode("emri_small.dcm", JPEGLSNearLossless)
    assert (out.BitsStored, out.HighBit) == (16, 15)


def test_signed_near_lossless_keeps_the_sign_at_the_extremes() -> None:
    pixels = np.full((3, 32, 32), -32768, dtype=np.int16)
    pixels[:, 16:, :] = 32767
    pixels[1] = np.arange(-512, 512, dtype=np.int16).reshape(32, 32)
    source, header = generated(
        rows=32, columns=32, frames=3, PixelRepresentation=1, PixelData=pixels.tobytes()
    )
    transcoder = Transcoder(header, ExplicitVRLittleEndian, JPEGLSNearLossless)
    out = reread(build(transcoder, stored_frames(source)))
    error = np.abs(pixels_of(out).astype(np.int32) - pixels)
    assert error.max() <= 2 * JPEG_LS_NEAR  # within NEAR of an extreme: twice NEAR at most
    assert error[1].max() <= JPEG_LS_NEAR


def test_lossy_source_decompresses_and_stays_flagged_lossy() -> None:
    source, _, out = transcode("SC_rgb_jpeg_dcmtk.dcm", ExplicitVRLittleEndian)
    assert source.PhotometricInterpretation == "YBR_FULL"
    assert "LossyImageCompression" in source
    np.testing.assert_array_equal(pixels_of(out), pixels_of(source))
    assert out.PhotometricInterpretation == "RGB"
    assert out.PlanarConfiguration == 0
    assert out.LossyImageCompression == "01"
    # Decompressing loses nothing more: the history stays as it was.
    assert out.LossyImageCompressionMethod == source.LossyImageCompressionMethod


def test_lossy_syntax_without_the_flag_is_flagged_on_decompression() -> None:
    source = read("JPEGLSNearLossless_16.dcm")
    assert "LossyImageCompression" not in source
    header = header_of("JPEGLSNearLossless_16.dcm")
    out = reread(build(Transcoder(header, JPEGLSNearLossless, ExplicitVRLittleEndian),
                       stored_frames(source)))  # fmt: skip
    assert out.LossyImageCompression == "01"
    np.testing.assert_array_equal(pixels_of(out), pixels_of(source))


def test_a_second_lossy_step_is_appended_to_the_first() -> None:
    source, header = generated(
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        rows=32,
        columns=32,
        PixelData=np.arange(32 * 32, dtype=np.uint16).astype(np.uint8).tobytes(),
        LossyImageCompression="01",
        LossyImageCompressionRatio=5,
        LossyImageCompressionMethod="ISO_10918_1",
    )
    frames = stored_frames(source)
    j2k = reread(build(Transcoder(header, ExplicitVRLittleEndian, JPEG2000), frames))
    assert list(j2k.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert [float(r) for r in j2k.LossyImageCompressionRatio] == [5.0, 10.0]
    # JPEG-LS has no ratio to report before encoding: the ratios could no longer be paired.
    jls = reread(build(Transcoder(header, ExplicitVRLittleEndian, JPEGLSNearLossless), frames))
    assert list(jls.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_14495_1"]
    assert "LossyImageCompressionRatio" not in jls
    with pytest.raises(NotTranscodable, match="lossy"):
        Transcoder(header, ExplicitVRLittleEndian, JPEGLSLossless)


@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, JPEGLSLossless])
def test_extended_offset_table_of_the_source_is_dropped(target: str) -> None:
    ds = reread(to_bytes(make_dataset(frames=3, rows=16, columns=16)))
    ds.compress(RLELossless, encapsulate_ext=True, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    header = pydicom.dcmread(io.BytesIO(buffer.getvalue()), stop_before_pixels=True)
    assert "ExtendedOffsetTable" in header
    source = reread(buffer.getvalue())
    out = reread(build(Transcoder(header, RLELossless, target), stored_frames(source)))
    assert "ExtendedOffsetTable" not in out
    assert "ExtendedOffsetTableLengths" not in out
    np.testing.assert_array_equal(pixels_of(out), pixels_of(source))


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_header_elements_survive_the_change_of_encoding(name: str) -> None:
    _, _, out = transcode(name, JPEGLSLossless)
    compared = 0
    for elem in header_of(name):
        if elem.tag.group == 2 or elem.tag >= 0x7FE00000:
            continue
        assert out[elem.tag].value == elem.value, elem.keyword
        compared += 1
    assert compared > 50


def test_big_endian_lookup_tables_are_swapped_like_the_pixels() -> None:
    _, _, out = transcode("OBXXXX1A_expb.dcm", ExplicitVRLittleEndian)
    twin = read("OBXXXX1A.dcm")  # the same image stored little endian
    for keyword in ("Red", "Green", "Blue"):
        table = f"{keyword}PaletteColorLookupTableData"
        assert out[table].value == twin[table].value
    np.testing.assert_array_equal(pixels_of(out), pixels_of(twin))


def test_odd_length_native_pixel_data_is_padded() -> None:
    source, transcoder, out = transcode("SC_rgb_small_odd.dcm", ImplicitVRLittleEndian)
    assert transcoder.native_frame_length() == 27
    assert transcoder.suffix() == b"\0"
    assert len(out.PixelData) == 28
    np.testing.assert_array_equal(pixels_of(out), pixels_of(source))


@pytest.mark.parametrize(
    ("name", "length"),
    [
        ("CT_small.dcm", 128 * 128 * 2),
        ("JPEG-LL.dcm", 1024 * 256 * 2),
        ("SC_rgb_jpeg_dcmtk.dcm", 100 * 100 * 3),  # YBR_FULL JPEG, decoded to RGB
        ("SC_ybr_full_422_uncompressed.dcm", 100 * 100 * 2),  # kept 4:2:2, as stored
        ("liver.dcm", 512 * 512 // 8),  # bit-packed, kept as stored
    ],
)
def test_native_frame_length_is_known_before_encoding(name: str, length: int) -> None:
    source = read(name)
    transcoder = Transcoder(
        header_of(name), source.file_meta.TransferSyntaxUID, ImplicitVRLittleEndian
    )
    assert transcoder.native_frame_length() == length
    frames = stored_frames(source)
    assert all(len(transcoder.encode_frame(f)) == length for f in frames)
    prefix = transcoder.prefix(len(frames), length)
    data = build(transcoder, frames)
    assert len(data) == len(prefix) + len(frames) * length + len(transcoder.suffix())
    np.testing.assert_array_equal(pixels_of(reread(data)), pixels_of(source))


@pytest.mark.parametrize(
    ("target", "start"),
    [(JPEG2000Lossless, b"\xff\x4f\xff\x51"), (JPEGLSLossless, b"\xff\xd8"), (RLELossless, b"")],
)
def test_a_single_frame_is_a_codestream_that_decodes_to_that_frame(
    target: str, start: bytes
) -> None:
    source = read("emri_small.dcm")
    transcoder = Transcoder(header_of("emri_small.dcm"), ExplicitVRLittleEndian, target)
    codestream = transcoder.encode_frame(stored_frames(source)[2])
    assert codestream.startswith(start)
    frame = decode_frame(transcoder.header(), target, codestream)
    np.testing.assert_array_equal(frame.pixels, pixels_of(source)[2])


def test_frame_items_have_even_length() -> None:
    transcoder = Transcoder(header_of("CT_small.dcm"), ExplicitVRLittleEndian, RLELossless)
    assert transcoder.frame_item(b"abc") == struct.pack("<HHL", 0xFFFE, 0xE000, 4) + b"abc\0"
    assert transcoder.frame_item(b"ab") == struct.pack("<HHL", 0xFFFE, 0xE000, 2) + b"ab"


@pytest.mark.parametrize(
    ("target", "media_type", "encapsulated"),
    [
        (ExplicitVRLittleEndian, "application/octet-stream", False),
        (ImplicitVRLittleEndian, "application/octet-stream", False),
        (JPEGBaseline8Bit, "image/jpeg", True),
        (JPEGLosslessSV1, "image/jpeg", True),
        (JPEGLSNearLossless, "image/jls", True),
        (JPEG2000, "image/jp2", True),
        (RLELossless, "image/x-dicom-rle", True),
    ],
)
def test_frame_media_type_of_each_target(target: str, media_type: str, encapsulated: bool) -> None:
    header = header_of("JPGLosslessP14SV1_1s_1f_8b.dcm")
    transcoder = Transcoder(header, JPEGLosslessSV1, target)
    assert transcoder.frame_media_type == media_type
    assert transcoder.encapsulated is encapsulated
    assert transcoder.target_syntax == target


def test_same_syntax_passes_frames_through() -> None:
    source = read("JPEG2000.dcm")
    transcoder = Transcoder(header_of("JPEG2000.dcm"), JPEG2000, JPEG2000)
    frames = stored_frames(source)
    assert transcoder.encode_frame(frames[0]) == frames[0]
    out = reread(build(transcoder, frames))
    np.testing.assert_array_equal(pixels_of(out), pixels_of(source))


def test_instance_without_pixel_data_is_sent_as_header_only() -> None:
    source = read("test-SR.dcm")
    transcoder = Transcoder(
        header_of("test-SR.dcm"), ExplicitVRLittleEndian, ImplicitVRLittleEndian
    )
    out = reread(transcoder.prefix(0, None) + transcoder.suffix())
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert "PixelData" not in out
    assert out.ContentSequence == source.ContentSequence
    with pytest.raises(CodecError, match="no pixel data"):
        transcoder.encode_frame(b"")
    with pytest.raises(NotTranscodable, match="no pixel data"):
        Transcoder(header_of("test-SR.dcm"), ExplicitVRLittleEndian, JPEGBaseline8Bit)


def _float_file() -> tuple[Dataset, Dataset, np.ndarray]:
    values = (np.arange(2 * 8 * 8, dtype="<f4").reshape(2, 8, 8) - 50) / 8
    ds = make_dataset(frames=2)
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    data = to_bytes(ds)
    return reread(data), pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), values


def test_float_pixel_data_is_sent_uncompressed() -> None:
    source, header, values = _float_file()
    transcoder = Transcoder(header, ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    frames = [source.FloatPixelData[:256], source.FloatPixelData[256:]]
    out = reread(build(transcoder, frames))
    assert "PixelData" not in out
    np.testing.assert_array_equal(np.frombuffer(out.FloatPixelData, "<f4").reshape(2, 8, 8), values)
    with pytest.raises(NotTranscodable, match="float pixel data"):
        Transcoder(header, ExplicitVRLittleEndian, JPEG2000Lossless)


@pytest.mark.parametrize(
    ("name", "source_syntax", "target", "reason"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, JPEGLSLossless, "lossy compressed"),
        ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, JPEG2000Lossless, "lossy compressed"),
        ("JPEG2000.dcm", JPEG2000, RLELossless, "lossy compressed"),
        ("CT_small.dcm", ExplicitVRLittleEndian, JPEGBaseline8Bit, "Bits Allocated 8 and Bits"),
        ("emri_small.dcm", ExplicitVRLittleEndian, JPEGBaseline8Bit, "Bits Stored 1 to 8"),
        ("CT_small.dcm", ExplicitVRLittleEndian, "1.2.3.4", "not a known transfer syntax"),
        ("CT_small.dcm", ExplicitVRLittleEndian, HTJ2KLossless, "cannot produce"),
        ("CT_small.dcm", ExplicitVRLittleEndian, ExplicitVRBigEndian, "cannot produce"),
        ("SC_rgb_small_odd.dcm", ExplicitVRLittleEndian, JPEG2000Lossless, "at least 32 x 32"),
        ("liver.dcm", ExplicitVRLittleEndian, RLELossless, "Bits Allocated 1"),
        ("SC_rgb.dcm", ExplicitVRLittleEndian, JPEGExtended12Bit, "only grayscale"),
        ("OBXXXX1A.dcm", ExplicitVRLittleEndian, JPEG2000, "PALETTE COLOR"),
        ("CT_small.dcm", "1.2.840.10008.1.2.4.100", ExplicitVRLittleEndian, "cannot be decoded"),
    ],
)
def test_impossible_conversions_are_refused_with_the_reason(
    name: str, source_syntax: str, target: str, reason: str
) -> None:
    with pytest.raises(NotTranscodable, match=reason):
        Transcoder(header_of(name), source_syntax, target)


def test_signed_pixels_are_refused_by_jpeg_baseline() -> None:
    _, header = generated(BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=1,
                          PixelData=bytes(64))  # fmt: skip
    with pytest.raises(NotTranscodable, match="signed"):
        Transcoder(header, ExplicitVRLittleEndian, JPEGBaseline8Bit)


def test_syntax_tables() -> None:
    assert {ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEG2000, RLELossless} <= TARGET_SYNTAXES
    assert ExplicitVRBigEndian in LOSSLESS_SYNTAXES
    assert JPEGLSLossless in LOSSLESS_SYNTAXES
    assert not {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000} & (
        LOSSLESS_SYNTAXES
    )
