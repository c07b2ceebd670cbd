"""Blob keys: an id under its tenant's segment, or a bare id from before tenants."""

from __future__ import annotations

import pytest

from app.auth.principal import UnknownTenant
from app.services.ports import blob_key
from app.storage.keys import key_of, key_path


def test_tenant_keys_live_under_the_tenant() -> None:
    blob = "abcdef12" * 4
    assert blob_key("clinic-a", blob) == f"clinic-a/{blob}"
    assert key_path(f"clinic-a/{blob}") == ("clinic-a", "ab", "cd", blob)


def test_keys_from_before_tenants_keep_their_place() -> None:
    assert key_path("abcdef12") == ("ab", "cd", "abcdef12")


@pytest.mark.parametrize(
    "key", ["", "/", "a/", "/abc", ".x", "t/.x", "a/b/c", "../abc", "T/abc", "t x/abc", "-t/abc"]
)
def test_anything_else_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        key_path(key)


def test_a_malformed_tenant_or_id_never_becomes_a_key() -> None:
    with pytest.raises(UnknownTenant):
        blob_key("../x", "abcdef12" * 4)
    with pytest.raises(ValueError, match="invalid blob id"):
        blob_key("clinic-a", "../abc")


@pytest.mark.parametrize(
    "key", ["clinic-a/" + "abcdef12" * 4, "abcdef12" * 4, "abcdef12", "t/abcd"]
)
def test_the_place_of_a_key_gives_the_key_back(key: str) -> None:
    assert key_of(key_path(key)) == key


@pytest.mark.parametrize(
    "parts",
    [
        ("ab", "cd", "abcdef12.part"),  # a copy's temporary file
        ("ab", "cd", "xxcdef12"),  # out of its fan-out folder
        ("ab", "xx", "abcdef12"),
        (".quarantine", "ab", "cd", "abcdef12"),  # the quarantine is no tenant
        ("Bad Tenant", "ab", "cd", "abcdef12"),
        ("t", "u", "ab", "cd", "abcdef12"),  # too deep
        ("cd", "abcdef12"),  # too shallow
        ("notes.txt",),
        (),
    ],
)
def test_what_is_not_a_blobs_place_has_no_key(parts: tuple[str, ...]) -> None:
    assert key_of(parts) is None
