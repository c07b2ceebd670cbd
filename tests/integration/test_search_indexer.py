"""The search indexer (app/search/indexer.py) against a real Elasticsearch node: change-log
entries delivered as the outbox would, then searched for directly, attribute by attribute,
VR by VR; replays and deletes converge."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.dicom.levels import Level
from app.search.indexer import SearchIndexer
from app.services.ports import Change, ChangeAction, ChangeState
from tests.support.elasticsearch import ElasticsearchNode

STUDY, SERIES = "1.2.826.0.1.1", "1.2.826.0.1.1.1"


def _dataset(sop: str, **extra: Any) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [SERIES]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane^Q"}]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00080030": {"vr": "TM", "Value": ["1530"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00180050": {"vr": "DS", "Value": [2.5]},
        "00091001": {"vr": "LO", "Value": ["VENDOR-X"]},
        "00400275": {"vr": "SQ", "Value": [{"00401001": {"vr": "SH", "Value": ["RP-77"]}}]},
    }
    dataset.update(extra)
    return dataset


def _stored(sequence: int, dataset: dict[str, Any] | None, sop: str) -> Change:
    return Change(
        sequence,
        ChangeAction.INSTANCE_STORED,
        datetime.now(UTC),
        STUDY,
        SERIES,
        sop,
        ChangeState.CURRENT if dataset else ChangeState.DELETED,
        orjson.dumps(dataset) if dataset else None,
    )


def _deleted(sequence: int, action: ChangeAction, sop: str | None) -> Change:
    series = None if action == ChangeAction.STUDY_DELETED else SERIES
    return Change(sequence, action, datetime.now(UTC), STUDY, series, sop, ChangeState.DELETED)


@pytest.fixture
async def indexer(elasticsearch: ElasticsearchNode) -> AsyncIterator[SearchIndexer]:
    indexer = SearchIndexer(elasticsearch.url, f"t-{uuid.uuid4().hex[:8]}")
    try:
        yield indexer
    finally:
        await indexer.client.indices.delete(index=f"{indexer.prefix}-*")
        await indexer.client.indices.delete_index_template(name=indexer.prefix)
        await indexer.close()


async def _hits(indexer: SearchIndexer, level: Level, query: dict[str, Any]) -> list[str]:
    await indexer.client.indices.refresh(index=indexer.index(level))
    answer = await indexer.client.search(index=indexer.index(level), query=query, size=100)
    return sorted(hit["_id"] for hit in answer["hits"]["hits"])


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("DS as a number range", {"range": {"00180050_DS": {"gte": 2, "lte": 3}}}),
    ("private tag", {"term": {"00091001_LO": "VENDOR-X"}}),
    ("key in a sequence", {"term": {"00400275_SQ.00401001_SH": "RP-77"}}),
    ("PN case-insensitive", {"wildcard": {"00100010_PN.Alphabetic": {
        "value": "doe^*", "case_insensitive": True}}}),
    ("PN component word", {"match": {"00100010_PN.Alphabetic.text": "JANE"}}),
    ("DA as a date range", {"range": {"00080020_DA": {"gte": "20240101", "lte": "20240201"}}}),
    ("TM as a lexical range", {"range": {"00080030_TM": {"gte": "150000", "lte": "160000"}}}),
    ("CS", {"term": {"00080060_CS": "CT"}}),
]  # fmt: skip


@pytest.mark.parametrize("query", [q[1] for q in QUERIES], ids=[q[0] for q in QUERIES])
async def test_every_attribute_is_searchable_by_its_vr(
    indexer: SearchIndexer, query: dict[str, Any]
) -> None:
    await indexer.deliver("t1", [_stored(1, _dataset("1.2.3.1"), "1.2.3.1")])
    assert await _hits(indexer, Level.INSTANCE, query) == ["t1/1.2.3.1"]


async def test_a_malformed_value_does_not_keep_an_instance_out(indexer: SearchIndexer) -> None:
    bad = _dataset(
        "1.2.3.9",
        **{
            "00080020": {"vr": "DA", "Value": ["20230230"]},
            "00180050": {"vr": "DS", "Value": ["abc"]},
        },
    )
    await indexer.deliver("t1", [_stored(1, bad, "1.2.3.9")])
    assert await _hits(indexer, Level.INSTANCE, {"term": {"00091001_LO": "VENDOR-X"}}) == [
        "t1/1.2.3.9"
    ]


async def test_study_and_series_documents_per_tenant(indexer: SearchIndexer) -> None:
    await indexer.deliver("t1", [_stored(1, _dataset("1.2.3.1"), "1.2.3.1")])
    await indexer.deliver("t2", [_stored(1, _dataset("1.2.3.1"), "1.2.3.1")])
    assert await _hits(indexer, Level.STUDY, {"term": {"00080020_DA": "20240131"}}) == [
        f"t1/{STUDY}", f"t2/{STUDY}"
    ]  # fmt: skip
    assert await _hits(indexer, Level.SERIES, {"term": {"tenant": "t2"}}) == [f"t2/{SERIES}"]
    # Instance-level attributes stay out of the study and series documents.
    assert await _hits(indexer, Level.SERIES, {"exists": {"field": "00180050_DS"}}) == []


async def test_replays_and_reorders_converge(indexer: SearchIndexer) -> None:
    sop = "1.2.3.2"
    old = _stored(1, _dataset(sop), sop)
    new = _stored(2, _dataset(sop, **{"00180050": {"vr": "DS", "Value": [5.0]}}), sop)
    await indexer.deliver("t1", [old, new])
    await indexer.deliver("t1", [old])  # a replay of the older entry: 409, kept as is
    assert await _hits(indexer, Level.INSTANCE, {"term": {"00180050_DS": 5.0}}) == ["t1/1.2.3.2"]
    await indexer.deliver("t1", [_deleted(3, ChangeAction.INSTANCE_DELETED, sop)])
    # The store entry replayed after the delete comes without metadata (not current).
    await indexer.deliver(
        "t1", [_stored(1, None, sop), _deleted(3, ChangeAction.INSTANCE_DELETED, sop)]
    )
    assert await _hits(indexer, Level.INSTANCE, {"match_all": {}}) == []
    await indexer.deliver("t1", [_deleted(4, ChangeAction.SERIES_DELETED, None)])
    await indexer.deliver("t1", [_deleted(5, ChangeAction.STUDY_DELETED, None)])
    assert await _hits(indexer, Level.SERIES, {"match_all": {}}) == []
    assert await _hits(indexer, Level.STUDY, {"match_all": {}}) == []


async def test_fields_are_mapped_by_vr(indexer: SearchIndexer) -> None:
    await indexer.deliver("t1", [_stored(1, _dataset("1.2.3.1"), "1.2.3.1")])
    answer = await indexer.client.indices.get_mapping(index=indexer.index(Level.INSTANCE))
    fields = answer[indexer.index(Level.INSTANCE)]["mappings"]["properties"]
    types = {name: fields[name].get("type", "object") for name in fields}
    assert types["00180050_DS"] == "double"
    assert types["00080020_DA"] == "date"
    assert types["00080030_TM"] == "keyword"
    assert types["00091001_LO"] == "keyword"
    assert types["00400275_SQ"] == "object"
    assert fields["00400275_SQ"]["properties"]["00401001_SH"]["type"] == "keyword"
    group = fields["00100010_PN"]["properties"]["Alphabetic"]
    assert group["type"] == "keyword" and group["fields"]["text"]["type"] == "text"


async def test_a_refused_document_does_not_hold_back_the_batch(
    indexer: SearchIndexer, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a document Elasticsearch refuses (400) failed the whole batch, and its
    retries held back every later change of the tenant for good."""
    refused = _dataset("1.2.3.5", **{"00091001": {"vr": "LO", "Value": [{"not": "a string"}]}})
    await indexer.deliver(
        "t1", [_stored(1, refused, "1.2.3.5"), _stored(2, _dataset("1.2.3.6"), "1.2.3.6")]
    )
    assert await _hits(indexer, Level.INSTANCE, {"match_all": {}}) == ["t1/1.2.3.6"]
    assert "refused document t1/1.2.3.5 (document_parsing_exception)" in caplog.text
    assert "not a string" not in caplog.text


async def test_a_batch_writes_each_series_and_study_document_once(indexer: SearchIndexer) -> None:
    """A batch of a series' instances writes its series and study documents once, with the
    last instance's version, not once per instance."""
    sops = [f"1.2.3.{n}" for n in range(10, 15)]
    await indexer.deliver("t1", [_stored(n, _dataset(sop), sop) for n, sop in enumerate(sops, 1)])
    stats = await indexer.client.indices.stats(index=indexer.index(Level.SERIES), metric="indexing")
    assert stats["_all"]["primaries"]["indexing"]["index_total"] == 1
    series = await indexer.client.get(index=indexer.index(Level.SERIES), id=f"t1/{SERIES}")
    assert series["_version"] == len(sops)
    assert await _hits(indexer, Level.INSTANCE, {"match_all": {}}) == [f"t1/{s}" for s in sops]
