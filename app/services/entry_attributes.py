"""What a change-log entry's attribute filter (app/dicom/attribute_filter.py) is matched
on, for webhooks and forwarding alike.

- An instance entry (stored, replaced): its own metadata, as the outbox read it with the
  entry; none when that version was replaced or deleted before delivery.
- A series or study entry (`series.stable`, `study.stable`): the stored metadata of the
  instances now in it, so study and series attributes (and each series' Modality) are
  there to match; a filter matches when one instance has every value.
- A deleted instance, series or study: nothing is left, so a non-empty filter cannot match
  it; only a subscription or rule without a filter gets it.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.services.ports import Change, ChangeAction, Index

# Entries whose scope is a series or a study, matched on the instances stored in it.
_SCOPE_ACTIONS = frozenset({ChangeAction.SERIES_STABLE, ChangeAction.STUDY_STABLE})


async def entry_datasets(index: Index, tenant: str, change: Change) -> list[dict[str, Any]]:
    """The DICOM JSON datasets `change` is matched on (see the module's docstring)."""
    if change.metadata is not None:
        return [orjson.loads(change.metadata)]
    if change.action not in _SCOPE_ACTIONS:
        return []
    stored = await index.metadata(
        tenant, change.study_instance_uid, change.series_instance_uid, change.sop_instance_uid
    )
    return [orjson.loads(m.json) for m in stored]
