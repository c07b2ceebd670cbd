"""The caller as services see it: a `Principal` acting on one tenant (`Access`).

Protocol layers build these (from a bearer token, a calling AE title, or the anonymous
caller of an archive run without sign-in); services check them before touching data, so a
caller without the permission learns nothing, not even whether an object exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from app.services.errors import ArchiveError

DEFAULT_TENANT = "default"
# Tenant names appear in URLs, blob keys and audit records: keep them plain.
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Permission(StrEnum):
    READ = "read"  # QIDO, WADO, WADO-URI, rendered, C-FIND, C-MOVE, C-GET
    WRITE = "write"  # STOW, C-STORE
    DELETE = "delete"
    ADMIN = "admin"  # audit trail, configuration


class Forbidden(ArchiveError):
    """A known caller without the permission or the tenant it needs (HTTP 403)."""


class UnknownTenant(ArchiveError):
    """A tenant name that is not well formed (HTTP 400)."""


def check_tenant(name: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise UnknownTenant(
            f"invalid tenant {name!r}: 1 to 63 lower-case letters, digits, '-' or '_'"
        )
    return name


@dataclass(frozen=True)
class Principal:
    # Token subject, calling AE title, or "anonymous".
    subject: str
    permissions: frozenset[Permission]
    # Tenants the caller may act on; None: every tenant.
    tenants: frozenset[str] | None
    # OAuth client (azp / client_id) of a token; None for AE titles and anonymous.
    client: str | None = None
    # Network address of the caller, for the audit trail.
    address: str | None = None

    def may(self, permission: Permission, tenant: str) -> bool:
        return permission in self.permissions and (self.tenants is None or tenant in self.tenants)


def anonymous(address: str | None = None) -> Principal:
    """The caller of an archive run without sign-in: may do everything."""
    return Principal("anonymous", frozenset(Permission), None, address=address)


@dataclass(frozen=True)
class Access:
    """One request: who asks, on which tenant. Services call `require` first."""

    principal: Principal
    tenant: str = DEFAULT_TENANT

    def require(self, permission: Permission) -> None:
        if permission not in self.principal.permissions:
            raise Forbidden(f"this request needs the {permission} permission")
        if not self.principal.may(permission, self.tenant):
            raise Forbidden(f"not allowed on tenant {self.tenant!r}")
