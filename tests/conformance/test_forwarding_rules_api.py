"""The forwarding rules admin API against `pacs serve`: a rule created (checked by the
rules file's parser), shown, listed per tenant, deleted; every malformed request a 400 or
413 naming the rule and field or the limit, an unknown name 404, a taken one 409, never a
500; an OAuth client's secret only named by its environment variable."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

RULE = {
    "name": "ct-to-cloud",
    "event": "study.stable",
    "filter": {"Modality": "CT"},
    "priority": 3,
    "destination": {"stow": {"url": "https://cloud.example/dicomweb/studies"}},
}


def _tenant() -> str:
    return f"tenants/t-{uuid.uuid4().hex[:12]}"


def test_create_show_list_delete(http: httpx.Client) -> None:
    base = _tenant()
    created = http.post(f"{base}/forwarding-rules", json=RULE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule.pop("created").endswith("Z")
    assert rule == {**RULE, "source": "api"}
    shown = http.get(f"{base}/forwarding-rules/ct-to-cloud")
    assert shown.status_code == 200 and shown.json() == created.json()
    assert http.get(f"{base}/forwarding-rules").json() == [created.json()]
    assert http.get(f"{_tenant()}/forwarding-rules").json() == []  # per tenant
    taken = http.post(f"{base}/forwarding-rules", json=RULE)
    assert taken.status_code == 409 and "name: used by another rule" in taken.json()["error"]
    assert http.delete(f"{base}/forwarding-rules/ct-to-cloud").status_code == 204
    assert http.get(f"{base}/forwarding-rules/ct-to-cloud").status_code == 404
    assert http.delete(f"{base}/forwarding-rules/ct-to-cloud").status_code == 404


def test_an_oauth_secret_is_never_stored_nor_shown(http: httpx.Client) -> None:
    base = _tenant()
    oauth = {"tokenUrl": "https://id.example/token", "clientId": "pacs", "secretEnv": "PATH"}
    rule = {**RULE, "destination": {"stow": {"url": "https://c.example/s", "oauth": oauth}}}
    created = http.post(f"{base}/forwarding-rules", json=rule)
    assert created.status_code == 201, created.text
    shown = http.get(f"{base}/forwarding-rules/{RULE['name']}").json()
    assert shown["destination"]["stow"]["oauth"] == {**oauth, "scope": ""}
    refused = http.post(f"{base}/forwarding-rules", json={**rule, "name": "other"} | {
        "destination": {"stow": {"url": "https://c.example/s", "oauth": {**oauth, "secret": "x"}}}
    })  # fmt: skip
    assert refused.status_code == 400  # a secret itself is refused, not silently dropped
    assert "oauth: unknown field 'secret'" in refused.json()["error"]
    unset = {**oauth, "secretEnv": f"PACS_NOT_SET_{uuid.uuid4().hex}"}
    missing = http.post(
        f"{base}/forwarding-rules",
        json={**RULE, "destination": {"stow": {"url": "https://c.example/s", "oauth": unset}}},
    )
    assert missing.status_code == 400 and "secretEnv: the environment variable" in missing.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**RULE, "event": "study.exploded"}, "forwarding rule 'ct-to-cloud': event:"),
        ({**RULE, "filter": {"Modalty": "CT"}}, "'ct-to-cloud': filter:"),
        ({**RULE, "hops": 2}, "'ct-to-cloud': unknown field 'hops'"),
        ({**RULE, "priority": 5000}, "'ct-to-cloud': priority:"),
        ({**RULE, "destination": {"ftp": {}}}, "'ct-to-cloud': destination:"),
        ({**RULE, "destination": {"dicom": {"aeTitle": "A", "host": "h"}}}, "dicom: port:"),
        ({**RULE, "name": "a b"}, "name: 1 to 64 letters"),
        ([RULE], "expected an object"),
    ],
)
def test_bad_rules_are_400_naming_the_rule_and_field(
    http: httpx.Client, body: Any, message: str
) -> None:
    answer = http.post(f"{_tenant()}/forwarding-rules", json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_bad_requests(http: httpx.Client) -> None:
    base = _tenant()
    cases = [
        ("POST", f"{base}/forwarding-rules", b"{not json", 400, "the body is not JSON"),
        ("POST", f"{base}/forwarding-rules", b"x" * (64 * 1024 + 1), 413, "at most 65536 bytes"),
        ("GET", f"{base}/forwarding-rules?limit=5", b"", 400, "unknown query parameter 'limit'"),
        ("GET", f"{base}/forwarding-rules/nothing", b"", 404, "no forwarding rule 'nothing'"),
        ("DELETE", f"{base}/forwarding-rules/nothing", b"", 404, "no forwarding rule"),
    ]
    for method, url, body, status, message in cases:
        answer = http.request(method, url, content=body)
        assert answer.status_code == status, (method, url, answer.text)
        assert message in answer.json()["error"], (method, url, answer.text)
