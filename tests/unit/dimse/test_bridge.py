"""Who may associate: the allow-list, and the AEs the policy names."""

from __future__ import annotations

from app.auth.ae_policy import parse_ae_policy
from app.dimse.bridge import DimseConfig

POLICY = parse_ae_policy("MOD=store@clinic-a;WS=find@clinic-b")


def test_without_an_allow_list_anyone_may_associate() -> None:
    config = DimseConfig("127.0.0.1", 11112, "PACS", ae_policies=POLICY)
    assert config.required_calling_aes == ()


def test_with_an_allow_list_the_policy_aes_may_associate_too() -> None:
    config = DimseConfig("127.0.0.1", 11112, "PACS", allowed_aes=("WS", "X"), ae_policies=POLICY)
    assert config.required_calling_aes == ("WS", "X", "MOD")
