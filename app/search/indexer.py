"""The search indexer: change-log entries into Elasticsearch, a consumer of the outbox
(app/services/outbox.py), so ingest never waits on Elasticsearch and no change is lost
while it is down (the cursor stays where it was and the batch comes again).

Three indices, `<prefix>-studies`, `<prefix>-series` and `<prefix>-instances`, shaped by one
index template (app/search/mapping.py), created on the first delivery. Per batch one bulk
request: for each instance.stored or instance.replaced entry the instance, series and study
documents (app/search/documents.py) from the instance's metadata, and for each
instance.deleted, series.deleted and study.deleted entry the deletion of its document.

Idempotent and convergent, whatever is replayed: every write carries the entry's sequence
as an external version, so Elasticsearch keeps a document only from a newer entry than the
one that wrote it (an older one answers 409, which counts as done); and an entry whose
instance was since replaced or deleted comes without metadata (its state is not current)
and is skipped, so a replay never brings back what a later entry removed. A series or study
document is rewritten by each instance stored in it (the latest wins); it is deleted with
the series or study.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch

from app.dicom.levels import Level
from app.search.documents import document_id, documents
from app.search.mapping import index_template
from app.services.ports import Change, ChangeAction

log = logging.getLogger(__name__)

_UID_FIELD = {Level.STUDY: "study", Level.SERIES: "series", Level.INSTANCE: "instance"}
_SUFFIX = {Level.STUDY: "studies", Level.SERIES: "series", Level.INSTANCE: "instances"}


class SearchIndexer:
    name = "search"
    metadata = True

    def __init__(self, url: str, prefix: str = "pacs", *, timeout: float = 30.0) -> None:
        self.prefix = prefix
        # No retries of the client's own: the outbox retries the batch with its backoff and
        # logs each failure once.
        self.client = AsyncElasticsearch(url, request_timeout=timeout, max_retries=0)
        self._ready = False

    def index(self, level: Level) -> str:
        """The name of the index of `level`'s documents."""
        return f"{self.prefix}-{_SUFFIX[level]}"

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        await self._prepare()
        # The last write of each document only: a batch of a series' instances rewrites its
        # series and study documents with each one, and the last of them wins anyway (the
        # highest version; the changes come in sequence order).
        latest: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for change in changes:
            for operation in self._operations(tenant, change):
                meta = next(iter(operation[0].values()))
                key = (meta["_index"], meta["_id"])
                latest.pop(key, None)  # re-inserted: the bulk request keeps log order
                latest[key] = operation
        operations = [part for operation in latest.values() for part in operation]
        if not operations:
            return
        answer = await self.client.bulk(operations=operations, refresh=False)
        if answer.get("errors"):
            self._check(answer["items"])

    @staticmethod
    def _check(items: list[dict[str, Any]]) -> None:
        """Raise when an operation may succeed later (429, 5xx: the batch comes again);
        skip, with a warning, a document Elasticsearch refuses for good (a 400: a value
        that fits no mapping), which would otherwise hold back every later change. 404 (a
        delete of what is not there) and 409 (a newer version is indexed) are done."""
        results = [result for item in items for result in item.values()]
        retry = [r for r in results if r.get("status", 200) == 429 or r.get("status", 200) >= 500]
        refused = [r for r in results if 400 <= r.get("status", 200) < 500]
        refused = [r for r in refused if r.get("status") not in (404, 409, 429)]
        # The errors' types only: their reasons quote the fields' values (patient data).
        if retry:
            error = retry[0].get("error") or {}
            raise RuntimeError(
                f"search: {len(retry)} of {len(results)} bulk operations failed, the first "
                f"with {error.get('type', 'an error')} (status {retry[0].get('status')})"
            )
        for result in refused:
            error = result.get("error") or {}
            log.warning(
                "search: %s refused document %s (%s); it is left out of the index",
                result.get("_index"),
                result.get("_id"),
                error.get("type", "an error"),
            )

    def _operations(self, tenant: str, change: Change) -> list[list[dict[str, Any]]]:
        """The bulk operations of `change`, each its action line (and its document)."""
        action = change.action
        if action in (ChangeAction.INSTANCE_STORED, ChangeAction.INSTANCE_REPLACED):
            if change.metadata is None:
                return []  # replaced or deleted since: a later entry says what is current
            dataset = orjson.loads(change.metadata)
            return [
                [
                    {"index": self._meta(tenant, level, document[_UID_FIELD[level]], change)},
                    document,
                ]
                for level, document in documents(tenant, dataset, change.sequence).items()
            ]
        if action == ChangeAction.INSTANCE_DELETED:
            uid, level = change.sop_instance_uid, Level.INSTANCE
        elif action == ChangeAction.SERIES_DELETED:
            uid, level = change.series_instance_uid, Level.SERIES
        elif action == ChangeAction.STUDY_DELETED:
            uid, level = change.study_instance_uid, Level.STUDY
        else:
            return []  # stable announcements, and actions of a newer version
        if uid is None:
            return []
        return [[{"delete": self._meta(tenant, level, uid, change)}]]

    def _meta(self, tenant: str, level: Level, uid: str, change: Change) -> dict[str, Any]:
        return {
            "_index": self.index(level),
            "_id": document_id(tenant, uid),
            "version": change.sequence,
            "version_type": "external",
        }

    async def _prepare(self) -> None:
        """The index template and the indices, once per process (both calls are idempotent:
        another node may have made them)."""
        if self._ready:
            return
        template = index_template([f"{self.prefix}-*"])
        await self.client.indices.put_index_template(name=self.prefix, **template)
        for level in _SUFFIX:
            if not await self.client.indices.exists(index=self.index(level)):
                await self.client.options(ignore_status=400).indices.create(index=self.index(level))
        self._ready = True

    async def close(self) -> None:
        await self.client.close()
