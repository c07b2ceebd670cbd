"""Transcoding one instance from its stored transfer syntax to another, a frame at a time.

`Transcoder(...)` decides up front whether the conversion can be done, so that the web layer
can refuse (406) before it sends anything. The output PS3.10 file is then
`prefix() + frame_item(encode_frame(frame)) for each frame + suffix()`, and a frame on its own
(WADO-RS frame retrieval) is `encode_frame(frame)`: one frame is decoded and encoded at a time,
so memory stays bounded by a frame whatever the size of the object.

Lossy pixel data is never sent as a lossless compressed syntax (PS3.18 8.7.3.5.2); it may be
decompressed. Lossless targets reproduce the decoded pixel values exactly. Lossy targets, with
the tolerance the tests hold them to (PSNR against the image's own range of values):
- JPEG Baseline and Extended at libjpeg quality 90: PSNR >= 30 dB;
- JPEG-LS near-lossless with NEAR 2: no sample differs by more than 2 (signed samples within 2
  of the container's extremes are first moved inside: they may differ by 4);
- JPEG 2000 at a 10:1 compression ratio: PSNR >= 25 dB; the error depends on the image (28 dB
  on a noisy 64 x 64 MR, 46 dB on a 128 x 128 CT).
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from app.dicom.byteorder import swap_binary_values
from app.dicom.transfer_syntax import frame_media_type
from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from app.imaging.codecs import (
    J2K_COMPRESSION_RATIO,
    NATIVE_SYNTAXES,
    CodecError,
    Frame,
    check_decodable,
    decode_frame,
    encode_pixels,
    frame_length,
    pixel_keyword,
)

_NATIVE_TARGETS = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
_JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"

# Syntaxes whose encoding is lossless: what they hold is what was acquired (or decoded).
LOSSLESS_SYNTAXES: frozenset[str] = NATIVE_SYNTAXES | frozenset(
    {
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEG2000MCLossless,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        _JPEG_XL_LOSSLESS,
        RLELossless,
    }
)


@dataclass(frozen=True)
class _Encoding:
    """What a compressed target syntax can hold (PS3.5 8.2) and what it loses."""

    bits_allocated: tuple[int, ...]
    max_bits_stored: int
    min_bits_stored: int = 1
    method: str | None = None  # Lossy Image Compression Method; None: lossless
    ratio: float | None = None  # the compression ratio asked of the encoder, when it has one
    signed: bool = True
    colour: bool = True
    palette: bool = True
    min_size: int = 1  # rows and columns


# OpenJPEG, as pydicom drives it, always makes 6 resolution levels: 2^5 pixels at least.
_J2K_MIN_SIZE = 32

_ENCODINGS: dict[str, _Encoding] = {
    JPEGBaseline8Bit: _Encoding((8,), 8, method="ISO_10918_1", signed=False, palette=False),
    JPEGExtended12Bit: _Encoding(
        (8, 16), 12, method="ISO_10918_1", signed=False, colour=False, palette=False
    ),
    JPEGLossless: _Encoding((8, 16), 16),
    JPEGLosslessSV1: _Encoding((8, 16), 16),
    JPEGLSLossless: _Encoding((8, 16), 16, min_bits_stored=2),
    JPEGLSNearLossless: _Encoding(
        (8, 16), 16, min_bits_stored=2, method="ISO_14495_1", palette=False
    ),
    JPEG2000Lossless: _Encoding((8, 16), 16, min_size=_J2K_MIN_SIZE),
    JPEG2000: _Encoding(
        (8, 16),
        16,
        method="ISO_15444_1",
        ratio=J2K_COMPRESSION_RATIO,
        palette=False,
        min_size=_J2K_MIN_SIZE,
    ),
    RLELossless: _Encoding((8, 16), 16),
}

# Every syntax we can produce from any stored syntax we can decode.
TARGET_SYNTAXES: frozenset[str] = _NATIVE_TARGETS | frozenset(_ENCODINGS)

# Colour that pydicom's decoders hand back as RGB.
_DECODED_AS_RGB = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_PIXEL_TAGS = {"PixelData": 0x7FE00010, "FloatPixelData": 0x7FE00008,
               "DoubleFloatPixelData": 0x7FE00009}  # fmt: skip
_FIRST_PIXEL_GROUP_TAG = 0x7FE00000  # Extended Offset Table and on describe the stored encoding
_ITEM = 0xE000FFFE  # (FFFE,E000) as a little-endian 32-bit tag, group first
_SEQUENCE_DELIMITER = 0xE0DDFFFE
_UNDEFINED_LENGTH = 0xFFFFFFFF


class NotTranscodable(Exception):
    """The conversion cannot be done (the web layer answers 406 with this message)."""


class Transcoder:
    """Converts one instance from its stored syntax to `target`, a frame at a time."""

    def __init__(self, header: Dataset, source_syntax: str, target_syntax: str) -> None:
        """Validates up front and raises NotTranscodable with a clear reason: unknown/unsupported
        target; lossy stored data asked for as a lossless compressed syntax (lossy → lossless is
        refused: PS3.18; decompressing lossy data to Explicit VR Little Endian IS allowed);
        JPEG baseline needs BitsStored <= 8 (and BitsAllocated 8); JPEG extended <= 12;
        JPEG-LS / JPEG lossless limits (<= 16 bits); float pixel data only to native; no pixel
        data and a compressed target. Source lossy = stored syntax lossy (.4.50/.4.51/.4.81/
        .4.91/.4.203, ...) or LossyImageCompression == "01" in the header."""
        self._source = header
        self._source_syntax = UID(source_syntax)
        self._target = UID(target_syntax)
        self._keyword = pixel_keyword(header)
        self._has_pixels = all(header.get(k) is not None for k in ("Rows", "Columns"))
        self._source_lossy = (
            self._source_syntax not in LOSSLESS_SYNTAXES
            or header.get("LossyImageCompression") == "01"
        )
        self._photometric = _decoded_photometric(header)
        self._check_target()
        # Frames pass through unchanged when only the dataset's encoding changes.
        self._passthrough = self._target == self._source_syntax or (
            self._source_syntax in NATIVE_SYNTAXES and self._target in NATIVE_SYNTAXES
        )
        if self._has_pixels and not self._passthrough:
            self._check_conversion()
        self._header = self._output_header()
        # What encode_frame needs, read once here rather than from the Dataset in each worker.
        self._bits_stored = _int(self._header.get("BitsStored"))
        kind = "i" if self._header.get("PixelRepresentation") == 1 else "u"
        self._dtype = np.dtype(f"{kind}{max(_int(self._header.get('BitsAllocated')) // 8, 1)}")
        self._frame_length = 0
        if self._has_pixels and not self.encapsulated:
            try:
                self._frame_length = frame_length(self._header)
            except CodecError as exc:
                raise NotTranscodable(f"the pixel data cannot be sized: {exc}") from exc
        self._pixel_written = False
        self._odd_total = False

    @property
    def target_syntax(self) -> str:
        return str(self._target)

    @property
    def encapsulated(self) -> bool:
        """The target is a compressed (encapsulated) syntax."""
        return self._target not in NATIVE_SYNTAXES

    @property
    def frame_media_type(self) -> str:
        """PS3.18 Table 8.7.3-5 media type of one output frame."""
        return frame_media_type(self._target)

    def header(self) -> Dataset:
        """The output dataset without pixel data, file meta (with the new syntax) included."""
        return copy.deepcopy(self._header)

    def native_frame_length(self) -> int:
        """Bytes of one output frame, for native targets (known before any frame is encoded)."""
        if self.encapsulated:
            raise ValueError(f"frames of {self._target.name} have no length before encoding")
        if not self._has_pixels:
            raise ValueError("the instance has no pixel data")
        return self._frame_length

    def encode_frame(self, data: bytes) -> bytes:
        """Stored frame bytes (as in decode_frame) -> the frame in the target syntax: native:
        little-endian bytes of the frame; compressed: the codestream (no item header)."""
        if not self._has_pixels:
            raise CodecError("the instance has no pixel data")
        if self._passthrough:
            if self.encapsulated:
                return bytes(data)
            if len(data) < self._frame_length:
                raise CodecError(
                    f"the frame has {len(data)} bytes, the image attributes need "
                    f"{self._frame_length}"
                )
            return bytes(data[: self._frame_length])  # a trailing pad byte is not pixel data
        pixels = self._conformed(decode_frame(self._source, self._source_syntax, data))
        if not self.encapsulated:
            return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
        return encode_pixels(
            pixels,
            self._target,
            bits_stored=self._bits_stored,
            photometric=self._photometric,
        )

    def prefix(self, number_of_frames: int, native_frame_length: int | None) -> bytes:
        """Start of the output PS3.10 file: preamble, 'DICM', file meta (group 2) with the new
        Transfer Syntax UID, the header's elements encoded in the target syntax, then the Pixel
        Data element header: native: OB (8 bits) or OW with the defined length of
        `number_of_frames` frames of `native_frame_length` bytes (None: `native_frame_length()`);
        compressed: OB of undefined length and an empty Basic Offset Table item. Without pixel
        data (`number_of_frames` 0), the dataset ends with the header."""
        meta = copy.deepcopy(self._header.file_meta)
        body = Dataset({tag: elem for tag, elem in self._header.items() if tag.group > 2})
        fp = DicomBytesIO()
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.is_little_endian = True
        fp.is_implicit_VR = self._target == ImplicitVRLittleEndian
        write_dataset(fp, body)
        self._pixel_written = self._has_pixels and number_of_frames > 0
        if not self._pixel_written:
            return fp.getvalue()
        if self.encapsulated:
            # Explicit VR: tag, 'OB', 2 reserved bytes, undefined length; then an empty offset
            # table (allowed, PS3.5 A.4): frame sizes are unknown until they are encoded.
            fp.write(struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", _UNDEFINED_LENGTH))
            fp.write(struct.pack("<LL", _ITEM, 0))
            return fp.getvalue()
        length = number_of_frames * (native_frame_length or self.native_frame_length())
        self._odd_total = length % 2 == 1  # values have even length: suffix() pads
        tag = _PIXEL_TAGS[self._keyword]
        group, element = tag >> 16, tag & 0xFFFF
        if fp.is_implicit_VR:
            fp.write(struct.pack("<HHL", group, element, length + self._odd_total))
        else:
            fp.write(
                struct.pack("<HH2s2xL", group, element, self._pixel_vr(), length + self._odd_total)
            )
        return fp.getvalue()

    def frame_item(self, encoded: bytes) -> bytes:
        """Compressed: the frame as an item (one fragment per frame, even length); native:
        `encoded` unchanged."""
        if not self.encapsulated:
            return encoded
        pad = b"\0" * (len(encoded) % 2)
        return struct.pack("<LL", _ITEM, len(encoded) + len(pad)) + encoded + pad

    def suffix(self) -> bytes:
        """End of the file after the frames: the sequence delimiter of encapsulated pixel data,
        or the pad byte of odd-length native pixel data. Call after prefix()."""
        if not self._pixel_written:
            return b""
        if self.encapsulated:
            return struct.pack("<LL", _SEQUENCE_DELIMITER, 0)
        return b"\0" if self._odd_total else b""

    def _pixel_vr(self) -> bytes:
        if self._keyword == "FloatPixelData":
            return b"OF"
        if self._keyword == "DoubleFloatPixelData":
            return b"OD"
        return b"OB" if self._header.get("BitsAllocated") == 8 else b"OW"

    def _check_target(self) -> None:
        target, name = self._target, _name(self._target)
        if not target.is_transfer_syntax:
            raise NotTranscodable(f"{target} is not a known transfer syntax UID")
        if target == self._source_syntax and target.is_encapsulated:
            return  # sent as stored
        if target not in TARGET_SYNTAXES:
            raise NotTranscodable(f"the server cannot produce {name}")
        if target in NATIVE_SYNTAXES:
            return
        if not self._has_pixels:
            raise NotTranscodable(f"the instance has no pixel data to compress as {name}")
        if self._keyword != "PixelData":
            raise NotTranscodable(
                f"float pixel data ({self._keyword}) cannot be compressed: it can only be sent "
                f"uncompressed (Explicit VR Little Endian), not as {name}"
            )
        if self._source_lossy and target in LOSSLESS_SYNTAXES:
            reason = (
                _name(self._source_syntax)
                if self._source_syntax not in LOSSLESS_SYNTAXES
                else "Lossy Image Compression 01"
            )
            raise NotTranscodable(
                f"the stored pixel data has been lossy compressed ({reason}); it cannot be sent "
                f"as lossless {name}, only uncompressed or in a lossy syntax"
            )

    def _check_conversion(self) -> None:
        """Frames are decoded (and maybe encoded): check the decoder and the target's limits."""
        try:
            check_decodable(self._source_syntax)
            frame_length(self._source)  # the image attributes decoding needs
        except CodecError as exc:
            raise NotTranscodable(str(exc)) from exc
        bits = int(self._source.BitsAllocated)
        if bits == 1:
            raise NotTranscodable(
                "bit-packed pixel data (Bits Allocated 1) can only be sent as stored or in "
                "another native syntax"
            )
        if bits not in (8, 16, 32):
            raise NotTranscodable(f"pixel data with Bits Allocated {bits} cannot be decoded here")
        encoding = _ENCODINGS.get(self._target)
        if encoding is not None:
            self._check_encoding(encoding, bits)

    def _check_encoding(self, encoding: _Encoding, bits: int) -> None:
        name = _name(self._target)
        stored = int(self._source.BitsStored)
        if bits not in encoding.bits_allocated or not (
            encoding.min_bits_stored <= stored <= encoding.max_bits_stored
        ):
            allocated = " or ".join(str(b) for b in encoding.bits_allocated)
            raise NotTranscodable(
                f"{name} needs Bits Allocated {allocated} and Bits Stored "
                f"{encoding.min_bits_stored} to {encoding.max_bits_stored}; this instance has "
                f"Bits Allocated {bits} and Bits Stored {stored}"
            )
        rows, columns = int(self._source.Rows), int(self._source.Columns)
        if min(rows, columns) < encoding.min_size:
            raise NotTranscodable(
                f"{name} needs images of at least {encoding.min_size} x {encoding.min_size} "
                f"pixels here; this one has {rows} rows and {columns} columns"
            )
        if self._source.PixelRepresentation == 1 and not encoding.signed:
            raise NotTranscodable(f"{name} cannot hold signed pixel data (Pixel Representation 1)")
        photometric = self._photometric
        if photometric == "RGB" and not encoding.colour:
            raise NotTranscodable(f"{name} cannot hold colour pixel data here, only grayscale")
        if photometric == "PALETTE COLOR" and not encoding.palette:
            raise NotTranscodable(
                f"{name} is lossy and PALETTE COLOR pixels are indices into a colour table: "
                "lossy compression would change the colours"
            )
        if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"):
            raise NotTranscodable(
                f"pixel data with Photometric Interpretation {photometric} cannot be encoded "
                f"as {name}"
            )

    def _output_header(self) -> Dataset:
        """The source header re-described for the output frames (PS3.3 C.7.6.3, C.7.6.1.1.5)."""
        out = copy.deepcopy(self._source)
        for tag in list(out.keys()):
            if tag >= _FIRST_PIXEL_GROUP_TAG:
                del out[tag]
        if self._source_syntax == ExplicitVRBigEndian:
            swap_binary_values(out)
        # The SOP Instance UID stays: this is the same instance in another encoding (PS3.18
        # 8.7.3.5), not a new, derived one.
        meta = FileMetaDataset()
        source_meta = getattr(self._source, "file_meta", None) or Dataset()
        meta.MediaStorageSOPClassUID = source_meta.get(
            "MediaStorageSOPClassUID", self._source.get("SOPClassUID")
        )
        meta.MediaStorageSOPInstanceUID = source_meta.get(
            "MediaStorageSOPInstanceUID", self._source.get("SOPInstanceUID")
        )
        meta.TransferSyntaxUID = self._target
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)  # we write this file
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        try:
            validate_file_meta(meta, enforce_standard=True)
        except ValueError as exc:
            raise NotTranscodable(f"no file meta information can be made: {exc}") from exc
        out.file_meta = meta
        if self._source_lossy:
            out.LossyImageCompression = "01"  # once lossy, always flagged (PS3.3 C.7.6.1.1.5)
        if not self._has_pixels or self._passthrough:
            return out
        out.PhotometricInterpretation = self._photometric
        if out.get("SamplesPerPixel") == 3:
            out.PlanarConfiguration = 0  # decoded and encoded frames are colour-by-pixel
        encoding = _ENCODINGS.get(self._target)
        if encoding is None:
            return out
        if self._target == JPEGBaseline8Bit:
            if self._photometric == "RGB":
                out.PhotometricInterpretation = "YBR_FULL_422"  # libjpeg's 4:2:2 YCbCr
            _set_bits_stored(out, 8)
        elif self._target == JPEGExtended12Bit:
            _set_bits_stored(out, 12 if out.BitsAllocated == 16 else 8)
        elif self._target == JPEGLSNearLossless:
            # The codestream's precision: a sample may come back up to NEAR above the source's
            # Bits Stored range, which a reader must not cut off at the old High Bit.
            _set_bits_stored(out, 8 if out.BitsStored <= 8 else 16)
        if encoding.method is not None:
            _mark_lossy(out, encoding.method, encoding.ratio)
        return out

    def _conformed(self, frame: Frame) -> NDArray[Any]:
        """A decoded frame in the colour space and container the output header declares."""
        pixels: NDArray[Any] = frame.pixels
        decoded = frame.photometric_interpretation
        if decoded != self._photometric:
            if decoded not in ("YBR_FULL", "YBR_FULL_422") or self._photometric != "RGB":
                raise CodecError(
                    f"the frame decoded as {decoded}, not {self._photometric} as expected"
                )
            pixels = convert_color_space(pixels, decoded, "RGB")
        return pixels if pixels.dtype == self._dtype else pixels.astype(self._dtype)


def _decoded_photometric(header: Dataset) -> str:
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if header.get("SamplesPerPixel") == 3 and photometric in _DECODED_AS_RGB:
        return "RGB"
    return photometric


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _set_bits_stored(ds: Dataset, bits: int) -> None:
    ds.BitsStored = bits
    ds.HighBit = bits - 1


def _mark_lossy(ds: Dataset, method: str, ratio: float | None) -> None:
    """Record one more lossy step (PS3.3 C.7.6.1.1.5): methods and ratios in the order applied.
    A ratio is known only when the encoder is asked for one; the header is written before any
    frame is encoded, so an achieved ratio cannot be reported."""
    methods = _values(ds.get("LossyImageCompressionMethod"))
    ratios = _values(ds.get("LossyImageCompressionRatio"))
    ds.LossyImageCompression = "01"
    if ratio is not None and len(ratios) == len(methods):
        ds.LossyImageCompressionRatio = [*ratios, ratio]
    elif "LossyImageCompressionRatio" in ds:
        del ds.LossyImageCompressionRatio  # its values could no longer be paired with methods
    ds.LossyImageCompressionMethod = [*methods, method]


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _name(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)
