"""Search use case: run a Query on the index and shape each hit as DICOM JSON.

Shared by QIDO-RS and (later) C-FIND. Which attributes come back follows PS3.18 10.6.3:
the level's defaults, those of higher levels the request URL did not already fix, the
matching keys and includefield (or everything stored with includefield=all).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.auth.principal import Access, Permission
from app.dicom.levels import (
    DEFAULT_RETURN,
    INSTANCE_AVAILABILITY,
    LEVELS,
    MODALITIES_IN_STUDY,
    Level,
)
from app.query.model import Query
from app.services.ports import Index, Json, SearchHit

_COMPUTED_VR = {MODALITIES_IN_STUDY: "CS"}


def return_tags(query: Query, fixed: Iterable[Level] = ()) -> frozenset[int]:
    """Tags to return for `query`; `fixed` are the levels whose UID the URL names."""
    fixed = set(fixed)
    tags = set(DEFAULT_RETURN[query.level]) | query.include
    if query.level is not Level.PATIENT:
        upto = LEVELS.index(query.level)
        for level in LEVELS[1:upto]:
            if level not in fixed:
                tags |= DEFAULT_RETURN[level]
    return frozenset(tags)


def _computed_json(tag: int, value: Any) -> Json:
    if isinstance(value, list):
        return {"vr": _COMPUTED_VR.get(tag, "CS"), "Value": value} if value else {"vr": "CS"}
    return {"vr": "IS", "Value": [value]}


def shape(hit: SearchHit, query: Query, keys: frozenset[str]) -> Json:
    """Merge a hit's levels into one DICOM JSON object holding only the wanted keys (tags
    as 8 hex digits). Keys come in no particular order: protocols order them as needed."""
    merged: Json = {}
    for part in (hit.patient, hit.study, hit.series, hit.instance):
        if part:
            merged.update(part)
    for tag, value in hit.computed.items():
        merged[f"{tag:08X}"] = _computed_json(tag, value)
    merged[f"{INSTANCE_AVAILABILITY:08X}"] = {"vr": "CS", "Value": ["ONLINE"]}
    if query.include_all:
        # Bulk data is served by WADO-RS, never in search results.
        return {k: v for k, v in merged.items() if "BulkDataURI" not in v}
    return {k: v for k, v in merged.items() if k in keys}


class SearchService:
    def __init__(self, index: Index) -> None:
        self.index = index

    async def search(self, access: Access, query: Query, fixed: Iterable[Level] = ()) -> list[Json]:
        access.require(Permission.READ)
        keys = frozenset(f"{tag:08X}" for tag in return_tags(query, fixed))
        hits = await self.index.search(access.tenant, query)
        return [shape(hit, query, keys) for hit in hits]
