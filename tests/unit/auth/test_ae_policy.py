"""The per calling AE policy: its text form, and the Principal and Access it gives."""

from __future__ import annotations

import pytest

from app.auth.ae_policy import (
    ALL_SERVICES,
    AePolicy,
    DimseService,
    PolicyError,
    parse_ae_policy,
)
from app.auth.principal import DEFAULT_TENANT, Forbidden, Permission
from app.settings import Settings

S = DimseService


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        (" ; ;", {}),
        ("MODALITY1=store@clinic-a", {"MODALITY1": AePolicy(frozenset({S.STORE}), "clinic-a")}),
        (
            "MODALITY1=echo, store@clinic-a; WS1=find,move,get@clinic-b;",
            {
                "MODALITY1": AePolicy(frozenset({S.ECHO, S.STORE}), "clinic-a"),
                "WS1": AePolicy(frozenset({S.FIND, S.MOVE, S.GET}), "clinic-b"),
            },
        ),
        ("ROUTER=all", {"ROUTER": AePolicy(ALL_SERVICES, DEFAULT_TENANT)}),
        ("Ws 2 = FIND @ x_1", {"Ws 2": AePolicy(frozenset({S.FIND}), "x_1")}),
    ],
)
def test_parse(text: str, expected: dict[str, AePolicy]) -> None:
    assert dict(parse_ae_policy(text).by_ae) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("MODALITY1", "expected AE=services"),
        ("=store", "expected AE=services"),
        ("A_VERY_LONG_AE_TITLE=store", "AE title of 1 to 16"),
        ("BACK\\SLASH=store", "AE title"),
        ("M=", "none given"),
        ("M=@clinic-a", "none given"),
        ("M=store,delete", "got 'delete'"),
        ("M=store@", "invalid tenant ''"),
        ("M=store@Clinic A", "invalid tenant 'Clinic A'"),
        ("M=store;M=find", "listed twice"),
        ("M=store@a from 10.0.0.300", "IP addresses or networks"),
        ("M=store from host.example", "IP addresses or networks"),
    ],
)
def test_malformed_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_ae_policy(text)


def test_an_ae_bound_to_addresses_may_do_nothing_from_elsewhere() -> None:
    policies = parse_ae_policy("CT1=echo,store@clinic-a from 10.1.2.0/24 192.0.2.7 ::1")
    bound = policies.of("CT1", "10.1.2.99")
    assert bound.services == {S.ECHO, S.STORE} and bound.tenant == "clinic-a"
    assert policies.of("CT1", "192.0.2.7") == bound
    assert policies.of("CT1", "::1") == bound
    # A dual-stack listener reports IPv4 callers as IPv4-mapped IPv6 addresses.
    assert policies.of("CT1", "::ffff:10.1.2.3") == bound
    for elsewhere in ("10.1.3.1", "192.0.2.8", "127.0.0.1", None, "not an address"):
        refused = policies.of("CT1", elsewhere)
        assert not refused.services, elsewhere
        assert refused.tenant == "clinic-a"  # the attempt shows in its tenant's trail
        with pytest.raises(Forbidden):
            refused.access("CT1", elsewhere).require(Permission.WRITE)


def test_an_unlisted_ae_may_do_everything_on_the_default_tenant() -> None:
    policy = parse_ae_policy("M=store@clinic-a").of("OTHER")
    assert policy == AePolicy(ALL_SERVICES, DEFAULT_TENANT)
    access = policy.access("OTHER", "10.0.0.9")
    assert access.tenant == DEFAULT_TENANT
    access.require(Permission.READ)
    access.require(Permission.WRITE)


def test_the_principal_of_an_ae_has_its_services_permissions_on_its_tenant_only() -> None:
    policies = parse_ae_policy("MOD=echo,store@clinic-a;WS=find,get@clinic-b")
    assert policies.of(" MOD ").tenant == "clinic-a"  # AE titles come padded off the wire
    modality = policies.of("MOD").access("MOD", "192.0.2.1")
    assert modality.principal.subject == "MOD"
    assert modality.principal.address == "192.0.2.1"
    assert modality.principal.tenants == frozenset({"clinic-a"})
    assert modality.principal.permissions == frozenset({Permission.WRITE})
    modality.require(Permission.WRITE)
    with pytest.raises(Forbidden, match="read"):
        modality.require(Permission.READ)
    workstation = policies.of("WS").principal("WS", None)
    assert workstation.permissions == frozenset({Permission.READ})
    assert workstation.may(Permission.READ, "clinic-b")
    assert not workstation.may(Permission.READ, "clinic-a")
    assert not policies.of("WS").allows(S.ECHO)
    assert policies.of("WS").allows(S.GET) and not policies.of("WS").allows(S.MOVE)


def test_settings_refuse_a_bad_policy_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"^PACS_DIMSE_AE_POLICY / --dimse-ae-policy: .*got 'x'"):
        Settings.from_env({"PACS_DIMSE_AE_POLICY": "M=x"})
    settings = Settings.from_env({"PACS_DIMSE_AE_POLICY": "M=store@clinic-a"})
    assert settings.dimse_ae_policies.of("M").tenant == "clinic-a"
