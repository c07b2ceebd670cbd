"""Two tenants holding the same UIDs, through every protocol, on both production shapes.

One `pacs serve` per backend (SQLite with a folder; PostgreSQL with S3), DIMSE on, with an
AE policy: a modality and a workstation for each of the tenants clinic-a and clinic-b.
Each tenant receives two instances with the same Study/Series/SOP Instance UIDs as the
other's but different content (description and pixels): one by STOW-RS under
`/dicomweb/tenants/{tenant}`, one by storescu. Then nothing crosses: QIDO-RS, WADO-RS
(instance, metadata, frames, rendered), WADO-URI, findscu, movescu and getscu each see
their own tenant's objects only, the default tenant sees none, and an AE refused a service
by its policy gets 0124 "Refused: Not authorized".
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import RETRIEVE_URL, parse_multipart, stow, stow_ok, value
from tests.support.dcmtk import check, require_dcmtk, run, storescp
from tests.support.dicom_factory import make_file
from tests.support.production import production_backends
from tests.support.server import free_port, running_server

TENANTS = ("clinic-a", "clinic-b")
# Per tenant: its modality (stores only) and its workstation (queries and retrieves).
MODALITY = {"clinic-a": "MODA", "clinic-b": "MODB"}
WORKSTATION = {"clinic-a": "WSA", "clinic-b": "WSB"}
DESTINATION = {"clinic-a": "DESTA", "clinic-b": "DESTB"}
POLICY = "MODA=echo,store@clinic-a;MODB=store@clinic-b;WSA=echo,find,move,get@clinic-a;" + (
    "WSB=find,move,get@clinic-b"
)
# 0124 "Refused: Not authorized" (PS3.7 Annex C, a general status of every C-service):
# DCMTK's tools know it by number only.
REFUSED = "(Unknown Status: 0x124)"


def read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


@dataclass(frozen=True)
class Archive:
    url: str
    port: int
    moved: dict[str, Path]  # tenant -> where its C-MOVE destination writes
    study: str
    series: str
    sops: tuple[str, str]  # the STOW-RS instance, the C-STORE instance
    files: dict[str, dict[str, bytes]]  # tenant -> SOP Instance UID -> the file it stored

    def web(self, tenant: str | None) -> httpx.Client:
        root = f"{self.url}/dicomweb" + (f"/tenants/{tenant}" if tenant else "")
        return httpx.Client(base_url=root, timeout=30)

    def dcmtk(self, tool: str, calling: str, *args: str | Path, send: Path | None = None) -> str:
        """Run a DCMTK tool as `calling` (storescu sending `send`); its output whatever its
        exit status."""
        peer = ("127.0.0.1", str(self.port), *([send] if send else []))
        return run(tool, "-aet", calling, "-aec", "PACS", "-v", *args, *peer).stdout


@pytest.fixture(scope="module", params=["sqlite", "postgres+s3"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    require_dcmtk()
    root = tmp_path_factory.mktemp(f"tenants-{request.param}")
    with (
        production_backends(root) if request.param != "sqlite" else nullcontext({}) as env,
        storescp(root / "moved-a", DESTINATION["clinic-a"]) as port_a,
        storescp(root / "moved-b", DESTINATION["clinic-b"]) as port_b,
    ):
        port = free_port()
        args = ["--dimse-port", str(port), "--dimse-ae-policy", POLICY]
        args += ["--move-destination", f"DESTA=127.0.0.1:{port_a}"]
        args += ["--move-destination", f"DESTB=127.0.0.1:{port_b}"]
        with running_server(root / "data", *args, env=env) as url:
            moved = {"clinic-a": root / "moved-a", "clinic-b": root / "moved-b"}
            yield _store_both(url, port, moved, root)


def _store_both(url: str, port: int, moved: dict[str, Path], root: Path) -> Archive:
    study, series, sops = generate_uid(), generate_uid(), (generate_uid(), generate_uid())
    files: dict[str, dict[str, bytes]] = {}
    for t, tenant in enumerate(TENANTS):
        files[tenant] = {
            sop: make_file(
                study=study,
                series=series,
                sop=sop,
                seed=10 * t + n,
                rows=16,
                columns=16,
                InstanceNumber=n + 1,
                PatientID="SAME-ID",
                StudyDescription=f"study of {tenant}",
                SeriesDescription=f"series of {tenant}",
            )
            for n, sop in enumerate(sops)
        }
    archive = Archive(url, port, moved, study, series, sops, files)
    for tenant in TENANTS:
        with archive.web(tenant) as http:
            body = stow_ok(http, [files[tenant][sops[0]]])
        # The response's links stay in the tenant the request named.
        assert value(body, RETRIEVE_URL) == f"{url}/dicomweb/tenants/{tenant}/studies/{study}"
        path = root / f"{tenant}.dcm"
        path.write_bytes(files[tenant][sops[1]])
        output = archive.dcmtk("storescu", MODALITY[tenant], send=path)
        assert "Received Store Response (Success)" in output, output
    return archive


def _instance_path(archive: Archive, sop: str) -> str:
    return f"/studies/{archive.study}/series/{archive.series}/instances/{sop}"


def _described(attrs: dict[str, object], tag: str = "00081030") -> str:
    found = value(attrs, tag)  # type: ignore[arg-type]
    return str(found)


# -- DICOMweb --------------------------------------------------------------------------


def test_qido_sees_the_own_tenant_only(archive: Archive) -> None:
    for tenant in TENANTS:
        with archive.web(tenant) as http:
            query = {"PatientID": "SAME-ID", "includefield": "StudyDescription"}
            studies = http.get("/studies", params=query).json()
            assert [_described(s) for s in studies] == [f"study of {tenant}"]
            assert value(studies[0], "00201208") == 2  # NumberOfStudyRelatedInstances
            instances = http.get(
                f"/studies/{archive.study}/instances", params={"includefield": "0008103E"}
            ).json()
            assert {_described(i, "0008103E") for i in instances} == {f"series of {tenant}"}
            base = f"{archive.url}/dicomweb/tenants/{tenant}/studies/{archive.study}"
            assert all(value(i, RETRIEVE_URL).startswith(base) for i in instances)
    with archive.web(None) as http:  # the default tenant holds none of it
        assert http.get("/studies", params={"PatientID": "SAME-ID"}).json() == []
        assert http.get(f"/studies/{archive.study}/metadata").status_code == 404


def test_wado_retrieves_the_own_tenant_only(archive: Archive) -> None:
    rendered: dict[str, bytes] = {}
    for tenant in TENANTS:
        with archive.web(tenant) as http:
            for sop in archive.sops:
                path = _instance_path(archive, sop)
                stored = archive.files[tenant][sop]
                got = http.get(path, headers={"Accept": "application/dicom"})
                assert got.status_code == 200
                assert read(got.content).PixelData == read(stored).PixelData

                (metadata,) = http.get(f"{path}/metadata").json()
                assert _described(metadata) == f"study of {tenant}"
                bulk = metadata["7FE00010"]["BulkDataURI"]
                assert bulk.startswith(f"{archive.url}/dicomweb/tenants/{tenant}/studies/")

                frames = http.get(
                    f"{path}/frames/1",
                    headers={"Accept": "multipart/related; type=application/octet-stream"},
                )
                assert frames.status_code == 200
                (frame,) = parse_multipart(frames)
                assert frame.content == read(stored).PixelData

            sop = archive.sops[0]
            png = http.get(
                f"{_instance_path(archive, sop)}/rendered", headers={"Accept": "image/png"}
            )
            assert png.status_code == 200
            rendered[tenant] = png.content
            uri = http.get(
                "/wado",
                params={
                    "requestType": "WADO",
                    "studyUID": archive.study,
                    "seriesUID": archive.series,
                    "objectUID": sop,
                    "contentType": "application/dicom",
                },
            )
            assert uri.status_code == 200
            assert read(uri.content).StudyDescription == f"study of {tenant}"
    assert rendered["clinic-a"] != rendered["clinic-b"]  # different pixels


def test_stow_into_one_tenant_does_not_touch_the_other(archive: Archive) -> None:
    a, b = archive.files["clinic-a"], archive.files["clinic-b"]
    sop = archive.sops[0]
    with archive.web("clinic-b") as http:
        # Tenant A's object under B's stored UIDs is a conflict in B, not a success in A.
        conflict = stow(http, [a[sop]])
        assert conflict.status_code == 409
        again = stow_ok(http, [b[sop]])  # the identical re-send is fine
        assert "00081198" not in again
    with archive.web("clinic-a") as http:
        got = http.get(_instance_path(archive, sop), headers={"Accept": "application/dicom"})
        assert read(got.content).PixelData == read(a[sop]).PixelData


def test_bad_tenant_names_are_400(archive: Archive) -> None:
    with httpx.Client(base_url=archive.url) as http:
        response = http.get("/dicomweb/tenants/Bad_Name/studies")
        assert response.status_code == 400
        assert "invalid tenant" in response.json()["error"]


# -- DIMSE -----------------------------------------------------------------------------


def test_findscu_sees_the_own_tenant_only(archive: Archive, tmp_path: Path) -> None:
    for tenant in TENANTS:
        out = tmp_path / tenant
        out.mkdir()
        args = ["-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY"]
        args += ["-k", "PatientID=SAME-ID", "-k", "StudyDescription"]
        output = archive.dcmtk("findscu", WORKSTATION[tenant], *args)
        assert "Received Final Find Response (Success)" in output, output
        found = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
        assert [ds.StudyDescription for ds in found] == [f"study of {tenant}"]
    # An AE the policy does not list: the default tenant, which holds none of it.
    output = archive.dcmtk(
        "findscu", "OTHER", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=SAME-ID"
    )
    assert "Received Final Find Response (Success)" in output
    assert "Find Response: 1 (Pending)" not in output


def test_movescu_sends_the_own_tenant_only(archive: Archive) -> None:
    for tenant in TENANTS:
        output = archive.dcmtk(
            "movescu",
            WORKSTATION[tenant],
            "-S",
            "-aem",
            DESTINATION[tenant],
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={archive.study}",
        )
        assert "Received Final Move Response (Success)" in output, output
        received = {p.name: p.read_bytes() for p in archive.moved[tenant].iterdir()}
        assert len(received) == 2
        for data in received.values():
            ds = read(data)
            expected = read(archive.files[tenant][str(ds.SOPInstanceUID)])
            assert ds.PixelData == expected.PixelData
            assert ds.StudyDescription == f"study of {tenant}"


def test_getscu_gets_the_own_tenant_only(archive: Archive, tmp_path: Path) -> None:
    for tenant in TENANTS:
        out = tmp_path / tenant
        out.mkdir()
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.study}"]
        output = archive.dcmtk("getscu", WORKSTATION[tenant], "-S", "-od", str(out), *keys)
        assert "Number of Completed Suboperations : 2" in output, output
        for path in out.iterdir():
            ds = pydicom.dcmread(path)
            assert ds.PixelData == read(archive.files[tenant][str(ds.SOPInstanceUID)]).PixelData


def test_services_a_policy_does_not_allow_are_refused(archive: Archive, tmp_path: Path) -> None:
    study = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.study}"]
    path = tmp_path / "x.dcm"
    path.write_bytes(archive.files["clinic-a"][archive.sops[0]])
    refusals = {
        "C-STORE": archive.dcmtk("storescu", "WSA", send=path),
        "C-FIND": archive.dcmtk("findscu", "MODA", "-S", *study),
        "C-MOVE": archive.dcmtk("movescu", "MODA", "-S", "-aem", "DESTA", *study),
        "C-GET": archive.dcmtk("getscu", "MODA", "-S", "-od", str(tmp_path), *study),
        "C-ECHO": archive.dcmtk("echoscu", "MODB"),
    }
    for service, output in refusals.items():
        assert REFUSED in output, f"{service}:\n{output}"
    assert "Number of Completed Suboperations : 0" in refusals["C-GET"]
    assert not list(tmp_path.glob("CT.*"))  # getscu received nothing
    # The archive answered each and is still serving.
    assert "Received Echo Response (Success)" in archive.dcmtk("echoscu", "MODA")
    check("echoscu", "-aet", "OTHER", "-aec", "PACS", "127.0.0.1", str(archive.port))
