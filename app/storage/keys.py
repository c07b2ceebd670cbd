"""Blob keys: an internal id, under its tenant's segment (`<tenant>/<id>`).

Keys written before tenants existed are a bare id; they stay valid and keep their place
(they are recorded in the index). The tenant segment keeps two tenants' objects apart
even if an id were ever repeated, and lets an operator see whose data a blob is.
"""

from __future__ import annotations

import re

# The form of a tenant name (app/auth/principal.py checks requests against the same one).
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def blob_key(tenant: str, name: str) -> str:
    """The key of blob `name` (an internal id) of `tenant`."""
    key = f"{tenant}/{name}"
    key_path(key)  # refuse a malformed tenant or id here, before anything is written
    return key


def key_path(key: str) -> tuple[str, ...]:
    """Where a key lives, as path segments: its tenant (if any), two levels of fan-out by
    the id's first characters (which keeps folders small and spreads S3 prefixes), and
    the id. ValueError for anything else: keys never become paths of their own."""
    tenant, slash, name = key.rpartition("/")
    if not name or name.startswith(".") or (slash and not _TENANT.fullmatch(tenant)):
        raise ValueError(f"invalid blob key {key!r}")
    return (*((tenant,) if slash else ()), name[:2], name[2:4], name)
