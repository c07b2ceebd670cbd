"""The webhook admin API against `pacs serve`: a subscription created, shown (its secret
only in the creation's answer), listed per tenant, deleted; every malformed request a 400
naming the field or parameter, an unknown id 404, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

URL = "https://ai.example/hooks/pacs"


def _tenant() -> str:
    return f"tenants/t-{uuid.uuid4().hex[:12]}"


def test_create_show_list_delete(http: httpx.Client) -> None:
    base = _tenant()
    created = http.post(
        f"{base}/webhooks",
        json={"url": URL, "events": ["instance.stored"], "filter": {"Modality": "CT"}},
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert len(hook.pop("secret")) >= 40  # generated, shown once
    assert hook["url"] == URL and hook["filter"] == {"Modality": "CT"} and hook["active"]
    shown = http.get(f"{base}/webhooks/{hook['id']}")
    assert shown.status_code == 200
    assert shown.json() == {
        **hook,
        "status": {"lastDeliveredSequence": 0, "failures": 0, "lastError": None, "deadLetters": 0},
    }
    assert [h["id"] for h in http.get(f"{base}/webhooks").json()] == [hook["id"]]
    assert http.get(f"{_tenant()}/webhooks").json() == []  # per tenant
    assert http.get(f"{base}/webhooks/{hook['id']}/dead-letters").json() == []
    assert http.delete(f"{base}/webhooks/{hook['id']}").status_code == 204
    assert http.get(f"{base}/webhooks/{hook['id']}").status_code == 404
    assert http.delete(f"{base}/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "gopher://h/"}, "url: the scheme must be http or https"),
        ({"url": URL, "events": ["instance.exploded"]}, "events: unknown event type"),
        ({"url": URL, "filter": {"Modalty": "CT"}}, "filter: 'Modalty' is not a DICOM keyword"),
        ({"url": URL, "hmac": "x"}, "unknown field 'hmac'"),
        ({"url": URL, "secret": "short"}, "secret: a string of 16 to 256"),
    ],
)
def test_bad_subscriptions_are_400_naming_the_field(
    http: httpx.Client, body: dict[str, Any], message: str
) -> None:
    answer = http.post("webhooks", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_bad_requests(http: httpx.Client) -> None:
    base = _tenant()
    hook = http.post(f"{base}/webhooks", json={"url": URL}).json()["id"]
    cases = [
        ("POST", f"{base}/webhooks", b"{not json", 400, "the body is not JSON"),
        ("POST", f"{base}/webhooks", b"x" * (64 * 1024 + 1), 413, "at most 65536 bytes"),
        ("GET", f"{base}/webhooks?limit=5", b"", 400, "unknown query parameter 'limit'"),
        ("GET", f"{base}/webhooks/{hook}/dead-letters?limit=0", b"", 400, "invalid limit=0"),
        ("POST", f"{base}/webhooks/{hook}/dead-letters/retry?sequence=x", b"", 400, "sequence"),
        ("POST", f"{base}/webhooks/{hook}/dead-letters/retry?sequence=3", b"", 404, "sequence 3"),
        ("GET", f"{base}/webhooks/{'f' * 32}", b"", 404, "no webhook subscription"),
        ("GET", f"{base}/webhooks/../../etc", b"", 404, ""),
        ("DELETE", f"{base}/webhooks/x'%3B", b"", 404, "no webhook subscription"),
    ]
    for method, path, body, status, message in cases:
        answer = http.request(method, path, content=body)
        assert answer.status_code == status, (path, answer.text)
        if message:
            assert message in answer.json()["error"], (path, answer.text)
    answer = http.post(f"{base}/webhooks/{hook}/dead-letters/retry")
    assert (answer.status_code, answer.json()) == (202, {"retryRequested": 0})
