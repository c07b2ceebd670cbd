"""The archive driven by the real DICOMweb client from PyPI (`dicomweb-client`).

One study of generated CT images (two series, one of them multi-frame, with an overlay large
enough to become bulk data), plus pydicom's CT_small.dcm and a JPEG Baseline file, are stored
with `store_instances` and then found and retrieved with the client's own API. Every result is
compared with what was sent, value by value. Identifiers are unique per run: the archive is
the session's shared one.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_dataset, to_bytes

ROWS = COLUMNS = 32  # 2048 bytes of 16-bit pixels per frame: above the 1024-byte bulk threshold
JPEG_FILE = "SC_rgb_jpeg_dcmtk.dcm"  # JPEG Baseline, one frame


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _file(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(path)


@dataclass(frozen=True)
class Sent:
    patient_id: str
    given_name: str  # unique, for fuzzy matching
    study: str
    series_a: str  # two single-frame instances
    series_b: str  # one instance with three frames
    a: list[Dataset]
    b: Dataset
    ct_small: Dataset
    jpeg: Dataset
    store_result: Dataset

    @property
    def study_instances(self) -> list[Dataset]:
        return [*self.a, self.b]


@pytest.fixture(scope="module")
def client(dicomweb: str) -> DICOMwebClient:
    return DICOMwebClient(url=dicomweb)


@pytest.fixture(scope="module")
def sent(client: DICOMwebClient) -> Sent:
    tag = uuid.uuid4().hex[:10].upper()
    patient_id = f"DWC-{tag}"
    given = f"Q{tag}"
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    common = {
        "study": study,
        "rows": ROWS,
        "columns": COLUMNS,
        "PatientID": patient_id,
        "PatientName": f"Client^{given}",
        "StudyDescription": "dicomweb-client e2e",
    }
    a = [
        _read(to_bytes(make_dataset(series=series_a, seed=i, InstanceNumber=i + 1, **common)))
        for i in range(2)
    ]
    multi = make_dataset(series=series_b, frames=3, seed=7, SeriesNumber=2, **common)
    overlay = np.random.default_rng(3).integers(0, 256, 2048, np.uint8).tobytes()
    for element, vr, value in [
        (0x0010, "US", 128),  # Overlay Rows
        (0x0011, "US", 128),  # Overlay Columns
        (0x0040, "CS", "G"),  # Overlay Type
        (0x0050, "SS", [1, 1]),  # Overlay Origin
        (0x0100, "US", 1),  # Overlay Bits Allocated
        (0x0102, "US", 0),  # Overlay Bit Position
        (0x3000, "OW", overlay),  # Overlay Data: 2048 bytes, bulk data
    ]:
        multi.add_new(0x60000000 | element, vr, value)
    b = _read(to_bytes(multi))
    ct_small, jpeg = _file("CT_small.dcm"), _file(JPEG_FILE)
    result = client.store_instances(datasets=[*a, b, ct_small, jpeg])
    return Sent(patient_id, given, study, series_a, series_b, a, b, ct_small, jpeg, result)


def _uids(results: list[dict[str, dict]], tag: str = "00080018") -> list[str]:
    return sorted(r[tag]["Value"][0] for r in results)


def _value(result: dict[str, dict], tag: str) -> object:
    return result[tag]["Value"][0]


def _sops(datasets: Iterator[Dataset] | list[Dataset]) -> list[str]:
    return sorted(ds.SOPInstanceUID for ds in datasets)


# --- STOW-RS --------------------------------------------------------------------------------


def test_store_instances(sent: Sent) -> None:
    result = sent.store_result
    assert "FailedSOPSequence" not in result
    referenced = {item.ReferencedSOPInstanceUID: item for item in result.ReferencedSOPSequence}
    everything = [*sent.study_instances, sent.ct_small, sent.jpeg]
    assert sorted(referenced) == _sops(everything)
    for ds in everything:
        item = referenced[ds.SOPInstanceUID]
        assert item.ReferencedSOPClassUID == ds.SOPClassUID
        assert item.RetrieveURL.endswith(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


# --- QIDO-RS --------------------------------------------------------------------------------


def test_search_for_studies_by_patient_id(client: DICOMwebClient, sent: Sent) -> None:
    (found,) = client.search_for_studies(search_filters={"PatientID": sent.patient_id})
    assert _value(found, "0020000D") == sent.study
    assert _value(found, "00100020") == sent.patient_id
    assert found["00100010"]["Value"] == [{"Alphabetic": f"Client^{sent.given_name}"}]
    assert _value(found, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert _value(found, "00201208") == 3  # NumberOfStudyRelatedInstances
    assert found["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy


def test_search_for_studies_fuzzy(client: DICOMwebClient, sent: Sent) -> None:
    prefix = sent.given_name[:7].lower()  # start of the given name, other case
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": prefix})
    assert _uids(fuzzy, "0020000D") == [sent.study]
    exact = client.search_for_studies(search_filters={"PatientName": prefix})
    assert exact == []


def test_search_for_studies_fields_and_limit(client: DICOMwebClient, sent: Sent) -> None:
    found = client.search_for_studies(
        search_filters={"PatientID": sent.patient_id}, fields=["StudyDescription"], limit=5
    )
    assert [_value(r, "00081030") for r in found] == ["dicomweb-client e2e"]


def test_search_for_series(client: DICOMwebClient, sent: Sent) -> None:
    found = client.search_for_series(study_instance_uid=sent.study)
    assert _uids(found, "0020000E") == sorted([sent.series_a, sent.series_b])
    counts = {_value(r, "0020000E"): _value(r, "00201209") for r in found}
    assert counts == {sent.series_a: 2, sent.series_b: 1}
    assert {_value(r, "00080060") for r in found} == {"CT"}
    everywhere = client.search_for_series(search_filters={"PatientID": sent.patient_id})
    assert _uids(everywhere, "0020000E") == sorted([sent.series_a, sent.series_b])
    numbered = client.search_for_series(
        study_instance_uid=sent.study, search_filters={"SeriesNumber": 2}
    )
    assert _uids(numbered, "0020000E") == [sent.series_b]


def test_search_for_instances(client: DICOMwebClient, sent: Sent) -> None:
    in_series = client.search_for_instances(
        study_instance_uid=sent.study, series_instance_uid=sent.series_a
    )
    assert _uids(in_series) == _sops(sent.a)
    in_study = client.search_for_instances(study_instance_uid=sent.study)
    assert _uids(in_study) == _sops(sent.study_instances)
    by_sop = {_value(r, "00080018"): r for r in in_study}
    multi = by_sop[sent.b.SOPInstanceUID]
    assert _value(multi, "00280010") == ROWS
    assert _value(multi, "00280008") == 3  # NumberOfFrames
    anywhere = client.search_for_instances(
        search_filters={"PatientID": sent.patient_id, "InstanceNumber": 2}
    )
    assert _uids(anywhere) == [sent.a[1].SOPInstanceUID]


# --- WADO-RS --------------------------------------------------------------------------------


def _assert_same(received: list[Dataset], expected: list[Dataset]) -> None:
    assert _sops(received) == _sops(expected)
    by_sop = {ds.SOPInstanceUID: ds for ds in expected}
    for ds in received:
        original = by_sop[ds.SOPInstanceUID]
        assert ds.PixelData == original.PixelData
        assert ds.PatientName == original.PatientName
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_retrieve_study(client: DICOMwebClient, sent: Sent) -> None:
    _assert_same(client.retrieve_study(sent.study), sent.study_instances)


def test_retrieve_series(client: DICOMwebClient, sent: Sent) -> None:
    _assert_same(client.retrieve_series(sent.study, sent.series_a), sent.a)
    _assert_same(client.retrieve_series(sent.study, sent.series_b), [sent.b])


def test_retrieve_instance(client: DICOMwebClient, sent: Sent) -> None:
    for original in (sent.b, sent.ct_small, sent.jpeg):
        ds = client.retrieve_instance(
            original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID
        )
        _assert_same([ds], [original])
        assert ds == original  # every attribute, as sent


def test_retrieve_series_metadata(client: DICOMwebClient, sent: Sent) -> None:
    metadata = client.retrieve_series_metadata(sent.study, sent.series_a)
    assert _uids(metadata) == _sops(sent.a)
    for item in metadata:
        original = next(ds for ds in sent.a if ds.SOPInstanceUID == _value(item, "00080018"))
        # pixel data of 2048 bytes is bulk data; everything else is inline and equal
        assert set(item["7FE00010"]) == {"vr", "BulkDataURI"}
        ds = Dataset.from_json({k: v for k, v in item.items() if k != "7FE00010"})
        for elem in original:
            if elem.keyword != "PixelData":
                assert ds[elem.tag].value == elem.value, elem.keyword


@pytest.mark.parametrize(
    "media_types",
    [None, ("application/octet-stream",)],
    ids=["default", "octet-stream"],
)
def test_retrieve_instance_frames_native(
    client: DICOMwebClient, sent: Sent, media_types: tuple[str, ...] | None
) -> None:
    """With no media_types the client asks for `multipart/related; type="*/*"`."""
    size = ROWS * COLUMNS * 2
    ds = sent.b
    frames = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[1, 3],
        media_types=media_types,
    )
    assert frames == [ds.PixelData[:size], ds.PixelData[2 * size : 3 * size]]
    ct = sent.ct_small
    (frame,) = client.retrieve_instance_frames(
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        frame_numbers=[1],
        media_types=media_types,
    )
    assert frame == ct.PixelData


@pytest.mark.parametrize(
    "media_types",
    [("image/jpeg",), (("image/jpeg", "1.2.840.10008.1.2.4.50"),)],
    ids=["image/jpeg", "image/jpeg+syntax"],
)
def test_retrieve_instance_frames_compressed(
    client: DICOMwebClient, sent: Sent, media_types: tuple[object, ...]
) -> None:
    ds = sent.jpeg
    (frame,) = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[1],
        media_types=media_types,
    )
    (expected,) = generate_frames(ds.PixelData, number_of_frames=1)
    assert frame == expected
    assert frame.startswith(b"\xff\xd8")  # a JPEG stream, as sent


def _rebased(uri: str, dicomweb: str) -> str:
    """dicomweb-client sends `Host: <hostname>` without the port (dicomweb_client/web.py sets
    headers['Host'] = self.host), so absolute URLs the archive builds from the Host header, as
    it must, name port 80. Such a URI is put back on the archive's real address."""
    parts = urlsplit(uri)
    assert parts.path.startswith("/dicomweb/")
    return dicomweb + parts.path.removeprefix("/dicomweb")


def test_retrieve_bulkdata(client: DICOMwebClient, sent: Sent, dicomweb: str) -> None:
    ds = sent.b
    metadata = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    instance = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    overlay_uri = metadata["60003000"]["BulkDataURI"]
    assert urlsplit(overlay_uri).path == f"{instance}/bulkdata/60003000"
    assert client.retrieve_bulkdata(_rebased(overlay_uri, dicomweb)) == [ds[0x60003000].value]
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert urlsplit(pixel_uri).path == f"{instance}/bulkdata/7FE00010"
    assert b"".join(client.retrieve_bulkdata(_rebased(pixel_uri, dicomweb))) == ds.PixelData


def test_absolute_urls_follow_the_host_header(client: DICOMwebClient, sent: Sent) -> None:
    """What the client's Host header (no port) makes of the URLs: documents the quirk above."""
    ds = sent.a[0]
    metadata = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    host = urlsplit(client.base_url).hostname
    assert metadata["7FE00010"]["BulkDataURI"].startswith(f"http://{host}/dicomweb/studies/")
