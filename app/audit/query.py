"""What a search of the audit trail asks for: built once by the admin API
(`app/web/audit.py`) and passed unchanged through the service to the index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AuditQuery:
    """Filters of an audit-trail search, each one given must match; newest first.
    `since` is inclusive, `until` exclusive (timezone-aware)."""

    patient_id: str | None = None
    subject: str | None = None
    study: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0
