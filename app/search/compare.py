"""Whether the search index holds exactly the archive's instances: each instance document
equal to the one the archive's current metadata makes, none missing, none extra. The check
of the catch-up tests, and of `pacs reindex` (later) before it swaps the alias."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_scan

from app.dicom.levels import Level
from app.search.documents import SEQUENCE, TENANT, document_id, documents


@dataclass
class Difference:
    """Document ids the index lacks, holds beyond the archive, or holds otherwise."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.differing)


async def compare_instances(
    client: AsyncElasticsearch,
    index: str,
    tenant: str,
    archive: Mapping[str, Mapping[str, Any]],
) -> Difference:
    """`archive`: SOP Instance UID -> the instance's DICOM JSON, for every instance of
    `tenant`. The change sequence a document was written for is not compared (the archive
    does not say which entry made its current version)."""
    await client.indices.refresh(index=index)
    expected = {
        document_id(tenant, sop): _comparable(documents(tenant, dataset, 0)[Level.INSTANCE])
        for sop, dataset in archive.items()
    }
    indexed: dict[str, dict[str, Any]] = {}
    query = {"query": {"term": {TENANT: tenant}}}
    async for hit in async_scan(client, index=index, query=query):
        indexed[hit["_id"]] = _comparable(hit["_source"])
    return Difference(
        missing=sorted(expected.keys() - indexed.keys()),
        extra=sorted(indexed.keys() - expected.keys()),
        differing=sorted(i for i in expected.keys() & indexed.keys() if expected[i] != indexed[i]),
    )


def _comparable(document: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != SEQUENCE}
