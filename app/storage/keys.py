"""Where a blob key (`app.services.ports.blob_key`) lives in a store.

Keys written before tenants existed are a bare id; they stay valid and keep their place
(they are recorded in the index). The tenant segment keeps two tenants' objects apart
even if an id were ever repeated, and lets an operator see whose data a blob is.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.auth.principal import TENANT_NAME


def key_path(key: str) -> tuple[str, ...]:
    """Where a key lives, as path segments: its tenant (if any), two levels of fan-out by
    the id's first characters (which keeps folders small and spreads S3 prefixes), and
    the id. ValueError for anything else: keys never become paths of their own."""
    tenant, slash, name = key.rpartition("/")
    if not name or name.startswith(".") or (slash and not TENANT_NAME.fullmatch(tenant)):
        raise ValueError(f"invalid blob key {key!r}")
    return (*((tenant,) if slash else ()), name[:2], name[2:4], name)


# Where quarantined blobs go, beside the tenants' segments: a leading dot, which no tenant
# name and no blob id has, so it can never be taken for either.
QUARANTINE = ".quarantine"


def key_of(parts: Sequence[str]) -> str | None:
    """The key stored at the path segments `parts` (the inverse of `key_path`), or None
    when they are not a blob's place (a temporary file, the quarantine, anything else)."""
    *tenant, first, second, name = ("",) * (4 - len(parts)) + tuple(parts)
    if len(parts) not in (3, 4) or "." in name or (first, second) != (name[:2], name[2:4]):
        return None
    key = "/".join((*(t for t in tenant if t), name))
    try:
        key_path(key)
    except ValueError:
        return None
    return key
