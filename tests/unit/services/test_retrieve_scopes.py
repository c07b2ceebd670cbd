"""Which index reads a C-MOVE/C-GET identifier costs: instances named one by one are read
a series at a time (an IMAGE-level UID list of 60 instances took 60 index queries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from app.auth.principal import Access, Permission, Principal
from app.dicom.levels import Level
from app.query.model import Query
from app.services.ports import BlobStore, Index, SearchHit, StoredInstance
from app.services.retrieve import RetrieveService

READER = Access(Principal("r", frozenset({Permission.READ}), None))


def instance(study: str, series: str, sop: str) -> StoredInstance:
    return StoredInstance(study, series, sop, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
                          f"default/{sop}", 1, "", False, (), {})  # fmt: skip


def hit(study: str, series: str, sop: str) -> SearchHit:
    def uid(value: str) -> dict[str, Any]:
        return {"vr": "UI", "Value": [value]}

    return SearchHit(study={"0020000D": uid(study)}, series={"0020000E": uid(series)},
                     instance={"00080018": uid(sop)})  # fmt: skip


@dataclass
class FakeIndex:
    """Answers `search` with `hits` and `instances` from `stored`, counting the reads."""

    stored: list[StoredInstance]
    hits: list[SearchHit]
    reads: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    async def search(self, tenant: str, query: Query) -> list[SearchHit]:
        return self.hits[query.offset : query.offset + query.limit]

    async def instances(
        self, tenant: str, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredInstance]:
        self.reads.append((study, series, sop))
        return [
            i
            for i in self.stored
            if i.study_instance_uid == study
            and series in (None, i.series_instance_uid)
            and sop in (None, i.sop_instance_uid)
        ]


async def test_instances_named_one_by_one_are_read_a_series_at_a_time() -> None:
    stored = [instance("1", "1.1", f"1.1.{n}") for n in range(10)]
    stored += [instance("1", "1.2", "1.2.1")]
    wanted = ["1.1.7", "1.1.2", "1.1.5", "1.2.1"]
    index = FakeIndex(stored, [hit("1", sop.rsplit(".", 1)[0], sop) for sop in wanted])
    retrieve = RetrieveService(cast(Index, index), cast(BlobStore, None))
    found = await retrieve.instances_matching(READER, Query(Level.INSTANCE), page=3)
    assert [i.sop_instance_uid for i in found] == wanted  # the identifier's order
    # Series 1.1 once for its three instances; the lone instance of 1.2 by itself.
    assert index.reads == [("1", "1.1", None), ("1", "1.2", "1.2.1")]
