"""A subscription's JSON body as the admin API checks it: each bad field is refused with a
message naming it; the secret is generated when not given."""

from __future__ import annotations

from typing import Any

import pytest

from app.services.errors import BadRequest
from app.services.webhooks import subscription

URL = "https://ai.example/hooks/pacs"


def test_a_full_subscription() -> None:
    hook = subscription(
        "clinic-a",
        {
            "url": URL,
            "events": ["instance.stored", "instance.stored"],
            "filter": {"Modality": "CT", "BodyPartExamined": "CHEST"},
            "secret": "0123456789abcdef",
            "active": False,
        },
    )
    assert (hook.tenant, hook.url, hook.events) == ("clinic-a", URL, ("instance.stored",))
    assert hook.filter == (("Modality", "CT"), ("BodyPartExamined", "CHEST"))
    assert (hook.secret, hook.active, len(hook.id)) == ("0123456789abcdef", False, 32)


def test_defaults_every_event_no_filter_a_generated_secret() -> None:
    first, second = subscription("t", {"url": URL}), subscription("t", {"url": "http://h:81/"})
    assert first.events == (
        "instance.stored",
        "instance.replaced",
        "instance.deleted",
        "series.deleted",
        "study.deleted",
        "series.stable",
        "study.stable",
    )
    assert first.filter == () and first.active
    assert len(first.secret) >= 40 and first.secret != second.secret
    assert first.id != second.id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([URL], "JSON object"),
        ({}, "url: a non-empty string"),
        ({"url": 5}, "url: a non-empty string"),
        ({"url": "ftp://h/x"}, "url: the scheme must be http or https"),
        ({"url": "file:///etc/passwd"}, "url: the scheme"),
        ({"url": "https:///x"}, "url: no host"),
        ({"url": "https://h:99999/"}, "url: Port out of range"),
        ({"url": "https://h/a b"}, "url: contains a space"),
        ({"url": "https://h/" + "a" * 2048}, "url: longer than 2048"),
        ({"url": URL, "events": []}, "events: a non-empty list"),
        ({"url": URL, "events": "instance.stored"}, "events: a non-empty list"),
        ({"url": URL, "events": ["study.exploded"]}, "events: unknown event type 'study.exploded'"),
        ({"url": URL, "filter": ["Modality"]}, "filter: an object"),
        ({"url": URL, "filter": {"Modalty": "CT"}}, "filter: 'Modalty' is not a DICOM keyword"),
        ({"url": URL, "filter": {"Modality": 5}}, "filter: the value of Modality"),
        ({"url": URL, "filter": {"Modality": ""}}, "filter: the value of Modality"),
        ({"url": URL, "secret": "short"}, "secret: a string of 16 to 256"),
        ({"url": URL, "active": "yes"}, "active: true or false"),
        ({"url": URL, "callback": URL}, "unknown field 'callback'"),
    ],
)
def test_bad_fields_are_named(body: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        subscription("t", body)
