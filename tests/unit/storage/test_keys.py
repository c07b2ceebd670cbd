"""Blob keys: an id under its tenant's segment, or a bare id from before tenants."""

from __future__ import annotations

import pytest

from app.auth.principal import UnknownTenant
from app.services.ports import blob_key
from app.storage.keys import key_path


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
