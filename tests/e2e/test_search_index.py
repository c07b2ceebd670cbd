"""The search index end to end: `pacs serve` with PACS_SEARCH_URL and a real Elasticsearch
node (tests/support/elasticsearch.py), searched directly as an explorer would.

Stored instances become searchable by attributes that have no column in the index (Slice
Thickness, a private tag, a key in a sequence); a replacement and a delete propagate; and
while Elasticsearch is down ingest goes on, and once it is back the index catches up to hold
exactly the archive's instances (app/search/compare.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from elasticsearch import AsyncElasticsearch
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.auth.principal import DEFAULT_TENANT
from app.search.compare import Difference, compare_instances
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.elasticsearch import ElasticsearchNode
from tests.support.server import running_server

WAIT = 60.0


def _file(study: str, series: str, sop: str, thickness: str) -> bytes:
    ds = make_dataset(study=study, series=series, sop=sop, SliceThickness=thickness)
    ds.add_new(0x00090010, "LO", "PACS TEST")  # the private creator of block 0x10
    ds.add_new(0x00091001, "LO", "VENDOR-X")
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS-42"
    ds.RequestAttributesSequence = [item]
    return to_bytes(ds)


def _stow(client: httpx.Client, body: bytes) -> None:
    response = client.post("/studies", content=body, headers={"Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text


def _archive(client: httpx.Client, studies: list[str]) -> dict[str, dict[str, Any]]:
    """SOP Instance UID -> DICOM JSON of every instance the archive holds in `studies`."""
    found: dict[str, dict[str, Any]] = {}
    for study in studies:
        response = client.get(f"/studies/{study}/metadata")
        if response.status_code == 404:
            continue
        assert response.status_code == 200, response.text
        for dataset in response.json():
            found[dataset["00080018"]["Value"][0]] = dataset
    return found


def _search(url: str, index: str, query: dict[str, Any]) -> list[str]:
    async def run() -> list[str]:
        async with AsyncElasticsearch(url) as client:
            await client.indices.refresh(index=index)
            answer = await client.search(index=index, query=query, size=100)
            return sorted(hit["_source"]["instance"] for hit in answer["hits"]["hits"])

    return asyncio.run(run())


def _difference(url: str, index: str, archive: dict[str, dict[str, Any]]) -> Difference:
    async def run() -> Difference:
        async with AsyncElasticsearch(url) as client:
            if not await client.indices.exists(index=index):
                return Difference(missing=sorted(archive))
            return await compare_instances(client, index, DEFAULT_TENANT, archive)

    return asyncio.run(run())


def _until_equal(url: str, index: str, archive: dict[str, dict[str, Any]]) -> None:
    deadline = time.monotonic() + WAIT
    while difference := _difference(url, index, archive):
        assert time.monotonic() < deadline, f"the index did not catch up: {difference}"
        time.sleep(0.3)


def test_every_attribute_searchable_replace_delete_and_catch_up(
    elasticsearch: ElasticsearchNode, tmp_path: Path
) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    index = f"{prefix}-instances"
    env = {
        "PACS_SEARCH_URL": elasticsearch.url,
        "PACS_SEARCH_INDEX": prefix,
        "PACS_OUTBOX_POLL_MS": "100",
        "PACS_OUTBOX_RETRY_MAX": "1",
        "PACS_OVERWRITE": "true",
    }
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    with (
        running_server(tmp_path / "data", env=env) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as client,
    ):
        for sop in sops:
            _stow(client, _file(study, series, sop, "2.5"))
        _until_equal(elasticsearch.url, index, _archive(client, [study]))
        es = elasticsearch.url
        assert _search(es, index, {"range": {"00180050_DS": {"gte": 2.4, "lte": 2.6}}}) == sorted(
            sops
        )
        assert _search(es, index, {"term": {"00091001_LO": "VENDOR-X"}}) == sorted(sops)
        assert _search(es, index, {"term": {"00400275_SQ.00400009_SH": "SPS-42"}}) == sorted(sops)
        assert _search(es, index, {"term": {"00180050_DS": 7.5}}) == []

        # A replacement and a delete propagate.
        _stow(client, _file(study, series, sops[0], "7.5"))
        deleted = client.delete(f"/studies/{study}/series/{series}/instances/{sops[1]}")
        assert deleted.status_code == 204, deleted.text
        _until_equal(es, index, _archive(client, [study]))
        assert _search(es, index, {"term": {"00180050_DS": 7.5}}) == [sops[0]]

        # Elasticsearch down: ingest goes on; back: the index catches up exactly.
        elasticsearch.stop()
        try:
            other = generate_uid()
            for _ in range(3):
                _stow(client, _file(other, generate_uid(), generate_uid(), "1.0"))
            _stow(client, _file(study, series, sops[2], "3.0"))
            gone = client.delete(f"/studies/{study}/series/{series}/instances/{sops[0]}")
            assert gone.status_code == 204, gone.text
        finally:
            elasticsearch.start()
        archive = _archive(client, [study, other])
        assert len(archive) == 4
        _until_equal(es, index, archive)
    # Regression: the client retried each request 3 times itself and logged every failure
    # with its traceback (hundreds of lines a minute while Elasticsearch was down); the
    # outbox logs each failed delivery once.
    log = (tmp_path / "data" / "server.log").read_text()
    assert "delivery to search failed" in log
    assert "Traceback" not in log and "elastic_transport" not in log
