"""A pydicom decoding plugin on imagecodecs: CharLS for JPEG-LS, libjpeg-turbo 3 for grey JPEG
(baseline, extended 12-bit and lossless).

Why beside pydicom's own plugins: imagecodecs releases the GIL while it decodes, so that two
worker threads decode on two cores, and CharLS decodes JPEG-LS several times faster than
pylibjpeg's libjpeg. libjpeg-turbo also reads 12-bit codestreams that libjpeg refuses (the
pydicom corpus' JPEG-lossy.dcm). pydicom still does everything around the codec (sign, colour
space, container size), as it does for its own plugins: this module only returns the decoded
bytes and says how they are laid out.

Lossy JPEG goes to pydicom's plugins first (see FIRST). Colour JPEG (not JPEG-LS) is left to
pydicom's plugins: they return YCbCr untouched, which this
plugin would have to reproduce; it raises, and codecs.decode_frame falls back to them.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np
from pydicom import uid
from pydicom.pixels.decoders.base import DecodeRunner

JPEG_LS_SYNTAXES = frozenset(uid.JPEGLSTransferSyntaxes)
JPEG_SYNTAXES = frozenset(uid.JPEGTransferSyntaxes)
SYNTAXES = JPEG_LS_SYNTAXES | JPEG_SYNTAXES
# Where this plugin goes first: lossless codestreams, which every decoder must decode to the
# same values. Lossy JPEG stays with pydicom's plugins first (libjpeg-turbo's inverse DCT
# rounds a few values one unit apart from libjpeg's) and comes here only when they refuse it.
FIRST = JPEG_LS_SYNTAXES | {uid.JPEGLossless, uid.JPEGLosslessSV1}

# pydicom's plugin interface: what each syntax needs, and whether it is there.
DECODER_DEPENDENCIES = dict.fromkeys(SYNTAXES, ("numpy", "imagecodecs"))


def is_available(syntax: str) -> bool:
    if syntax in JPEG_LS_SYNTAXES:
        return bool(imagecodecs.JPEGLS.available)
    return syntax in JPEG_SYNTAXES and bool(imagecodecs.JPEG8.available)


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """The frame's samples, colour by pixel, in the smallest container of their precision."""
    syntax = runner.transfer_syntax
    if syntax in JPEG_LS_SYNTAXES:
        pixels: Any = imagecodecs.jpegls_decode(src)
        # CharLS returns colour by pixel whatever the codestream's interleave mode.
        runner.set_option("planar_configuration", 0)
    elif runner.samples_per_pixel == 1:
        pixels = imagecodecs.jpeg8_decode(src)
    else:
        raise NotImplementedError("colour JPEG is decoded by pydicom's plugins")
    array = np.asarray(pixels)
    rows, columns, samples = runner.rows, runner.columns, runner.samples_per_pixel
    expected = (rows, columns) if samples == 1 else (rows, columns, samples)
    if array.shape != expected:
        raise ValueError(
            f"the codestream holds a {'x'.join(map(str, array.shape))} image, the header "
            f"describes {rows}x{columns}x{samples}"
        )
    # The codec's container (8 or 16 bits, from the codestream's precision) is what pydicom
    # reads the bytes as; it restores the header's Bits Allocated afterwards.
    runner.set_option("bits_allocated", array.dtype.itemsize * 8)
    return array.tobytes()
