"""Change-log rows, shared by the index backends (tables change_log and change_sequence,
migrations/*/0006_change_log.sql): which results of a write make an entry, and the one
statement both backends read entries with.

A backend writes the entries of a transaction last, just before its commit
(app/index/postgres_changes.py, app/index/sqlite_changes.py), numbering them in the order
the writes were applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from app.index.rows import Row
from app.services.ports import Adding, AddResult, Change, ChangeAction, ChangeState, Outcome

_ACTIONS = {
    Outcome.STORED: ChangeAction.INSTANCE_STORED,
    Outcome.REPLACED: ChangeAction.INSTANCE_REPLACED,
}


@dataclass(frozen=True)
class PendingChange:
    """An entry of the transaction being written, before it has its sequence."""

    tenant: str
    action: ChangeAction
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    blob_key: str | None


def change_of(item: Adding, added: AddResult | Exception) -> PendingChange | None:
    """The entry an add makes: one for an instance stored or replaced, none for a duplicate,
    a refusal or a failure (nothing changed)."""
    if isinstance(added, Exception):
        return None
    action = _ACTIONS.get(added.outcome)
    if action is None:
        return None
    record = item.record
    return PendingChange(
        item.tenant,
        action,
        record.study_instance_uid,
        record.series_instance_uid,
        record.sop_instance_uid,
        record.blob_key,
    )


def by_tenant(changes: Iterable[PendingChange]) -> list[tuple[str, list[PendingChange]]]:
    """The entries of each tenant in the order given, tenants sorted: the order in which a
    transaction locks their counters, the same in every transaction (no deadlock)."""
    grouped: dict[str, list[PendingChange]] = {}
    for change in changes:
        grouped.setdefault(change.tenant, []).append(change)
    return sorted(grouped.items())


# The state of the version an entry made, from the instance stored now under its SOP
# Instance UID (found by the unique (tenant, sop_instance_uid) key): the blob key names a
# version, never reused. Entries about no instance are current, but for a whole series or
# study deleted (series.deleted, study.deleted).
_STATE = """CASE WHEN c.sop_instance_uid IS NULL
                  THEN CASE WHEN c.action LIKE '%.deleted' THEN 'deleted' ELSE 'current' END
                 WHEN i.blob_key IS NULL THEN 'deleted'
                 WHEN i.blob_key = c.blob_key THEN 'current'
                 ELSE 'replaced' END"""


def select_changes(
    mark: Callable[[int], str], *, metadata: bool, metadata_text: str, latest: bool
) -> str:
    """The entries of tenant `mark(1)`: above sequence `mark(2)`, ascending, at most
    `mark(3)`, or (`latest`) the last one. `metadata_text` reads instance.metadata as text."""
    columns = (
        "c.seq, c.action, c.changed_at, c.study_instance_uid, c.series_instance_uid,"
        f" c.sop_instance_uid, {_STATE} AS state"
    )
    if metadata:
        columns += f", CASE WHEN i.blob_key = c.blob_key THEN {metadata_text} END AS metadata"
    where = f"c.tenant = {mark(1)}"
    order = "c.seq DESC LIMIT 1" if latest else f"c.seq LIMIT {mark(3)}"
    if not latest:
        where += f" AND c.seq > {mark(2)}"
    return f"""SELECT {columns} FROM change_log c
               LEFT JOIN instance i
                 ON i.tenant = c.tenant AND i.sop_instance_uid = c.sop_instance_uid
               WHERE {where} ORDER BY {order}"""


def _action(name: str) -> ChangeAction | str:
    try:
        return ChangeAction(name)
    except ValueError:  # written by a newer version sharing the index
        return name


def change(row: Row, timestamp: datetime) -> Change:
    text = row["metadata"] if "metadata" in row.keys() else None  # noqa: SIM118 (sqlite3.Row)
    return Change(
        sequence=int(row["seq"]),
        action=_action(row["action"]),
        timestamp=timestamp,
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        state=ChangeState(row["state"]),
        metadata=text.encode() if text is not None else None,
    )
