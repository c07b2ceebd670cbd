"""What DIMSE handlers are given: the archive (its services, called directly: handlers are
coroutines on the archive's event loop) and the DIMSE settings; who the caller of an
association is, for the policies and the log lines."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from app.auth.ae_policy import AePolicies, AePolicy
from app.auth.principal import Access
from app.dimse.association import Association
from app.services.archive import Archive
from app.settings import MoveDestination


@dataclass(frozen=True)
class ConnectionLimits:
    # Seconds a new connection has to send its A-ASSOCIATE-RQ (ARTIM).
    request_timeout: float
    # Open connections (waiting or associated) from one address, and in all.
    per_address: int
    total: int
    backlog: int


@dataclass(frozen=True)
class DimseConfig:
    host: str
    port: int
    ae_title: str
    # C-MOVE destinations: AE title -> host, port and whether to use DICOM TLS.
    move_destinations: Mapping[str, MoveDestination] = field(default_factory=dict)
    # Calling AE titles allowed to associate; empty: any.
    allowed_aes: tuple[str, ...] = ()
    max_associations: int = 20
    # Budgets and ARTIM of the listening ports; seconds an established association may idle.
    limits: ConnectionLimits = field(
        default_factory=lambda: ConnectionLimits(
            request_timeout=10, per_address=10, total=500, backlog=2048
        )
    )
    idle_timeout: float = 60
    # DICOM TLS listener (0: none) and its context; whether that context requires client
    # certificates (for the log line).
    tls_port: int = 0
    tls_context: ssl.SSLContext | None = None
    tls_client_certificates: bool = False
    # Context of the associations opened to C-MOVE destinations marked tls.
    tls_move_context: ssl.SSLContext | None = None
    # What each calling AE may do, and its tenant.
    ae_policies: AePolicies = field(default_factory=AePolicies)

    # Only calling AE titles named by the allow-list or the policy may associate (the
    # archive requires sign-in over HTTP, so DIMSE callers must be known too).
    known_callers_only: bool = False

    @property
    def required_calling_aes(self) -> tuple[str, ...]:
        """Who may associate: without an allow-list anyone, unless only known callers may
        (then the policy's AEs); with one, the AEs named by the policy are allowed too."""
        if not (self.allowed_aes or self.known_callers_only):
            return ()
        return tuple(dict.fromkeys((*self.allowed_aes, *self.ae_policies.by_ae)))


@dataclass(frozen=True)
class Bridge:
    archive: Archive
    loop: asyncio.AbstractEventLoop
    config: DimseConfig


def policy_of(assoc: Association, bridge: Bridge) -> AePolicy:
    """The policy of the calling AE of an association we accepted, from where it calls."""
    return bridge.config.ae_policies.of(assoc.peer_ae, assoc.address)


def access_for(assoc: Association, policy: AePolicy) -> Access:
    """What the services see of a request on `assoc`: the calling AE title and its address,
    with the permissions and the tenant of its policy."""
    return policy.access(assoc.peer_ae.strip(), assoc.address)
