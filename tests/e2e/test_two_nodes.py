"""Two stateless `pacs serve` nodes on one PostgreSQL database and one S3 bucket.

Hundreds of instances of overlapping studies go in concurrently through both nodes, some
of them through both at once; afterwards each node must show every instance exactly once,
exact counts, and byte-identical retrieval.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.production import bucket_object_count, production_backends
from tests.support.server import running_server

STUDIES, SERIES_PER_STUDY, INSTANCES_PER_SERIES = 6, 4, 15  # 360 instances
SENT_TWICE = 40  # instances sent through both nodes at the same time


def _dataset_set(patient_id: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for s in range(STUDIES):
        study = generate_uid()
        for se in range(SERIES_PER_STUDY):
            series = generate_uid()
            for number in range(INSTANCES_PER_SERIES):
                ds = make_dataset(
                    study=study,
                    series=series,
                    PatientID=patient_id,
                    Modality=("CT", "MR", "PT", "SR")[se],
                    SeriesNumber=se + 1,
                    InstanceNumber=number + 1,
                    AccessionNumber=f"A{s}",
                    seed=number,
                )
                files[ds.SOPInstanceUID] = to_bytes(ds)
    return files


def _store(url: str, blob: bytes) -> int:
    response = httpx.post(
        f"{url}/dicomweb/studies",
        content=blob,
        headers={"Content-Type": "application/dicom"},
        timeout=60,
    )
    return response.status_code


def test_two_nodes_share_one_archive(tmp_path: Path) -> None:
    patient_id = f"TWO-NODES-{generate_uid()[-8:]}"
    files = _dataset_set(patient_id)
    rng = random.Random(7)
    twice = set(rng.sample(sorted(files), SENT_TWICE))

    with production_backends(tmp_path) as env:
        with (
            running_server(tmp_path / "node1", env=env) as node1,
            running_server(tmp_path / "node2", env=env) as node2,
        ):
            jobs = []
            for i, (sop, blob) in enumerate(files.items()):
                jobs.append((node1 if i % 2 else node2, blob))
                if sop in twice:
                    jobs.append((node2 if i % 2 else node1, blob))
            rng.shuffle(jobs)
            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(lambda job: _store(*job), jobs))
            assert statuses == [200] * len(jobs)

            for node in (node1, node2):
                _check_node(node, patient_id, files)
        assert bucket_object_count(env) == len(files)


def _check_node(node: str, patient_id: str, files: dict[str, bytes]) -> None:
    with httpx.Client(base_url=f"{node}/dicomweb", timeout=60) as client:
        studies = client.get("/studies", params={"PatientID": patient_id}).json()
        assert len(studies) == STUDIES
        for study in studies:
            assert study["00201206"]["Value"] == [SERIES_PER_STUDY]
            assert study["00201208"]["Value"] == [SERIES_PER_STUDY * INSTANCES_PER_SERIES]
            assert sorted(study["00080061"]["Value"]) == ["CT", "MR", "PT", "SR"]
            uid = study["0020000D"]["Value"][0]
            series = client.get(f"/studies/{uid}/series").json()
            assert [s["00201209"]["Value"] for s in series] == [[INSTANCES_PER_SERIES]] * 4
        found = client.get("/instances", params={"PatientID": patient_id, "limit": 1000}).json()
        uids = [item["00080018"]["Value"][0] for item in found]
        assert sorted(uids) == sorted(files), "each instance exactly once"
        for item in found:
            response = client.get(
                item["00081190"]["Value"][0], headers={"Accept": "application/dicom"}
            )
            assert response.content == files[item["00080018"]["Value"][0]]
