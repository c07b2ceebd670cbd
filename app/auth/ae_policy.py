"""What each calling AE title may do over DIMSE, and which tenant it belongs to.

Written `AE=services[@tenant][ from NETWORK ...]`, entries separated by `;`, services by `,`:

    MODALITY1=echo,store@clinic-a from 10.1.2.0/24; WS1=echo,find,move,get@clinic-b; ROUTER=all

Services are `echo`, `store`, `find`, `move`, `get`, or `all`; without `@tenant` the AE
belongs to the default tenant. An AE title is only what the caller says it is: `from`
binds it to addresses (IPs or networks, space-separated), so that the same title from
elsewhere may use no service at all. An AE title not listed may use every service on the
default tenant (whether it may associate at all is the allow-list's business).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from app.auth.principal import (
    DEFAULT_TENANT,
    Access,
    Permission,
    Principal,
    UnknownTenant,
    check_tenant,
)


class DimseService(StrEnum):
    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"


# What each service needs of the archive (C-ECHO touches no data).
PERMISSION_OF: Mapping[DimseService, Permission] = {
    DimseService.STORE: Permission.WRITE,
    DimseService.FIND: Permission.READ,
    DimseService.MOVE: Permission.READ,
    DimseService.GET: Permission.READ,
}
ALL_SERVICES = frozenset(DimseService)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A policy text that cannot be read; the message names the entry."""


@dataclass(frozen=True)
class AePolicy:
    services: frozenset[DimseService] = ALL_SERVICES
    tenant: str = DEFAULT_TENANT
    # Where the AE may call from; empty: anywhere.
    networks: tuple[IPNetwork, ...] = ()

    def admits(self, address: str | None) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        # A dual-stack listener reports IPv4 callers as ::ffff:a.b.c.d.
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def allows(self, service: DimseService) -> bool:
        return service in self.services

    def principal(self, ae_title: str, address: str | None) -> Principal:
        permissions = frozenset(PERMISSION_OF[s] for s in self.services if s in PERMISSION_OF)
        return Principal(ae_title, permissions, frozenset({self.tenant}), address=address)

    def access(self, ae_title: str, address: str | None) -> Access:
        return Access(self.principal(ae_title, address), self.tenant)


@dataclass(frozen=True)
class AePolicies:
    by_ae: Mapping[str, AePolicy] = field(default_factory=dict)

    def of(self, ae_title: str, address: str | None = None) -> AePolicy:
        """The policy of a calling AE at `address`: none of the services when its entry
        binds it to other addresses."""
        policy = self.by_ae.get(ae_title.strip(), AePolicy())
        # Refused on the entry's own tenant, so that its trail shows the attempt.
        return policy if policy.admits(address) else replace(policy, services=frozenset())


def parse_ae_policy(text: str) -> AePolicies:
    by_ae: dict[str, AePolicy] = {}
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        ae, equals, rest = entry.partition("=")
        ae = ae.strip()
        if not equals or not ae_title_ok(ae):
            raise PolicyError(
                f"expected AE=services[@tenant] with an AE title of 1 to 16 printable "
                f"characters, got {entry!r}"
            )
        if ae in by_ae:
            raise PolicyError(f"AE title {ae!r} is listed twice")
        rest, _, addresses = rest.partition(" from ")
        names, at, tenant = rest.partition("@")
        by_ae[ae] = AePolicy(
            _services(names, entry),
            _tenant(tenant, entry) if at else DEFAULT_TENANT,
            _networks(addresses, entry),
        )
    return AePolicies(by_ae)


def ae_title_ok(text: str) -> bool:
    """An AE title: 1 to 16 characters of the default repertoire, no backslash (PS3.5 6.2)."""
    return 0 < len(text) <= 16 and "\\" not in text and all(" " <= c <= "~" for c in text)


def _services(text: str, entry: str) -> frozenset[DimseService]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return ALL_SERVICES
    known = {s.value: s for s in DimseService}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise PolicyError(
            f"{entry!r}: services are a comma-separated list of "
            f"{', '.join(known)} (or all); {'got ' + repr(unknown[0]) if unknown else 'none given'}"
        )
    return frozenset(known[n] for n in names)


def _networks(text: str, entry: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in text.split())
    except ValueError as exc:
        raise PolicyError(f"{entry!r}: after 'from', IP addresses or networks: {exc}") from None


def _tenant(text: str, entry: str) -> str:
    try:
        return check_tenant(text.strip())
    except UnknownTenant as exc:
        raise PolicyError(f"{entry!r}: {exc}") from None
