"""Orthanc's DICOMweb client stores a study in the archive (`/dicom-web/servers/{name}/stow`),
end to end: Debian's Orthanc and orthanc-dicomweb, real DICOM files, our running server.

Orthanc's multipart boundary is two UUIDs, 73 characters: over RFC 2046's 70, which the
archive once refused, so Orthanc could never push a study to it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file

from tests.support.orthanc import require_orthanc, running_orthanc
from tests.support.server import running_server

# Real files of four studies, native and compressed (RLE, JPEG 2000).
FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle.dcm", "JPEG2000.dcm")


def _files() -> dict[str, bytes]:
    """The files by SOP Instance UID."""
    found = {}
    for name in FILES:
        path = get_testdata_file(name)
        assert path is not None, name
        blob = Path(path).read_bytes()
        found[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = blob
    return found


def test_orthanc_pushes_studies_to_the_archive(tmp_path: Path) -> None:
    require_orthanc()
    files = _files()
    with (
        running_server(tmp_path / "data") as ours,
        running_orthanc(tmp_path / "orthanc", {"pacs": f"{ours}/dicomweb/"}) as orthanc,
        httpx.Client(base_url=orthanc, timeout=60) as client,
    ):
        studies = set()
        for blob in files.values():
            added = client.post("/instances", content=blob)
            assert added.status_code == 200, added.text
            studies.add(added.json()["ParentStudy"])
        assert len(studies) == len(FILES)

        pushed = client.post("/dicom-web/servers/pacs/stow", json={"Resources": sorted(studies)})
        assert pushed.status_code == 200, pushed.text

        archive = httpx.Client(base_url=f"{ours}/dicomweb", timeout=60)
        with archive:
            found = archive.get("/instances", params={"limit": 100})
            assert found.status_code == 200, found.text
            stored = {item["00080018"]["Value"][0]: item for item in found.json()}
            assert set(stored) == set(files)
            for sop, item in stored.items():
                got = archive.get(
                    item["00081190"]["Value"][0],
                    # As stored: the RLE and JPEG 2000 files untouched.
                    headers={"Accept": "application/dicom; transfer-syntax=*"},
                )
                assert got.status_code == 200, got.text
                assert got.content == files[sop], f"{sop}: not the bytes Orthanc was given"
