"""decode_frame against pydicom's own decoding of the corpus, one frame at a time, and the
encoders' output read back by pydicom's decoders."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from app.imaging.codecs import (
    JPEG_LS_NEAR,
    CodecError,
    decode_frame,
    encode_pixels,
    frame_length,
    pixel_keyword,
)
from tests.support.dcmtk import DECOMPRESSORS, check, require_dcmtk
from tests.support.dicom_factory import make_dataset
from tests.unit.imaging import (
    corpus_path,
    frame_count,
    header_of,
    pixels_of,
    read,
    stored_frames,
)

# (file, its stored syntax): every syntax of the corpus that the archive may hold.
CORPUS = [
    ("CT_small.dcm", ExplicitVRLittleEndian),  # 16-bit signed
    ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
    ("SC_rgb_expb_2frame.dcm", ExplicitVRBigEndian),  # 8-bit colour in big-endian OW
    ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
    ("emri_small.dcm", ExplicitVRLittleEndian),  # 10 frames, 12 bits
    ("SC_ybr_full_422_uncompressed.dcm", ExplicitVRLittleEndian),  # native 4:2:2
    ("SC_rgb_small_odd.dcm", ExplicitVRLittleEndian),  # odd length
    ("liver.dcm", ExplicitVRLittleEndian),  # Bits Allocated 1, 3 frames
    ("MR_small_RLE.dcm", RLELossless),
    ("SC_rgb_rle_2frame.dcm", RLELossless),
    ("JPEG2000.dcm", JPEG2000),
    ("J2K_pixelrep_mismatch.dcm", JPEG2000Lossless),  # signed data in an unsigned codestream
    ("emri_small_jpeg_2k_lossless.dcm", JPEG2000Lossless),
    ("GDCMJ2K_TextGBR.dcm", JPEG2000Lossless),  # YBR_RCT
    ("JPEG-LL.dcm", JPEGLosslessSV1),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGLosslessSV1),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit),  # YBR_FULL
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", JPEGBaseline8Bit),  # YBR_FULL_422
    ("SC_jpeg_no_color_transform.dcm", JPEGBaseline8Bit),  # RGB without a colour transform
    ("JPGExtended.dcm", JPEGExtended12Bit),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
    ("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless),
]


@pytest.mark.parametrize(("name", "syntax"), CORPUS, ids=[name for name, _ in CORPUS])
def test_each_frame_decodes_as_pydicom_decodes_the_object(name: str, syntax: str) -> None:
    ds = read(name)
    assert ds.file_meta.TransferSyntaxUID == syntax
    header = header_of(name)
    expected = pixels_of(ds)
    count = frame_count(ds)
    for index, data in enumerate(stored_frames(ds)):
        frame = decode_frame(header, syntax, data)
        np.testing.assert_array_equal(frame.pixels, expected[index] if count > 1 else expected)
        assert frame.pixels.dtype.kind == expected.dtype.kind
        if ds.SamplesPerPixel == 3 and "YBR_PARTIAL" not in ds.PhotometricInterpretation:
            assert frame.photometric_interpretation == "RGB"  # YBR decoded, as pixel_array does
        else:
            assert frame.photometric_interpretation == ds.PhotometricInterpretation


@pytest.mark.parametrize("name", ["emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"])
def test_a_frame_is_decoded_from_its_own_bytes_only(name: str) -> None:
    ds = read(name)
    frames = stored_frames(ds)
    expected = pixels_of(ds)
    assert not np.array_equal(expected[2], expected[1])  # else the test could not tell
    third = decode_frame(header_of(name), ds.file_meta.TransferSyntaxUID, frames[2])
    np.testing.assert_array_equal(third.pixels, expected[2])


@pytest.mark.parametrize(
    ("bits_allocated", "bits_stored", "signed"),
    [(8, 8, 0), (8, 7, 1), (16, 12, 0), (16, 12, 1), (16, 16, 1), (32, 24, 1), (32, 20, 0)],
)
def test_native_grey_frames_ignore_unused_bits_as_pydicom_does(
    bits_allocated: int, bits_stored: int, signed: int
) -> None:
    """Native grey frames are read with numpy, not pydicom's Decoder: the same values, with
    garbage in the bits above Bits Stored and both signs."""
    rng = np.random.default_rng(bits_allocated * 100 + bits_stored + signed)
    data = rng.integers(0, 256, 5 * 7 * bits_allocated // 8, dtype=np.uint8).tobytes()
    header = Dataset()
    header.Rows, header.Columns, header.SamplesPerPixel = 5, 7, 1
    header.BitsAllocated, header.BitsStored = bits_allocated, bits_stored
    header.PixelRepresentation, header.PhotometricInterpretation = signed, "MONOCHROME2"
    frame = decode_frame(header, ExplicitVRLittleEndian, data)
    expected, _ = get_decoder(ExplicitVRLittleEndian).as_array(
        data,
        rows=5,
        columns=7,
        samples_per_pixel=1,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=signed,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
        pixel_keyword="PixelData",
    )
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.pixels.dtype == expected.dtype
    assert frame.pixels.flags.writeable
    assert frame.photometric_interpretation == "MONOCHROME2"


def test_native_frame_with_a_pad_byte_decodes() -> None:
    ds = read("SC_rgb_small_odd.dcm")  # 27 bytes of pixels, stored with a pad byte
    assert len(ds.PixelData) == 28
    frame = decode_frame(header_of("SC_rgb_small_odd.dcm"), ExplicitVRLittleEndian, ds.PixelData)
    np.testing.assert_array_equal(frame.pixels, pixels_of(ds))


@pytest.mark.parametrize(
    "syntax", [JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless]
)
def test_garbage_is_a_codec_error(syntax: str) -> None:
    header = header_of("CT_small.dcm")
    with pytest.raises(CodecError, match="cannot be decoded"):
        decode_frame(header, syntax, b"\xff\xd8 this is no codestream \x00\x01" * 4 + b"\xff\xd9")


@pytest.mark.parametrize(
    "name", ["JPEG-LL.dcm", "emri_small_jpeg_2k_lossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_truncated_codestream_is_a_codec_error(name: str) -> None:
    ds = read(name)
    data = stored_frames(ds)[0]
    with pytest.raises(CodecError):
        decode_frame(header_of(name), ds.file_meta.TransferSyntaxUID, data[: len(data) // 3])


def test_truncated_rle_frame_is_a_codec_error() -> None:
    ds = read("MR_small_RLE.dcm")
    data = stored_frames(ds)[0]
    with pytest.raises(CodecError, match="RLE"):
        decode_frame(header_of("MR_small_RLE.dcm"), RLELossless, data[:40])


def test_short_native_frame_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match=r"8191 bytes .* need 8192"):
        decode_frame(header_of("MR_small.dcm"), ExplicitVRLittleEndian, b"\0" * 8191)


def test_empty_codestream_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="empty"):
        decode_frame(header_of("JPEG-LL.dcm"), JPEGLosslessSV1, b"")


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("Rows", None, "no Rows"),
        ("BitsAllocated", None, "no Bits Allocated"),
        ("BitsAllocated", 12, "Bits Allocated 12 is invalid"),
        ("BitsStored", 17, "Bits Stored 17 is out of range"),
        ("PixelRepresentation", 2, "Pixel Representation 2 is out of range"),
        ("SamplesPerPixel", 2, "Samples per Pixel 2"),
        ("PhotometricInterpretation", None, "no Photometric Interpretation"),
    ],
)
def test_missing_or_invalid_pixel_attributes_are_named(
    attribute: str, value: object, message: str
) -> None:
    header = header_of("CT_small.dcm")
    if value is None:
        delattr(header, attribute)
    else:
        setattr(header, attribute, value)
    data = stored_frames(read("CT_small.dcm"))[0]
    with pytest.raises(CodecError, match=message):
        decode_frame(header, ExplicitVRLittleEndian, data)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.100", "1.2.3.4"])
def test_syntax_without_decoder_is_a_codec_error(syntax: str) -> None:
    with pytest.raises(CodecError, match="cannot be decoded here"):
        decode_frame(header_of("CT_small.dcm"), syntax, b"\0" * 64)


def test_float_pixel_data_is_recognised_without_the_element() -> None:
    ds = Dataset()
    ds.update({"Rows": 2, "Columns": 3, "SamplesPerPixel": 1, "BitsAllocated": 32})
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert pixel_keyword(ds) == "FloatPixelData"
    values = np.arange(6, dtype="<f4").reshape(2, 3) / 4
    frame = decode_frame(ds, ExplicitVRLittleEndian, values.tobytes())
    np.testing.assert_array_equal(frame.pixels, values)
    assert frame_length(ds) == 24
    ds.BitsStored = 32
    assert pixel_keyword(ds) == "PixelData"


def _decoded(codestream: bytes, syntax: str, **options: object) -> np.ndarray:
    """What a client gets back: pydicom's decoder, independent of decode_frame."""
    pixels, _ = get_decoder(UID(syntax)).as_array(
        encapsulate([codestream]), number_of_frames=1, pixel_keyword="PixelData", **options
    )
    return pixels


def _options(pixels: np.ndarray, bits_stored: int, photometric: str) -> dict[str, object]:
    return {
        "rows": pixels.shape[0],
        "columns": pixels.shape[1],
        "samples_per_pixel": 1 if pixels.ndim == 2 else 3,
        "planar_configuration": 0,
        "bits_allocated": pixels.dtype.itemsize * 8,
        "bits_stored": bits_stored,
        "pixel_representation": int(pixels.dtype.kind == "i"),
        "photometric_interpretation": photometric,
    }


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless])
@pytest.mark.parametrize("bits_stored", [12, 16])
def test_lossless_encoders_keep_signed_values_across_the_whole_range(
    syntax: str, bits_stored: int
) -> None:
    low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    rng = np.random.default_rng(bits_stored)
    pixels = rng.integers(low, high, size=(40, 48), endpoint=True, dtype=np.int16)
    pixels[0, :2] = low, high
    codestream = encode_pixels(pixels, syntax, bits_stored=bits_stored, photometric="MONOCHROME2")
    decoded = _decoded(codestream, syntax, **_options(pixels, bits_stored, "MONOCHROME2"))
    np.testing.assert_array_equal(decoded, pixels)


def test_near_lossless_signed_extremes_keep_their_sign() -> None:
    # JPEG-LS has no sign: an error across -32768/32767 would wrap a value round to the other end.
    pixels = np.full((32, 32), -32768, dtype=np.int16)
    pixels[16:, :] = 32767
    pixels[8:24, 8:24] = np.arange(-128, 128, dtype=np.int16).reshape(16, 16)
    codestream = encode_pixels(
        pixels, JPEGLSNearLossless, bits_stored=16, photometric="MONOCHROME2"
    )
    decoded = _decoded(codestream, JPEGLSNearLossless, **_options(pixels, 16, "MONOCHROME2"))
    error = np.abs(decoded.astype(np.int32) - pixels)
    assert error.max() <= 2 * JPEG_LS_NEAR
    assert error[8:24, 8:24].max() <= JPEG_LS_NEAR  # away from the extremes: NEAR at most


def test_jpeg_baseline_colour_is_ycbcr_422() -> None:
    pixels = pixels_of(read("SC_rgb.dcm"))
    codestream = encode_pixels(pixels, JPEGBaseline8Bit, bits_stored=8, photometric="RGB")
    assert codestream.startswith(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # JFIF: YCbCr
    decoded = _decoded(codestream, JPEGBaseline8Bit, **_options(pixels, 8, "YBR_FULL_422"))
    assert np.abs(decoded.astype(int) - pixels).mean() < 2


def test_encoding_a_syntax_without_encoder_is_a_codec_error() -> None:
    pixels = np.zeros((8, 8), dtype=np.uint16)
    with pytest.raises(CodecError, match="cannot be encoded"):
        encode_pixels(pixels, ExplicitVRLittleEndian, bits_stored=12, photometric="MONOCHROME2")


def test_encoding_values_beyond_bits_stored_is_a_codec_error() -> None:
    pixels = np.frombuffer(make_dataset().PixelData, "<u2").reshape(8, 8)  # 12-bit values
    with pytest.raises(CodecError, match="RLE"):
        encode_pixels(pixels, RLELossless, bits_stored=4, photometric="MONOCHROME2")


def test_jpeg_2000_encodes_from_several_threads_at_once() -> None:
    """Regression: concurrent JPEG 2000 encodes crashed the server (the OpenJPEG encoder
    of pylibjpeg-openjpeg is not thread-safe)."""
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 4096, (128, 128), dtype=np.uint16) for _ in range(24)]

    def encode(image: NDArray[np.uint16]) -> bytes:
        return encode_pixels(
            image, "1.2.840.10008.1.2.4.90", bits_stored=12, photometric="MONOCHROME2"
        )

    with ThreadPoolExecutor(4) as pool:
        encoded = list(pool.map(encode, images))
    header = make_dataset(rows=128, columns=128, BitsStored=12, HighBit=11)
    del header.PixelData
    for image, data in zip(images, encoded, strict=True):
        frame = decode_frame(header, "1.2.840.10008.1.2.4.90", data)
        assert np.array_equal(frame.pixels, image)


# DCMTK's decompressor for each syntax: IJG libjpeg, its own CharLS and RLE code, none of
# which the archive uses (it decodes with pylibjpeg), so that a decoder bug cannot agree with
# itself; JPEG 2000, which DCMTK lacks, is checked with OpenJPEG through imagecodecs.
_DCMTK_DECODERS = {
    RLELossless: "dcmdrle",
    JPEGLosslessSV1: "dcmdjpeg",
    JPEGBaseline8Bit: "dcmdjpeg",
    JPEGExtended12Bit: "dcmdjpeg",
    JPEGLSLossless: "dcmdjpls",
    JPEGLSNearLossless: "dcmdjpls",
}
_COMPRESSED = [(name, syntax) for name, syntax in CORPUS if UID(syntax).is_compressed]
_LOSSY = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000)


def _decoded_elsewhere(name: str, syntax: str, folder: Path) -> NDArray[Any]:
    ds = read(name)
    if syntax in (JPEG2000, JPEG2000Lossless):
        frames = [np.asarray(imagecodecs.jpeg2k_decode(f)) for f in stored_frames(ds)]
        values = (np.stack(frames) if len(frames) > 1 else frames[0]).astype(np.int64)
        if ds.PixelRepresentation == 1:  # the header's word over an unsigned codestream's
            half = 1 << (ds.BitsStored - 1)
            values = (values + half) % (2 * half) - half
        return values
    require_dcmtk(DECOMPRESSORS)
    target = folder / "native.dcm"
    check(_DCMTK_DECODERS[syntax], corpus_path(name), target)
    native = pydicom.dcmread(target)
    assert not native.file_meta.TransferSyntaxUID.is_compressed
    return pixels_of(native)


@pytest.mark.parametrize(("name", "syntax"), _COMPRESSED, ids=[name for name, _ in _COMPRESSED])
def test_each_frame_decodes_as_another_decoder_does(name: str, syntax: str, tmp_path: Path) -> None:
    """decode_frame against DCMTK (or imagecodecs' OpenJPEG): the same values for lossless
    syntaxes, within rounding of the inverse DCT or wavelet for lossy ones."""
    ds = read(name)
    expected = _decoded_elsewhere(name, syntax, tmp_path).astype(np.int64)
    count = frame_count(ds)
    for index, data in enumerate(stored_frames(ds)):
        got = decode_frame(header_of(name), syntax, data).pixels.astype(np.int64)
        reference = expected[index] if count > 1 else expected
        assert got.shape == reference.shape, index
        if syntax in _LOSSY:
            assert np.abs(got - reference).max() <= 2, index
        else:
            np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm"])
def test_jpeg_2000_lossy_codestream_is_ten_to_one(name: str) -> None:
    """The documented rate is measured on the codestream (the header's ratio is a constant);
    both images have 16 bits stored, the unit OpenJPEG's rate counts in."""
    ds = read(name)
    values = pixels_of(ds)
    codestream = encode_pixels(
        values, JPEG2000, bits_stored=ds.BitsStored, photometric=ds.PhotometricInterpretation
    )
    ratio = values.size * ds.BitsStored / 8 / len(codestream)
    assert 8 <= ratio <= 12, f"{len(codestream)} bytes: {ratio:.1f}:1"
