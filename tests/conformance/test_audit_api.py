"""GET /dicomweb/audit against `pacs serve`: the audit trail as JSON, per tenant, with
filters, and a clear 400 for every bad parameter. Reading the trail is itself audited,
which gives these tests events to find without any other route being audited yet."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def trail(http: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    answer = http.get(path, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    found: list[dict[str, Any]] = answer.json()
    return found


def wait_for(http: httpx.Client, path: str, count: int, **params: Any) -> list[dict[str, Any]]:
    """Events are written to the index in the background: poll until `count` are there."""
    deadline = time.monotonic() + 10
    while len(found := trail(http, path, **params)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} events after 10 s"
        time.sleep(0.05)
    return found


def test_reading_the_trail_is_recorded_in_it(http: httpx.Client) -> None:
    path = f"tenants/{tenant()}/audit"
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert trail(http, path) == []  # a new tenant has no events yet
    trail(http, path, patient="PAT-1", limit=5)
    # Newest first; the polls of wait_for add events of their own after these two.
    newest, oldest = wait_for(http, path, 2)[-2:]
    assert newest["query"] == "patient=PAT-1&limit=5"  # newest first
    assert oldest["query"] is None
    assert newest["action"] == "audit-log-used"
    assert newest["event"] == "Audit Log Used"
    assert newest["eventActionCode"] == "R"
    assert newest["outcome"] == 0
    assert newest["protocol"] == "DICOMweb"
    assert newest["subject"] == "anonymous"  # no sign-in configured
    assert newest["address"] == "127.0.0.1"
    assert newest["called"] == f"/dicomweb/{path}"
    assert newest["tenant"] == path.split("/")[1]
    when = datetime.fromisoformat(newest["time"])
    assert before <= when <= datetime.now(UTC) + timedelta(seconds=1)


def test_filters_and_paging(http: httpx.Client) -> None:
    path = f"tenants/{tenant()}/audit"
    for _ in range(3):
        trail(http, path)
    # Every call adds an event: fix the set looked at to the events before `cut`, a moment
    # after the fourth (events are stamped to the millisecond, so two may share one), once
    # the batched writer has written them all.
    wait_for(http, path, 4)
    time.sleep(0.01)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.3)
    events = trail(http, path, until=cut)
    assert len(events) >= 3
    times = [e["time"] for e in events]
    assert times == sorted(times, reverse=True)  # newest first
    assert trail(http, path, until=cut, user="anonymous") == events
    assert trail(http, path, until=cut, user="somebody-else") == []
    assert trail(http, path, until=cut, patient="NOBODY") == []
    assert trail(http, path, until=cut, study="1.2.3.4") == []
    assert trail(http, path, since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert trail(http, path, until="2000-01-01") == []
    # since is inclusive, until exclusive
    assert trail(http, path, since=times[1], until=cut)[-1]["time"] == times[1]
    assert trail(http, path, since=times[0], until=times[0]) == []
    assert trail(http, path, until=cut, limit=1, offset=1) == [events[1]]
    assert trail(http, path, until=cut, limit=2) == events[:2]


def test_tenants_do_not_see_each_other(http: httpx.Client) -> None:
    first, second = tenant(), tenant()
    trail(http, f"tenants/{first}/audit")
    wait_for(http, f"tenants/{first}/audit", 1)
    assert trail(http, f"tenants/{second}/audit") == []
    assert all(e["tenant"] == "default" for e in trail(http, "audit", limit=1000))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since='yesterday' is not an ISO 8601 date or date-time"),
        ({"until": "2024-13-01"}, "until='2024-13-01' is not an ISO 8601"),
        ({"since": "2024-03-02", "until": "2024-03-01"}, "since is later than until"),
        ({"limit": "0"}, "invalid limit=0: expected 1 to 1000"),
        ({"limit": "1001"}, "invalid limit=1001: expected 1 to 1000"),
        ({"limit": "ten"}, "invalid limit='ten': expected an integer"),
        ({"offset": "-1"}, "invalid offset=-1: expected 0 to"),
        ({"study": "not-a-uid"}, "study='not-a-uid' is not a Study Instance UID"),
        ({"patient": ""}, "patient is empty"),
        # Regressions: these gave 500s (OverflowError in astimezone; NUL on PostgreSQL).
        ({"since": "0001-01-01T00:00:00+14:00"}, "is out of range once converted to UTC"),
        ({"until": "9999-12-31T23:00-05:00"}, "is out of range once converted to UTC"),
        ({"patient": "PAT\x00-1"}, "patient contains a control character"),
        ({"user": "a\x1bb"}, "user contains a control character"),
        ({"PatientID": "x"}, "unknown query parameter 'PatientID'"),
    ],
)
def test_bad_parameters(http: httpx.Client, params: dict[str, str], message: str) -> None:
    answer = http.get("audit", params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_a_parameter_twice(http: httpx.Client) -> None:
    answer = http.get("audit?user=a&user=b")
    assert answer.status_code == 400
    assert "'user' given more than once" in answer.json()["error"]


def test_a_malformed_tenant(http: httpx.Client) -> None:
    answer = http.get("tenants/Not_Valid!/audit")
    assert answer.status_code == 400
    assert "invalid tenant" in answer.json()["error"]


def test_only_json(http: httpx.Client) -> None:
    answer = http.get("audit", headers={"Accept": "application/dicom+xml"})
    assert answer.status_code == 406
    assert http.post("audit").status_code == 405
