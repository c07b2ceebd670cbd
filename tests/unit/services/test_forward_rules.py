"""Forwarding rules from their JSON file: each mistake refused at start with the rule and
field it is in (the filter's own checks and matching: tests/unit/dicom/test_attribute_filter.py);
backoff doubles up to its bound and ends after the last attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.services.forward_rules import DicomNode, RuleError, StowServer, load_rules, parse_rules
from app.services.forwarding import Backoff
from app.services.ports import ChangeAction

DICOM = {"dicom": {"aeTitle": "VIEWER", "host": "127.0.0.1", "port": 104}}
STOW = {"stow": {"url": "https://cloud.example/dicomweb/studies"}}
ENV = {"CLOUD_SECRET": "s3cret"}


def rule(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "ct", "event": "study.stable", "destination": DICOM}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def test_a_rules_file_gives_its_rules() -> None:
    oauth = {
        "tokenUrl": "https://id.example/token",
        "clientId": "pacs",
        "secretEnv": "CLOUD_SECRET",
    }
    stow = {"stow": {**STOW["stow"], "oauth": oauth}}
    rules = parse_rules(
        {
            "rules": [
                rule(filter={"Modality": "CT", "SeriesNumber": 2}, priority=5),
                rule(name="cloud", event="instance.stored", destination=stow),
            ]
        },
        ENV,
    )
    assert [r.name for r in rules] == ["ct", "cloud"]
    assert rules[0].destination == DicomNode("VIEWER", "127.0.0.1", 104)
    assert (rules[0].event, rules[0].priority) == (ChangeAction.STUDY_STABLE, 5)
    assert rules[0].filter == (("Modality", "CT"), ("SeriesNumber", "2"))
    assert isinstance(rules[1].destination, StowServer)
    assert rules[1].destination.oauth is not None
    assert rules[1].destination.oauth.secret == "s3cret"
    assert "s3cret" not in repr(rules[1])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected an object"),
        ({"rules": [rule(name="no spaces")]}, "forwarding rule #1: name"),
        ({"rules": [rule(), rule()]}, "'ct': name: used by another rule"),
        ({"rules": [rule(event="study.arrived")]}, "'ct': event: 'study.arrived' is not one of"),
        ({"rules": [rule(event="study.deleted")]}, "'ct': event: 'study.deleted' is not one of"),
        ({"rules": [rule(filter={"Modalty": "CT"})]}, "'ct': filter: 'Modalty' is not a DICOM"),
        ({"rules": [rule(filter={"PixelData": "x"})]}, "'ct': filter: PixelData (OB or OW)"),
        (
            {"rules": [rule(filter={"ModalitiesInStudy": "CT"})]},
            "'ct': filter: ModalitiesInStudy is computed by the archive, not stored in an "
            "instance; use Modality",
        ),
        ({"rules": [rule(filter={"Modality": ["CT"]})]}, "'ct': filter: Modality: expected"),
        ({"rules": [rule(priority="high")]}, "'ct': priority"),
        ({"rules": [rule(extra=1)]}, "'ct': unknown field 'extra'"),
        ({"rules": [rule(destination={"ftp": {}})]}, "'ct': destination: expected"),
        (
            {"rules": [rule(destination={"dicom": {"aeTitle": "A", "host": "h", "port": 0}})]},
            "'ct': destination.dicom: port",
        ),
        (
            {"rules": [rule(destination={"dicom": {"host": "h", "port": 104}})]},
            "'ct': destination.dicom: aeTitle: required",
        ),
        (
            {"rules": [rule(destination={"stow": {"url": "ftp://x/studies"}})]},
            "'ct': destination.stow: url: 'ftp://x/studies' is not an http",
        ),
        (
            {
                "rules": [
                    rule(
                        destination={
                            "stow": {
                                **STOW["stow"],
                                "oauth": {
                                    "tokenUrl": "https://t",
                                    "clientId": "c",
                                    "secretEnv": "UNSET_SECRET",
                                },
                            }
                        }
                    )
                ]
            },
            "'ct': destination.stow.oauth: secretEnv: the environment variable UNSET_SECRET",
        ),
    ],
)
def test_a_mistake_is_named_with_its_rule_and_field(document: Any, message: str) -> None:
    with pytest.raises(RuleError) as raised:
        parse_rules(document, ENV)
    assert message in str(raised.value)


def test_an_unreadable_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(str(tmp_path / "missing.json"), ENV)
    broken = tmp_path / "rules.json"
    broken.write_text("{rules: ")
    with pytest.raises(RuleError, match="is not JSON"):
        load_rules(str(broken), ENV)


def test_backoff_doubles_up_to_its_bound_then_gives_up() -> None:
    backoff = Backoff(max_attempts=5, first=2, longest=5)
    assert [backoff.pause(n) for n in range(1, 6)] == [2, 4, 5, 5, None]
