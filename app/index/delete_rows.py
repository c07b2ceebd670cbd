"""Deleting a study, series or instance, shared by the index backends (the dialect-free
part of `Index.delete`): what a delete reads of each instance, how many of the removed
instances each parent's stored count holds, and the change-log entries it makes.

Counts: a study's or series' `num_instances` counts its instances up to its `counted_pk`;
newer ones are counted by searches (app/index/rows.py, FOLD_AT). Removing an instance takes
one off the stored count only if the count held it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from app.index.change_rows import PendingChange
from app.index.rows import INSTANCE_COLUMNS
from app.services.ports import ChangeAction, StoredInstance

# What a delete reads of each instance in scope: a StoredInstance (rows.stored_instance)
# and its keys.
DELETE_COLUMNS = INSTANCE_COLUMNS + ", instance.pk AS instance_pk, instance.series_fk"


def counted(removed: Iterable[tuple[int, int]], counted_pk: Mapping[int, int]) -> dict[int, int]:
    """For each parent of `removed` ((parent pk, instance pk) pairs), how many of its
    removed instances its stored count holds (pk at or below its `counted_pk`)."""
    found: dict[int, int] = {}
    for parent, instance in removed:
        if instance <= counted_pk.get(parent, 0):
            found[parent] = found.get(parent, 0) + 1
    return found


def deleted_changes(
    tenant: str,
    removed: Sequence[StoredInstance],
    emptied_series: Collection[str],
    study_gone: bool,
) -> list[PendingChange]:
    """The entries of a delete, in this order: one `instance.deleted` per instance (with the
    version it removed, so the feed shows it deleted), one `series.deleted` per series left
    empty, and `study.deleted` when the study went."""
    changes = [
        PendingChange(
            tenant,
            ChangeAction.INSTANCE_DELETED,
            i.study_instance_uid,
            i.series_instance_uid,
            i.sop_instance_uid,
            i.blob_key,
        )
        for i in removed
    ]
    if not removed:
        return changes
    study = removed[0].study_instance_uid
    series = dict.fromkeys(i.series_instance_uid for i in removed)
    changes += [
        PendingChange(tenant, ChangeAction.SERIES_DELETED, study, uid, None, None)
        for uid in series
        if uid in emptied_series
    ]
    if study_gone:
        changes.append(PendingChange(tenant, ChangeAction.STUDY_DELETED, study, None, None, None))
    return changes
