"""PACS_PUBLIC_URL: every generated link starts with it, whatever the request's Host or a
trusted proxy's forwarded headers say; and dicomweb-client, whose Host header carries no
port (so that without it BulkDataURIs point at port 80), follows the links it is given."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_file
from tests.support.server import free_port, running_server

RETRIEVE_URL = "00081190"


@dataclass(frozen=True)
class Archive:
    url: str  # where the test reaches it: http://127.0.0.1:port
    public: str  # its PACS_PUBLIC_URL: the same server, named differently


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    port = free_port()
    public = f"http://localhost:{port}/"  # the trailing slash is not doubled
    # 127.0.0.1 is trusted as a proxy too: the public URL still wins over its headers.
    env = {"PACS_PUBLIC_URL": public, "PACS_TRUSTED_PROXIES": "127.0.0.1"}
    with running_server(tmp_path_factory.mktemp("public"), env=env, port=port) as url:
        yield Archive(url, public.rstrip("/"))


def test_public_url_wins_over_host_and_forwarded_headers(archive: Archive) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_file(study=study, series=series, sop=sop)
    headers = {"X-Forwarded-Host": "proxy.example.org", "X-Forwarded-Proto": "https"}
    instance = f"{archive.public}/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    with httpx.Client(base_url=f"{archive.url}/dicomweb", headers=headers) as http:
        stored = http.post("/studies", content=data, headers={"Content-Type": "application/dicom"})
        assert stored.status_code == 200, stored.text
        assert stored.json()[RETRIEVE_URL]["Value"] == [
            f"{archive.public}/dicomweb/studies/{study}"
        ]
        [found] = http.get("/instances", params={"SOPInstanceUID": sop}).json()
        assert found[RETRIEVE_URL]["Value"] == [instance]
        [meta] = http.get(f"/studies/{study}/metadata", headers={"Host": "other:1"}).json()
        assert meta["7FE00010"]["BulkDataURI"] == f"{instance}/bulkdata/7FE00010"


def test_dicomweb_client_follows_bulkdata_uris(archive: Archive) -> None:
    client = DICOMwebClient(url=f"{archive.url}/dicomweb")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    dataset = pydicom.dcmread(io.BytesIO(make_file(study=study, series=series, sop=sop)))
    client.store_instances([dataset])
    metadata = client.retrieve_instance_metadata(study, series, sop)
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{archive.public}/dicomweb/studies/{study}/")
    # Followed as given: the URI names the archive's real port.
    assert b"".join(client.retrieve_bulkdata(uri)) == dataset.PixelData
