"""Row shaping shared by the index backends: what goes into a row and what comes out.

Dialect-free on purpose: SQL stays in each backend. A row is whatever the driver returns
(`sqlite3.Row`, `asyncpg.Record`); both are read by column name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson

from app.dicom.instance import BulkRange, FrameRanges
from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SHARED_TAGS,
    Level,
)
from app.services.ports import InstanceRecord, Json, SearchHit, StoredInstance

# What instances() reads of each instance (turned into a StoredInstance by stored_instance).
INSTANCE_COLUMNS = """
    study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid,
    instance.sop_class_uid, instance.transfer_syntax_uid, instance.blob_key, instance.size,
    instance.sha256, instance.encapsulated, instance.frames, instance.bulk, study.patient_id
"""
# A writer folds a study's or series' instances above its counted_pk into its stored
# num_instances once there are this many (app/query/sql.py, compile_counted_search): the
# row is rewritten once per FOLD_AT instances, and a search counts fewer than FOLD_AT
# index entries of each parent on its page.
FOLD_AT = 32
# Retrieval order of instances(); metadata() uses the same.
ORDER_COLUMNS = ("series.series_number", "series.pk", "instance.instance_number", "instance.pk")


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


def subset(metadata: Json, tags: frozenset[int]) -> Json:
    """The attributes of `metadata` whose tag is in `tags` (plus the shared ones)."""
    wanted = tags | SHARED_TAGS
    return {k: v for k, v in metadata.items() if int(k, 16) in wanted}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def modalities_text(modalities: Sequence[str]) -> str:
    """The stored form of ModalitiesInStudy: "\\CT\\MR\\" (see query/columns.py, MULTI)."""
    return "\\" + "\\".join(sorted(set(modalities))) + "\\" if modalities else ""


def modalities_list(text: str | None) -> list[str]:
    return [m for m in (text or "").split("\\") if m]


def frames_text(record: InstanceRecord) -> str:
    return dumps(record.frames)


def bulk_text(record: InstanceRecord) -> str:
    return dumps({k: [b.offset, b.length, b.vr] for k, b in record.bulk.items()})


def _frames(text: str) -> tuple[FrameRanges, ...]:
    return tuple(tuple((int(o), int(n)) for o, n in frame) for frame in orjson.loads(text))


def stored_instance(row: Row) -> StoredInstance:
    return StoredInstance(
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        blob_key=row["blob_key"],
        size=row["size"],
        sha256=row["sha256"],
        encapsulated=bool(row["encapsulated"]),
        frames=_frames(row["frames"]),
        bulk={k: BulkRange(o, n, vr) for k, (o, n, vr) in orjson.loads(row["bulk"]).items()},
        patient_id=row["patient_id"],
    )


def search_hit(level: Level, row: Row) -> SearchHit:
    """A row of `app.query.sql.compile_counted_search` (read by its column aliases)."""
    keys = set(row.keys())
    if level is Level.PATIENT:
        return SearchHit(
            patient=orjson.loads(row["patient_attrs"]),
            computed={NUMBER_OF_PATIENT_RELATED_STUDIES: row["num_studies"]},
        )
    computed: dict[int, Any] = {
        MODALITIES_IN_STUDY: modalities_list(row["modalities_in_study"]),
        NUMBER_OF_STUDY_RELATED_SERIES: row["num_series"],
        NUMBER_OF_STUDY_RELATED_INSTANCES: row["num_instances"],
    }
    series = instance = None
    if "series_attrs" in keys:
        series = orjson.loads(row["series_attrs"])
        computed[NUMBER_OF_SERIES_RELATED_INSTANCES] = row["series_num_instances"]
    if "instance_attrs" in keys:
        instance = orjson.loads(row["instance_attrs"])
    return SearchHit(
        study=orjson.loads(row["study_attrs"]),
        series=series,
        instance=instance,
        computed=computed,
    )
