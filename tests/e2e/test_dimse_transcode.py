"""C-MOVE and C-GET to peers that do not accept the stored transfer syntax: the archive
transcodes (as WADO-RS does for an Accept header) instead of failing the sub-operation.

A study of JPEG 2000 instances (lossless grey, lossless colour, lossy) is moved to a DCMTK
storescp that accepts only the uncompressed syntaxes (+xe) and fetched by getscu, which
proposes only those: every instance arrives uncompressed, and its pixels are those an
independent decoder (imagecodecs' OpenJPEG, not the pydicom plugin the server decodes
with) reads from the stored codestream.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.support.dcmtk import check, require_dcmtk, storescp
from tests.support.server import free_port, running_server

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
# pydicom corpus files in JPEG 2000, and the storescu option that proposes their syntax.
J2K_FILES = {
    "MR_small_jp2klossless.dcm": "-xv",  # lossless, signed 16-bit grey
    "US1_J2KR.dcm": "-xv",  # lossless, colour (reversible colour transform)
    "JPEG2000.dcm": "-xw",  # lossy
}


def read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # corpus files carry values pydicom warns about
        return pydicom.dcmread(path)


@dataclass(frozen=True)
class Setup:
    port: int
    moved: Path
    study: str
    originals: dict[str, Dataset]  # SOP Instance UID -> the stored J2K dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_dcmtk()
    root = tmp_path_factory.mktemp("transcode")
    study = generate_uid()
    originals: dict[str, Dataset] = {}
    files: list[tuple[Path, str]] = []
    for name, option in J2K_FILES.items():
        source = get_testdata_file(name)
        assert source is not None
        ds = read(Path(source))
        ds.StudyInstanceUID = study
        ds.PatientID, ds.PatientName = "J2K-1", "J2K^PATIENT"  # one patient's study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = root / name
        ds.save_as(path)
        originals[ds.SOPInstanceUID] = ds
        files.append((path, option))
    with storescp(root / "moved", syntaxes="+xe") as destination:
        port = free_port()
        args = ["--dimse-port", str(port), "--ae-title", "PACS"]
        args += ["--move-destination", f"STORESCP=127.0.0.1:{destination}"]
        with running_server(root / "data", *args):
            for path, option in files:
                check(
                    "storescu",
                    "-v",
                    "-aet",
                    "STORESCU",
                    "-aec",
                    "PACS",
                    option,
                    "127.0.0.1",
                    str(port),
                    path,
                )
            yield Setup(port, root / "moved", study, originals)


def reference_pixels(original: Dataset) -> np.ndarray:
    """The stored codestream decoded by imagecodecs (single-frame files)."""
    frame = next(generate_frames(original.PixelData, number_of_frames=1))
    return np.asarray(imagecodecs.jpeg2k_decode(frame))


def assert_decompressed(received: dict[str, Dataset], originals: dict[str, Dataset]) -> None:
    assert set(received) == set(originals)
    for sop, original in originals.items():
        got = received[sop]
        assert got.file_meta.TransferSyntaxUID in UNCOMPRESSED, sop
        assert got.SOPClassUID == original.SOPClassUID
        assert got.PatientID == original.PatientID
        pixels = got.pixel_array
        reference = reference_pixels(original)
        assert pixels.shape == reference.shape, sop
        assert np.array_equal(pixels, reference.astype(pixels.dtype)), sop


def test_movescu_of_jpeg2000_to_a_storescp_without_it_sends_every_instance_decompressed(
    setup: Setup,
) -> None:
    output = check(
        "movescu", "-v", "-aet", "MOVESCU", "-aec", "PACS", "-aem", "STORESCP", "-S",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study}",
        "127.0.0.1", str(setup.port),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in output
    received = {str(ds.SOPInstanceUID): ds for ds in map(read, setup.moved.iterdir())}
    assert_decompressed(received, setup.originals)


def test_getscu_of_jpeg2000_proposing_uncompressed_syntaxes_gets_every_instance_decompressed(
    setup: Setup, tmp_path: Path
) -> None:
    output = check(
        "getscu", "-v", "-aet", "GETSCU", "-aec", "PACS", "-S", "-od", tmp_path,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study}",
        "127.0.0.1", str(setup.port),
    )  # fmt: skip
    assert "Number of Completed Suboperations : 3" in output
    assert "Number of Failed Suboperations    : 0" in output
    received = {str(ds.SOPInstanceUID): ds for ds in map(read, tmp_path.iterdir())}
    assert_decompressed(received, setup.originals)
