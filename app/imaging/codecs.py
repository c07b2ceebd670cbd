"""Pixel data codecs: one stored frame to an array, and one array to a frame's codestream.

Decoding goes through pydicom's decoders, so that pydicom's handling of DICOM quirks applies:
YBR to RGB, signed JPEG 2000, JPEG-LS precision, unused high bits. JPEG-LS and grey JPEG are
decoded by our imagecodecs plugin (CharLS, libjpeg-turbo: faster, GIL released, see
imagecodecs_decoder.py), first for lossless syntaxes, last for lossy JPEG; pydicom's plugins
(pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE; Pillow for JPEG; pydicom itself for native
data) do the rest. Encoding uses pydicom's encoders
for RLE and JPEG 2000 and imagecodecs (libjpeg-turbo, CharLS) for JPEG and JPEG-LS. Every call
handles exactly one frame: memory stays bounded by a frame, whatever the object's size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.encoders.base import get_encoder
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
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from app.imaging import imagecodecs_decoder

# Native syntaxes: the caller hands their frames over in little-endian byte order.
NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    }
)
_JPEG_FAMILY = frozenset(JPEGTransferSyntaxes + JPEGLSTransferSyntaxes)
_END_OF_IMAGE = b"\xff\xd9"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

JPEG_QUALITY = 90  # libjpeg quality of JPEG Baseline and Extended output
JPEG_LS_NEAR = 2  # JPEG-LS near-lossless: no decoded sample is further than this from the source
J2K_COMPRESSION_RATIO = 10.0  # JPEG 2000 lossy: the rate asked of OpenJPEG (10:1)


class CodecError(Exception):
    """Pixel data that cannot be decoded or encoded; the message says why, in words."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    pixels: NDArray[Any]  # (rows, columns) or (rows, columns, samples), native byte order
    photometric_interpretation: str  # of `pixels`: YBR_* decoded to RGB where pydicom converts


def pixel_keyword(header: Dataset) -> str:
    """Which pixel data element `header` describes: PixelData, FloatPixelData or
    DoubleFloatPixelData."""
    for keyword in PIXEL_KEYWORDS:
        if keyword in header:
            return keyword
    # A header read with stop_before_pixels lacks the element itself. Float images have no
    # Bits Stored or Pixel Representation (Floating Point Image Pixel module, PS3.3 C.7.6.24).
    if "BitsStored" not in header and "PixelRepresentation" not in header:
        bits = header.get("BitsAllocated")
        if bits == 32:
            return "FloatPixelData"
        if bits == 64:
            return "DoubleFloatPixelData"
    return "PixelData"


def frame_length(header: Dataset) -> int:
    """Bytes of one native frame as `header` describes it (bit-packed frames rounded up)."""
    return _frame_length(_pixel_options(header, pixel_keyword(header), need_planar=False))


def decode_frame(header: Dataset, transfer_syntax_uid: str, data: bytes) -> Frame:
    """One frame: `data` is the frame's codestream (encapsulated: its fragments concatenated) or,
    for native syntaxes, exactly the frame's bytes in LITTLE endian (the caller already swapped
    big-endian data). `header` is the instance's dataset without pixel data (pydicom Dataset read
    with stop_before_pixels, file_meta present), giving Rows, Columns, SamplesPerPixel,
    BitsAllocated, BitsStored, PixelRepresentation, PhotometricInterpretation, PlanarConfiguration
    and for Float/Double Float Pixel Data the same. Raises CodecError (no decoder for the syntax,
    corrupt codestream, missing pixel attributes), never another exception type for bad data."""
    syntax = _decoding_syntax(transfer_syntax_uid)
    decoder = _decoder(syntax)
    keyword = pixel_keyword(header)
    if keyword != "PixelData" and syntax.is_encapsulated:
        raise CodecError(f"{keyword} cannot be encapsulated in {_name(syntax)}")
    options = _pixel_options(header, keyword, need_planar=not syntax.is_encapsulated)
    if syntax.is_encapsulated:
        if not data:
            raise CodecError("the frame's codestream is empty")
        _check_complete(syntax, data)
        source = encapsulate([data])
    else:
        length = _frame_length(options)
        if len(data) < length:
            raise CodecError(
                f"the frame has {len(data)} bytes of pixel data, the image attributes "
                f"(Rows, Columns, Samples per Pixel, Bits Allocated) need {length}"
            )
        source = data[:length]
        grey = _native_grey(source, options)
        if grey is not None:
            return Frame(grey, options["photometric_interpretation"])
    try:
        pixels, properties = _as_array(decoder, syntax, source, options)
    except Exception as exc:  # the plugins raise anything from ValueError to RuntimeError
        raise CodecError(f"the {_name(syntax)} frame cannot be decoded: {_words(exc)}") from exc
    return Frame(pixels, str(properties["photometric_interpretation"]))


def _native_grey(data: bytes, options: dict[str, Any]) -> NDArray[Any] | None:
    """A native frame of one integer sample per pixel in 8, 16 or 32 bits, read straight with
    numpy: pydicom's Decoder costs ten times the reading itself (0.2 ms of a 512x512 CT
    slice), every rendered image pays it. The same values as pydicom's: bits above Bits
    Stored ignored, the sign taken from the highest stored bit. None for anything else."""
    bits = options["bits_allocated"]
    if options["samples_per_pixel"] != 1 or bits not in (8, 16, 32):
        return None
    if options["pixel_keyword"] != "PixelData":
        return None
    signed = options["pixel_representation"] == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    values = np.frombuffer(data, dtype).reshape(options["rows"], options["columns"])
    unused = bits - options["bits_stored"]
    if not unused:
        return values.copy()  # writeable, as pydicom's
    if signed:  # shifted up and back: the arithmetic shift spreads the stored sign bit
        shifted: NDArray[Any] = np.right_shift(np.left_shift(values, unused), unused)
        return shifted
    masked: NDArray[Any] = np.bitwise_and(values, dtype.type((1 << options["bits_stored"]) - 1))
    return masked


def _as_array(
    decoder: Decoder, syntax: UID, source: bytes, options: dict[str, Any]
) -> tuple[NDArray[Any], dict[str, Any]]:
    # The options were checked before; pydicom's validation would only add warnings.
    ours = _IMAGECODECS.get(syntax)
    if ours is not None and syntax in imagecodecs_decoder.FIRST:
        try:
            return ours.as_array(source, index=0, validate=False, **options)
        except Exception:  # refused (colour, an odd codestream): pydicom's plugins try
            pass
        return decoder.as_array(source, index=0, validate=False, **options)
    try:
        return decoder.as_array(source, index=0, validate=False, **options)
    except Exception:
        if ours is None:
            raise
        # Lossy JPEG that libjpeg refuses (JPEG-lossy.dcm): libjpeg-turbo may read it.
        try:
            return ours.as_array(source, index=0, validate=False, **options)
        except Exception:
            pass
        raise  # pydicom's plugins' reasons, which name each one


def _imagecodecs_decoders() -> dict[UID, Decoder]:
    """pydicom decoders holding only our imagecodecs plugin: pydicom's own decoders (used by
    every pixel_array in the process) stay as pydicom made them."""
    decoders = {}
    for syntax in imagecodecs_decoder.SYNTAXES:
        decoder = Decoder(syntax)
        decoder.add_plugin("imagecodecs", (imagecodecs_decoder.__name__, "_decode_frame"))
        if decoder.is_available:
            decoders[syntax] = decoder
    return decoders


_IMAGECODECS = _imagecodecs_decoders()


def check_decodable(transfer_syntax_uid: str) -> None:
    """Raise CodecError unless frames stored in this syntax can be decoded."""
    _decoder(_decoding_syntax(transfer_syntax_uid))


def _decoding_syntax(transfer_syntax_uid: str) -> UID:
    syntax = UID(transfer_syntax_uid)
    # Native frames arrive little endian (and inflated) whatever the stored syntax.
    return ExplicitVRLittleEndian if syntax in NATIVE_SYNTAXES else syntax


def _decoder(syntax: UID) -> Decoder:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CodecError(f"pixel data in {_name(syntax)} cannot be decoded here") from None
    if not decoder.is_available:
        missing = ", ".join(decoder.missing_dependencies)
        raise CodecError(f"decoding {_name(syntax)} needs packages not installed: {missing}")
    return decoder


def _check_complete(syntax: UID, data: bytes) -> None:
    """libjpeg decodes a cut JPEG or JPEG-LS codestream without complaint, into garbage; the
    end-of-image marker says it is whole. (Entropy-coded data never holds FF D9: an FF there is
    followed by a stuffed byte.) A few bytes of padding after the marker are tolerated."""
    if syntax in _JPEG_FAMILY and _END_OF_IMAGE not in data[-16:]:
        raise CodecError(
            f"the {_name(syntax)} codestream is truncated: it has no end-of-image marker"
        )


def encode_pixels(
    pixels: NDArray[Any], transfer_syntax_uid: str, *, bits_stored: int, photometric: str
) -> bytes:
    """One frame as a codestream of a compressed syntax. `pixels` (rows, columns[, 3], colour
    interleaved) holds values within `bits_stored` in a container of the output's Bits
    Allocated, signed or not as the output's Pixel Representation; `photometric` is the
    Photometric Interpretation of `pixels`: MONOCHROME1/2, PALETTE COLOR or RGB. JPEG Baseline
    turns RGB into YBR_FULL_422 (4:2:2 YCbCr); the other syntaxes keep RGB (no colour transform,
    JPEG 2000 without MCT)."""
    syntax = UID(transfer_syntax_uid)
    encoder = _ENCODERS.get(syntax)
    if encoder is None:
        raise CodecError(f"pixel data cannot be encoded in {_name(syntax)} here")
    try:
        return bytes(encoder(np.ascontiguousarray(pixels), syntax, bits_stored, photometric))
    except Exception as exc:  # imagecodecs and pydicom raise several types for refused input
        raise CodecError(f"the frame cannot be encoded in {_name(syntax)}: {_words(exc)}") from exc


def _jpeg_lossy(
    pixels: NDArray[Any], syntax: UID, bits_stored: int, photometric: str
) -> bytes | bytearray:
    if pixels.ndim == 3:  # libjpeg's YCbCr 4:2:2, as PS3.5 8.2.1 wants for colour
        return imagecodecs.jpeg8_encode(
            pixels, JPEG_QUALITY, colorspace="RGB", outcolorspace="YCbCr", subsampling="422"
        )
    precision = 8 if pixels.dtype.itemsize == 1 else 12
    return imagecodecs.jpeg8_encode(pixels, JPEG_QUALITY, bitspersample=precision)


def _jpeg_lossless(
    pixels: NDArray[Any], syntax: UID, bits_stored: int, photometric: str
) -> bytes | bytearray:
    # Process 14, selection value 1, sample precision = Bits Stored (2 at least, as JPEG wants);
    # signed samples go in as their two's complement bits, which is how decoders read them back.
    precision = max(bits_stored, 2)
    values = _unsigned(pixels)
    values = values & values.dtype.type((1 << precision) - 1)
    space = "RGB" if pixels.ndim == 3 else None  # no colour transform: it would not be lossless
    return imagecodecs.jpeg8_encode(
        values,
        lossless=True,
        predictor=1,
        bitspersample=precision,
        colorspace=space,
        outcolorspace=space,
    )


def _jpeg_ls(
    pixels: NDArray[Any], syntax: UID, bits_stored: int, photometric: str
) -> bytes | bytearray:
    # CharLS takes the sample precision from the container: 8 or 16 bits. Signed values go in
    # sign-extended, so that the precision reads them back exactly (JPEG-LS has no sign).
    width = 1 if bits_stored <= 8 else 2
    near = JPEG_LS_NEAR if syntax == JPEGLSNearLossless else 0
    if pixels.dtype.kind != "i":
        return imagecodecs.jpegls_encode(pixels.astype(f"u{width}"), near)
    values = pixels.astype(f"i{width}")
    if near:  # an error across the container's extremes would wrap round into the sign
        extremes = np.iinfo(values.dtype)
        values = np.clip(values, extremes.min + near, extremes.max - near)
    return imagecodecs.jpegls_encode(values.view(f"u{width}"), near)


def _pydicom(
    pixels: NDArray[Any], syntax: UID, bits_stored: int, photometric: str
) -> bytes | bytearray:
    options: dict[str, Any] = {
        "rows": pixels.shape[0],
        "columns": pixels.shape[1],
        "samples_per_pixel": pixels.shape[2] if pixels.ndim == 3 else 1,
        "planar_configuration": 0,
        "bits_allocated": pixels.dtype.itemsize * 8,
        "bits_stored": bits_stored,
        "pixel_representation": int(pixels.dtype.kind == "i"),
        "photometric_interpretation": photometric,
        "number_of_frames": 1,
    }
    if syntax == JPEG2000:
        options["j2k_cr"] = [J2K_COMPRESSION_RATIO]
    if syntax in (JPEG2000, JPEG2000Lossless):
        # pylibjpeg-openjpeg's encoder is not thread-safe: two encodes at once crash the
        # process (SIGSEGV). Decoding is safe and stays concurrent.
        with _J2K_ENCODE:
            return get_encoder(syntax).encode(pixels, **options)
    return get_encoder(syntax).encode(pixels, **options)


_J2K_ENCODE = threading.Lock()


_ENCODERS = {
    JPEGBaseline8Bit: _jpeg_lossy,
    JPEGExtended12Bit: _jpeg_lossy,
    JPEGLossless: _jpeg_lossless,
    JPEGLosslessSV1: _jpeg_lossless,
    JPEGLSLossless: _jpeg_ls,
    JPEGLSNearLossless: _jpeg_ls,
    JPEG2000Lossless: _pydicom,
    JPEG2000: _pydicom,
    RLELossless: _pydicom,
}


def _unsigned(pixels: NDArray[Any]) -> NDArray[Any]:
    return pixels.view(f"u{pixels.dtype.itemsize}") if pixels.dtype.kind == "i" else pixels


def _pixel_options(header: Dataset, keyword: str, *, need_planar: bool) -> dict[str, Any]:
    """pydicom's decoding options for one frame, checked with messages that name the attribute."""
    samples = _integer(header, "SamplesPerPixel", 1, 3)
    if samples == 2:
        raise CodecError("Samples per Pixel 2 is not supported; it must be 1 or 3")
    bits = _integer(header, "BitsAllocated", 1, 64)
    if bits != 1 and bits % 8:
        raise CodecError(f"Bits Allocated {bits} is invalid: it must be 1 or a multiple of 8")
    photometric = header.get("PhotometricInterpretation")
    if not isinstance(photometric, str) or not photometric.strip():
        raise CodecError("the header has no Photometric Interpretation, needed to decode pixels")
    options: dict[str, Any] = {
        "pixel_keyword": keyword,
        "number_of_frames": 1,
        "rows": _integer(header, "Rows", 1, 65535),
        "columns": _integer(header, "Columns", 1, 65535),
        "samples_per_pixel": samples,
        "bits_allocated": bits,
        "photometric_interpretation": photometric.strip(),
    }
    if keyword == "PixelData":
        options["bits_stored"] = _integer(header, "BitsStored", 1, bits)
        options["pixel_representation"] = _integer(header, "PixelRepresentation", 0, 1)
    if samples == 3:
        # Codestreams carry their own sample layout: only native data needs to be told.
        present = header.get("PlanarConfiguration") is not None
        options["planar_configuration"] = (
            _integer(header, "PlanarConfiguration", 0, 1) if present or need_planar else 0
        )
    return options


def _integer(header: Dataset, keyword: str, low: int, high: int) -> int:
    value = header.get(keyword)
    if value is None or value == "":
        raise CodecError(f"the header has no {_spaced(keyword)}, needed to decode pixels")
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"{_spaced(keyword)} {value!r} is not a single integer")
    if not low <= value <= high:
        raise CodecError(f"{_spaced(keyword)} {value} is out of range: {low} to {high}")
    return value


def _frame_length(options: dict[str, Any]) -> int:
    bits: int = (
        options["rows"]
        * options["columns"]
        * options["samples_per_pixel"]
        * options["bits_allocated"]
    )
    if (
        options["photometric_interpretation"] == "YBR_FULL_422"
        and options["samples_per_pixel"] == 3
    ):
        bits = bits // 3 * 2  # native 4:2:2: two chroma samples for every two pixels
    return (bits + 7) // 8


def _spaced(keyword: str) -> str:
    """'BitsAllocated' -> 'Bits Allocated', as the standard writes the name."""
    return "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(keyword))


def _name(syntax: UID) -> str:
    return (
        f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else f"transfer syntax {syntax}"
    )


def _words(exc: Exception) -> str:
    """An exception's message on one line (pydicom lists each plugin's failure on its own)."""
    return " ".join(str(exc).split()) or type(exc).__name__
