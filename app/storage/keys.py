"""Where a blob key (`app.services.ports.blob_key`) lives in a store.

Keys written before tenants existed are a bare id; they stay valid and keep their place
(they are recorded in the index). The tenant segment keeps two tenants' objects apart
even if an id were ever repeated, and lets an operator see whose data a blob is.
"""

from __future__ import annotations

from app.auth.principal import TENANT_NAME


def key_path(key: str) -> tuple[str, ...]:
    """Where a key lives, as path segments: its tenant (if any), two levels of fan-out by
    the id's first characters (which keeps folders small and spreads S3 prefixes), and
    the id. ValueError for anything else: keys never become paths of their own."""
    tenant, slash, name = key.rpartition("/")
    if not name or name.startswith(".") or (slash and not TENANT_NAME.fullmatch(tenant)):
        raise ValueError(f"invalid blob key {key!r}")
    return (*((tenant,) if slash else ()), name[:2], name[2:4], name)
