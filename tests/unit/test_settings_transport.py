"""Transport settings: C-MOVE destinations with :tls, trusted proxies, the public URL and the
TLS settings that only make sense together; variables and flags are checked together."""

from __future__ import annotations

import ipaddress

import pytest

from app.settings import PROXY_HEADER_FAMILIES, MoveDestination, Settings
from app.web.proxies import ProxyHeaders


def test_move_destinations_with_tls() -> None:
    settings = Settings(move_destinations="A=host:104, B=10.0.0.9:2762:tls,C=[::1]:11113:TLS")
    assert settings.move_destination_map == {
        "A": MoveDestination("host", 104, False),
        "B": MoveDestination("10.0.0.9", 2762, True),
        "C": MoveDestination("::1", 11113, True),
    }


@pytest.mark.parametrize("value", ["A=host:tls", "A=host:104:ssl", "A=host:104:tls:tls"])
def test_bad_move_destinations(value: str) -> None:
    with pytest.raises(ValueError, match=r"expected NAME=host:port\[:tls\]"):
        Settings(move_destinations=value)


def test_trusted_proxies() -> None:
    settings = Settings(trusted_proxies=" 10.0.0.5, 192.168.0.0/16 ,2001:db8::/32,")
    assert settings.trusted_proxy_networks == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert Settings().trusted_proxy_networks == ()
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an IP address or network"):
        Settings(trusted_proxies="10.0.0.1,proxy.local")


def test_trusted_x_forwarded_headers_default_to_for_and_proto() -> None:
    assert Settings().trusted_x_forwarded_fields == {"for", "proto"}
    every = Settings.from_env({"PACS_TRUSTED_PROXY_HEADERS": "x-forwarded"})
    assert every.trusted_x_forwarded_fields == {"for", "proto", "host", "prefix"}
    some = Settings.from_env({"PACS_TRUSTED_PROXY_HEADERS": "X-Forwarded-For, x-forwarded-host"})
    assert some.trusted_x_forwarded_fields == {"for", "host"}
    for bad in ("forwarded,x-forwarded-for", "x-forwarded-port", ""):
        with pytest.raises(ValueError, match="PACS_TRUSTED_PROXY_HEADERS"):
            Settings(trusted_proxy_headers=bad)


def test_trusted_proxy_headers() -> None:
    """One family only, X-Forwarded-* unless said otherwise; a boolean (uvicorn's
    --proxy-headers) or both families are refused at start."""
    assert Settings().trusted_proxy_header_family == ProxyHeaders.X_FORWARDED
    forwarded = Settings.from_env({"PACS_TRUSTED_PROXY_HEADERS": " Forwarded "})
    assert forwarded.trusted_proxy_header_family == ProxyHeaders.FORWARDED
    assert {ProxyHeaders(f) for f in PROXY_HEADER_FAMILIES} == set(ProxyHeaders)
    for value in ("true", "x-forwarded,forwarded", ""):
        with pytest.raises(ValueError, match="PACS_TRUSTED_PROXY_HEADERS / --trusted-proxy-head"):
            Settings(trusted_proxy_headers=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("https://pacs.example.org", "https://pacs.example.org"),
        ("https://example.org:8443/imaging/", "https://example.org:8443/imaging"),
    ],
)
def test_public_url(value: str, expected: str) -> None:
    assert Settings(public_url=value).public_base_url == expected


@pytest.mark.parametrize(
    "value",
    ["pacs.example.org", "ftp://x.org", "https://", "https://x.org/?a=1", "https://u:p@x.org"],
)
def test_bad_public_url(value: str) -> None:
    with pytest.raises(ValueError, match="PACS_PUBLIC_URL"):
        Settings(public_url=value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_key": "k"}, "PACS_TLS_CERT and PACS_TLS_KEY"),
        ({"tls_ca": "ca"}, "PACS_TLS_CA / --tls-ca needs"),
        ({"dimse_tls_cert": "c"}, "PACS_DIMSE_TLS_CERT and PACS_DIMSE_TLS_KEY"),
        ({"dimse_tls_port": 2762}, "needs a certificate and key"),
        ({"dimse_tls_port": 70000, "tls_cert": "c", "tls_key": "k"}, "70000 is not a port"),
        ({"dimse_tls_port": 11112, "tls_cert": "c", "tls_key": "k"}, "must differ"),
    ],
)
def test_tls_settings_that_go_together(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_dimse_tls_identity_defaults_to_the_https_one() -> None:
    https = Settings(tls_cert="c", tls_key="k", dimse_tls_port=2762)
    assert https.dimse_tls_identity == ("c", "k")
    own = Settings(tls_cert="c", tls_key="k", dimse_tls_cert="dc", dimse_tls_key="dk")
    assert own.dimse_tls_identity == ("dc", "dk")


def test_variables_and_flags_are_checked_together() -> None:
    """The CA from a variable and the certificate from flags make one valid setting."""
    env = {"PACS_TLS_CA": "ca.pem", "PACS_DIMSE_TLS_PORT": "2762"}
    settings = Settings.from_env(env, tls_cert="c.pem", tls_key="k.pem", dimse_tls_port=None)
    assert (settings.tls_ca, settings.tls_cert, settings.dimse_tls_port) == (
        "ca.pem",
        "c.pem",
        2762,
    )
