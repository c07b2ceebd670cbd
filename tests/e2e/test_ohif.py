"""The OHIF viewer (v3, the built `@ohif/app` package) against the archive, in headless Chromium.

Four studies, each with its own patient name, are stored with STOW-RS into a fresh `pacs serve`:
an uncompressed CT series (signed 16-bit with a rescale), a JPEG Baseline MR series (8-bit,
lossy), a JPEG Lossless CT series (unsigned 12-bit) and one ultrasound multi-frame object. The
images are a generated head phantom with consistent geometry (position, orientation, frame of
reference, spacing); the JPEG streams are made here with libjpeg-turbo through imagecodecs.

The viewer is served from another port than the archive, so every DICOMweb request is
cross-origin and needs CORS, with an app-config.js whose one data source is the archive.
`tests/e2e/ohif/drive.mjs` drives Chromium through it once for the whole module: the study
list, then each study in the viewer until its viewport shows an image, and reports what it saw.

Checked here: the study list shows exactly the stored studies (modality, number of instances);
each viewport shows a real image (pixel statistics of the viewport canvas, far from a blank or
flat one), and it is the phantom (skull, brain, ventricle and air in the right order of
brightness at fixed points), of the whole series (the image counter names every slice or
frame), in the stored window where there is one; compressed frames reached the viewer
compressed; no request to the archive failed or answered with an error status, and every
answer carried the CORS header; no script error. Screenshots and the driver's report are kept
in test-artifacts/ohif/.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import imagecodecs
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    MRImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from tests.e2e.multipart import encode_multipart, media_type_params
from tests.support.browser import ROOT, app_config, find_tools, run_driver, serve_viewer
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.server import running_server

ARTIFACTS = ROOT / "test-artifacts" / "ohif"
SIZE = 256  # rows and columns of every image
STEP_S = 60  # longest wait of one step: the study list, or one study until its image shows
BUDGET_S = 150  # the driver skips the steps left after this (it is 20-30 s when all is well)
# A viewport counts as showing an image when its luminance varies this much: a black, grey or
# "loading" viewport has a standard deviation near 0 and a handful of levels.
BLANK = {"minStddev": 12.0, "minLevels": 24}
# Points of the phantom, in [-1, 1] from the image's centre (x to the right, y down), whose
# brightness keeps its order in every study whatever the window: skull > brain > ventricle and
# air. A picture that is garbled, shifted, or decoded with the wrong bit depth or sign
# breaks it.
PROBES = {
    "air": (-0.95, -0.95),
    "skull": (0.0, -0.88),
    "brain": (0.0, 0.2),
    "ventricle": (-0.22, -0.1),
}
BRIGHTER = (("skull", "brain"), ("brain", "ventricle"), ("brain", "air"))


@dataclass(frozen=True)
class Study:
    key: str  # names the screenshots and the driver's steps
    family: str  # PatientName is family^given; the study list shows "family, given"
    given: str
    modality: str
    uid: str  # StudyInstanceUID
    files: tuple[bytes, ...] = field(repr=False)
    images: int  # slices or frames of the one series
    window: tuple[int, int] | None  # (width, center) stored in the images
    frame_type: str  # media type of the frames the archive sends (transfer-syntax=*)

    @property
    def shown_name(self) -> str:
        return f"{self.family}, {self.given}"


# --- the pictures ------------------------------------------------------------------------------


def phantom(position: float) -> np.ndarray:
    """A head-like phantom in [0, 1] (SIZE x SIZE): skull, brain, ventricles and a lesion whose
    size follows `position` in [0, 1], so that slices and frames differ."""
    y, x = np.mgrid[-1 : 1 : SIZE * 1j, -1 : 1 : SIZE * 1j]

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return np.asarray(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1)

    image = np.zeros((SIZE, SIZE))
    image[ellipse(0, 0, 0.80, 0.92)] = 1.0  # skull
    image[ellipse(0, 0, 0.72, 0.84)] = 0.45  # brain
    image[ellipse(-0.22, -0.1, 0.1, 0.3)] = 0.2  # ventricles
    image[ellipse(0.22, -0.1, 0.1, 0.3)] = 0.2
    radius = 0.05 + 0.2 * np.sin(np.pi * position)
    image[ellipse(0.3, 0.45, radius, radius)] = 0.8  # lesion
    image += 0.05 * np.sin(8 * np.pi * x)  # texture, so that no region is flat
    return np.asarray(np.clip(image, 0, 1))


def phantom_at(probe: str, position: float = 0.5) -> float:
    """The phantom's value at one of the PROBES."""
    x, y = PROBES[probe]
    return float(
        phantom(position)[round((y + 1) / 2 * (SIZE - 1)), round((x + 1) / 2 * (SIZE - 1))]
    )


def volume(slices: int, scale: float, offset: float, dtype: type[np.generic]) -> list[np.ndarray]:
    """`slices` phantom images mapped to stored values `offset + scale * phantom`."""
    return [
        np.round(offset + scale * phantom(index / (slices - 1))).astype(dtype)
        for index in range(slices)
    ]


def patient(family: str, given: str, description: str) -> dict[str, Any]:
    """Patient and study attributes of one study."""
    return {
        "PatientName": f"{family}^{given}",
        "PatientID": f"OHIF-{uuid.uuid4().hex[:8].upper()}",
        "StudyDescription": description,
        "AccessionNumber": uuid.uuid4().hex[:10].upper(),
    }


def axial_series(
    pixels: list[np.ndarray], attrs: dict[str, Any], syntax: UID | None = None
) -> tuple[str, tuple[bytes, ...]]:
    """(StudyInstanceUID, files) of one series of axial slices with 1 mm pixels, 5 mm apart,
    native or, with `syntax`, each slice as one JPEG stream in that syntax."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    files = []
    for index, image in enumerate(pixels):
        ds = make_dataset(study=study, series=series, rows=SIZE, columns=SIZE, **attrs)
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-SIZE / 2, -SIZE / 2, index * 5.0]
        ds.SliceLocation = index * 5.0
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [1, 1]
        if syntax is None:
            ds.PixelData = image.tobytes()
            files.append(to_bytes(ds))
        else:
            ds.PixelData = encapsulate([jpeg(image, syntax, int(ds.BitsStored))])
            files.append(part10(ds, syntax))
    return study, tuple(files)


def jpeg(image: np.ndarray, syntax: UID, bits_stored: int) -> bytes:
    """`image` as a JPEG stream (libjpeg-turbo): Baseline, lossy and 8-bit, or Lossless SV1,
    that is process 14 with first-order prediction (selection value 1)."""
    if syntax == JPEGBaseline8Bit:
        return bytes(imagecodecs.jpeg8_encode(image, level=90))
    assert syntax == JPEGLosslessSV1, syntax
    return bytes(
        imagecodecs.jpeg8_encode(image, lossless=True, bitspersample=bits_stored, predictor=1)
    )


def part10(ds: Dataset, syntax: UID) -> bytes:
    """PS3.10 bytes of `ds` in `syntax`, its PixelData already encapsulated in it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


NATIVE = "application/octet-stream"


def native_ct() -> Study:
    """CT, 16 slices of signed 16-bit stored values, RescaleIntercept -1024, soft-tissue window:
    air -1000 HU ... bone +1000 HU, and -2000 HU outside the scanner's circular field of view
    as scanners pad it, which is a negative stored value (-976): read as unsigned, the corners
    (the "air" probe) would turn white."""
    family, given = "OHIFCT", "NATIVE"
    y, x = np.mgrid[-1 : 1 : SIZE * 1j, -1 : 1 : SIZE * 1j]
    outside = x**2 + y**2 > 1
    pixels = volume(16, 2000, -1000 + 1024, np.int16)
    for image in pixels:
        image[outside] = -2000 + 1024
    study, files = axial_series(
        pixels,
        {
            **patient(family, given, "OHIF e2e CT native"),
            "SOPClassUID": CTImageStorage,
            "SeriesDescription": "Axial 5 mm",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "PixelRepresentation": 1,
            "RescaleIntercept": -1024,
            "RescaleSlope": 1,
            "RescaleType": "HU",
            "WindowCenter": 40,
            "WindowWidth": 400,
            "KVP": 120,
        },
    )
    return Study(
        key="ct-native",
        family=family,
        given=given,
        modality="CT",
        uid=study,
        files=files,
        images=16,
        window=(400, 40),
        frame_type=NATIVE,
    )


def jpeg_baseline_mr() -> Study:
    """MR, 12 slices of 8-bit MONOCHROME2 in JPEG Baseline (lossy)."""
    family, given = "OHIFMR", "JPEGBASELINE"
    study, files = axial_series(
        volume(12, 255, 0, np.uint8),
        {
            **patient(family, given, "OHIF e2e MR JPEG baseline"),
            "SOPClassUID": MRImageStorage,
            "Modality": "MR",
            "SeriesDescription": "T1 axial",
            "ImageType": ["DERIVED", "SECONDARY"],
            "BitsAllocated": 8,
            "BitsStored": 8,
            "HighBit": 7,
            "LossyImageCompression": "01",
            "LossyImageCompressionMethod": "ISO_10918_1",
            "ScanningSequence": "SE",
            "SequenceVariant": "NONE",
            "ScanOptions": "",
            "MRAcquisitionType": "2D",
            "EchoTime": 15,
            "RepetitionTime": 500,
        },
        JPEGBaseline8Bit,
    )
    return Study(
        key="jpeg-baseline",
        family=family,
        given=given,
        modality="MR",
        uid=study,
        files=files,
        images=12,
        window=None,
        frame_type="image/jpeg",
    )


def jpeg_lossless_ct() -> Study:
    """CT, 10 slices of unsigned 12-bit stored values in JPEG Lossless SV1, bone window."""
    family, given = "OHIFCT", "JPEGLOSSLESS"
    study, files = axial_series(
        volume(10, 2000, 24, np.uint16),  # stored 24 ... 2024 = -1000 ... +1000 HU
        {
            **patient(family, given, "OHIF e2e CT JPEG lossless"),
            "SOPClassUID": CTImageStorage,
            "SeriesDescription": "Axial bone",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "BitsStored": 12,
            "HighBit": 11,
            "RescaleIntercept": -1024,
            "RescaleSlope": 1,
            "RescaleType": "HU",
            "WindowCenter": 300,
            "WindowWidth": 1500,
            "KVP": 120,
        },
        JPEGLosslessSV1,
    )
    return Study(
        key="jpeg-lossless",
        family=family,
        given=given,
        modality="CT",
        uid=study,
        files=files,
        images=10,
        window=(1500, 300),
        frame_type="image/jpeg",
    )


def multiframe_us() -> Study:
    """One ultrasound multi-frame object: 20 frames of 8-bit MONOCHROME2, a cine loop."""
    family, given = "OHIFUS", "MULTIFRAME"
    ds = make_dataset(
        rows=SIZE,
        columns=SIZE,
        frames=20,
        **patient(family, given, "OHIF e2e US multi-frame"),
        SOPClassUID=UltrasoundMultiFrameImageStorage,
        Modality="US",
        SeriesDescription="Cine loop",
        ImageType=["ORIGINAL", "PRIMARY"],
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        FrameTime=50.0,
        CineRate=20,
        FrameIncrementPointer=0x00181063,  # FrameTime
    )
    ds.PixelData = np.stack(volume(20, 255, 0, np.uint8)).tobytes()
    return Study(
        key="multiframe",
        family=family,
        given=given,
        modality="US",
        uid=ds.StudyInstanceUID,
        files=(to_bytes(ds),),
        images=20,
        window=None,
        frame_type=NATIVE,
    )


# --- one browser session for the module --------------------------------------------------------


@dataclass(frozen=True)
class Session:
    archive: str  # origin of the archive
    viewer: str  # origin of the viewer
    studies: tuple[Study, ...] = field(repr=False)  # (kept out of failure tracebacks)
    report: dict[str, Any] = field(repr=False)  # what drive.mjs saw, also in report.json

    def study(self, key: str) -> Study:
        return next(s for s in self.studies if s.key == key)

    def responses(self, step: str) -> list[dict[str, Any]]:
        return [r for r in self.report["responses"] if r["step"] == step]

    def failures(self, step: str) -> list[str]:
        """Archive requests of a step that got no answer or an error status, one line each."""
        lost = [f for f in self.report["failedRequests"] if f["step"] == step]
        bad = [r for r in self.responses(step) if r["status"] >= 400]
        return [f"{f['method']} {f['url']} -> {f['error']}" for f in lost] + [
            f"{r['method']} {r['url']} -> HTTP {r['status']}" for r in bad
        ]

    def step(self, key: str) -> dict[str, Any]:
        """What the driver saw in a step; a failed or skipped step only has "error"."""
        seen: dict[str, Any] = (
            self.report["studyList"] if key == "study-list" else self.report["studies"][key]
        )
        assert "error" not in seen, f"{key}: {seen['error']}; errors: {self.errors(key)}"
        return seen

    def errors(self, step: str) -> list[str]:
        """Console errors and uncaught exceptions in the page during a step."""
        found = self.report["consoleErrors"] + self.report["pageErrors"]
        return [e["text"][:500] for e in found if e["step"] == step]


STUDIES = (native_ct, jpeg_baseline_mr, jpeg_lossless_ct, multiframe_us)
KEYS = ("ct-native", "jpeg-baseline", "jpeg-lossless", "multiframe")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    tools = find_tools()
    studies = tuple(make() for make in STUDIES)
    assert tuple(s.key for s in studies) == KEYS
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with running_server(tmp_path_factory.mktemp("ohif-archive")) as archive:
        with httpx.Client(base_url=f"{archive}/dicomweb", timeout=60) as http:
            for study in studies:
                content_type, body = encode_multipart(list(study.files))
                response = http.post(
                    "/studies", content=body, headers={"Content-Type": content_type}
                )
                assert response.status_code == 200, f"STOW of {study.key}: {response.text}"
        with serve_viewer(tools.dist, app_config(f"{archive}/dicomweb")) as viewer:
            assert viewer != archive  # another port: every archive request is cross-origin
            report = run_driver(
                tools,
                "drive.mjs",
                {
                    "viewerUrl": viewer,
                    "archiveOrigin": archive,
                    "artifacts": str(ARTIFACTS),
                    "stepMs": STEP_S * 1000,
                    "budgetMs": BUDGET_S * 1000,
                    "blank": BLANK,
                    "probes": PROBES,
                    "studies": [
                        {"key": s.key, "studyInstanceUID": s.uid, "shownName": s.shown_name}
                        for s in studies
                    ],
                },
                timeout=BUDGET_S + 2 * STEP_S,  # the last step may start just in budget
            )
        (ARTIFACTS / "driver.log").write_text(report.pop("log"))
        (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2))
        yield Session(archive, viewer, studies, report)


# --- the checks --------------------------------------------------------------------------------


def test_study_list_shows_exactly_the_stored_studies(session: Session) -> None:
    listed = session.step("study-list")
    rows = listed["rows"]
    context = f"rows: {rows}; errors: {session.errors('study-list')}; see study-list.png"
    assert listed["found"] == [s.shown_name for s in session.studies], context
    assert len(rows) == len(session.studies), context
    for study in session.studies:
        (row,) = [r for r in rows if r[0] == study.shown_name]
        assert study.modality in row, f"{study.key}: no modality {study.modality} in {row}"
        assert str(len(study.files)) in row, f"{study.key}: not {len(study.files)} instances"


@pytest.mark.parametrize("step", ["study-list", *KEYS])
def test_no_archive_request_failed(session: Session, step: str) -> None:
    failures = session.failures(step)
    assert not failures, f"{step}: archive requests failed:\n" + "\n".join(failures)
    assert session.responses(step), f"{step}: no request reached the archive"


@pytest.mark.parametrize("step", ["study-list", *KEYS])
def test_every_archive_answer_allows_the_viewer_origin(session: Session, step: str) -> None:
    allowed = ("*", session.viewer)
    refused = [r["url"] for r in session.responses(step) if r["allowOrigin"] not in allowed]
    assert refused == [], f"{step}: no Access-Control-Allow-Origin for {session.viewer}"


@pytest.mark.parametrize("step", ["study-list", *KEYS])
def test_no_script_error(session: Session, step: str) -> None:
    errors = session.errors(step)
    assert not errors, f"{step}: errors in the page:\n" + "\n".join(errors)


@pytest.mark.parametrize("key", KEYS)
def test_viewport_shows_the_image(session: Session, key: str) -> None:
    seen = session.step(key)
    stats = seen["stats"]
    context = f"{seen['url']}: {stats}; see viewer-{key}.png; errors: {session.errors(key)}"
    assert "error" not in stats, context
    assert stats["stddev"] >= BLANK["minStddev"], f"the viewport looks blank: {context}"
    assert stats["levels"] >= BLANK["minLevels"], f"the viewport looks flat: {context}"


def test_probes_lie_where_the_phantom_orders_them() -> None:
    for position in (0.0, 0.5, 1.0):  # first, middle and last slice or frame
        for bright, dark in BRIGHTER:
            assert phantom_at(bright, position) >= phantom_at(dark, position) + 0.2


@pytest.mark.parametrize("key", KEYS)
def test_viewport_shows_the_phantom(session: Session, key: str) -> None:
    seen = session.step(key)
    brightness = seen["stats"]["probes"]
    for bright, dark in BRIGHTER:
        assert brightness[bright] >= brightness[dark] + 10, (
            f"{key}: the {bright} is not brighter than the {dark} in the viewport: "
            f"{brightness}; see viewport-{key}.png"
        )


@pytest.mark.parametrize("key", KEYS)
def test_viewport_counts_every_image_of_the_series(session: Session, key: str) -> None:
    study, overlay = session.study(key), session.step(key)["overlay"]
    assert re.search(rf"\(\d+/{study.images}\)", overlay), f"not 'n/{study.images}': {overlay!r}"
    if study.window is not None:
        width, center = study.window
        assert re.search(rf"W: ?{width} L: ?{center}\b", overlay), overlay


@pytest.mark.parametrize("key", KEYS)
def test_frames_reach_the_viewer_as_stored(session: Session, key: str) -> None:
    """Compressed frames are decoded by the viewer, not transcoded by the archive."""
    study = session.study(key)
    frames = [r for r in session.responses(key) if "/frames/" in r["url"]]
    assert frames, f"{key}: the viewer fetched no frames"
    for response in frames:
        media_type, params = media_type_params(response["contentType"] or "")
        assert media_type == "multipart/related", response
        assert params.get("type") == study.frame_type, response
