"""Unit tests of app.imaging; shared helpers that read the pydicom test corpus."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames


def corpus_path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not in pydicom's test files or pydicom-data"
    return str(path)


def read(name: str, *, stop_before_pixels: bool = False) -> Dataset:
    with warnings.catch_warnings():
        # Corpus files carry odd values on purpose; pydicom's remarks on them are not the test.
        warnings.simplefilter("ignore")
        return pydicom.dcmread(corpus_path(name), stop_before_pixels=stop_before_pixels)


def header_of(name: str) -> Dataset:
    """The dataset without pixel data, as the archive hands it to the imaging code."""
    return read(name, stop_before_pixels=True)


def pixels_of(ds: Dataset) -> NDArray[np.generic]:
    """pydicom's own decoding of the whole object: the reference the tests compare with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def stored_frames(ds: Dataset) -> list[bytes]:
    """Each frame as stored, cut without app code: encapsulated frames by pydicom, native
    frames by slicing the value (big endian swapped to little, as the archive hands it over)."""
    syntax = ds.file_meta.TransferSyntaxUID
    count = frame_count(ds)
    if syntax.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    value = ds.PixelData
    if not syntax.is_little_endian and ds["PixelData"].VR == "OW":
        value = np.frombuffer(value, ">u2").astype("<u2").tobytes()
    if count == 1:
        return [value]
    bits = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated
    size = bits // 8
    return [value[i * size : (i + 1) * size] for i in range(count)]
