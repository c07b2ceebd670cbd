"""GET /dicomweb/changefeed and /changefeed/latest against `pacs serve`: every stored
instance once, in sequence order from 1, paged and resumable from any offset, per tenant,
long polling, and a clear 400 for every bad parameter. Each test uses a tenant of its own,
whose feed starts empty."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import stow_ok
from tests.support.dicom_factory import make_file

FIELDS = [
    "Sequence",
    "StudyInstanceUid",
    "SeriesInstanceUid",
    "SopInstanceUid",
    "Action",
    "Timestamp",
    "State",
]


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _feed(http: httpx.Client, tenant: str, **params: Any) -> list[dict[str, Any]]:
    answer = http.get(f"tenants/{tenant}/changefeed", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    found: list[dict[str, Any]] = answer.json()
    return found


def _store(http: httpx.Client, tenant: str, study: str, count: int) -> list[str]:
    files = [make_file(study=study, seed=n) for n in range(count)]
    with httpx.Client(base_url=f"{http.base_url}tenants/{tenant}", timeout=60) as client:
        body = stow_ok(client, files)
    return [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]


def test_the_feed_lists_each_stored_instance_in_order(http: httpx.Client) -> None:
    tenant, study = _tenant(), generate_uid()
    assert _feed(http, tenant) == []
    assert http.get(f"tenants/{tenant}/changefeed/latest").json() == {"Sequence": 0}
    stored = _store(http, tenant, study, 3)

    found = _feed(http, tenant)
    assert [e["Sequence"] for e in found] == [1, 2, 3]
    assert sorted(e["SopInstanceUid"] for e in found) == sorted(stored)
    for entry in found:
        assert list(entry)[: len(FIELDS)] == FIELDS
        assert entry["StudyInstanceUid"] == study
        assert (entry["Action"], entry["State"]) == ("instance.stored", "current")
        assert entry["Timestamp"].endswith("Z")
        metadata = entry["Metadata"]
        assert metadata["00080018"]["Value"] == [entry["SopInstanceUid"]]
        # Bulk data as WADO-RS metadata links it: under the instance, in the tenant.
        instance = (
            f"{http.base_url}tenants/{tenant}/studies/{study}/series/"
            f"{entry['SeriesInstanceUid']}/instances/{entry['SopInstanceUid']}"
        )
        assert metadata["7FE00010"]["BulkDataURI"].startswith(instance + "/bulkdata/")

    latest = http.get(f"tenants/{tenant}/changefeed/latest", params={"includemetadata": "false"})
    assert latest.json() == {k: v for k, v in found[2].items() if k != "Metadata"}


def test_paging_and_resuming_from_any_offset(http: httpx.Client) -> None:
    tenant = _tenant()
    _store(http, tenant, generate_uid(), 5)
    everything = _feed(http, tenant, includemetadata="false")
    assert [e["Sequence"] for e in everything] == [1, 2, 3, 4, 5]
    assert all("Metadata" not in e for e in everything)
    assert _feed(http, tenant, limit=2, includemetadata="false") == everything[:2]
    assert _feed(http, tenant, offset=2, limit=2, includemetadata="false") == everything[2:4]
    assert _feed(http, tenant, offset=4, includemetadata="false") == everything[4:]
    # Beyond the last entry: nothing yet, not an error.
    assert _feed(http, tenant, offset=5) == []
    assert _feed(http, tenant, offset=10**15) == []


def test_tenants_see_only_their_own_changes(http: httpx.Client) -> None:
    mine, theirs, study = _tenant(), _tenant(), generate_uid()
    _store(http, mine, study, 2)
    _store(http, theirs, study, 1)
    assert [e["Sequence"] for e in _feed(http, mine)] == [1, 2]
    assert [e["Sequence"] for e in _feed(http, theirs)] == [1]
    # The default tenant's feed (the plain route) holds none of them.
    plain = http.get("changefeed", params={"limit": 100, "includemetadata": "false"}).json()
    assert study not in {e["StudyInstanceUid"] for e in plain}


def test_a_long_poll_returns_as_soon_as_an_instance_is_stored(http: httpx.Client) -> None:
    tenant = _tenant()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(_feed, http, tenant, wait=20, includemetadata="false")
        time.sleep(0.5)
        assert not waiting.done()
        (sop,) = _store(http, tenant, generate_uid(), 1)
        stored_at = time.monotonic()
        found = waiting.result(timeout=20)
        answered = time.monotonic()
    assert [(e["Sequence"], e["SopInstanceUid"]) for e in found] == [(1, sop)]
    assert answered - stored_at < 1.0, f"answered {answered - stored_at:.2f} s after the store"
    assert answered - started < 10


def test_a_long_poll_without_changes_ends_empty_after_wait(http: httpx.Client) -> None:
    started = time.monotonic()
    assert _feed(http, _tenant(), wait=1) == []
    assert 0.9 < time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("offset=-1", "invalid offset=-1: expected 0 to"),
        ("offset=abc", "invalid offset='abc': expected an integer"),
        ("limit=0", "invalid limit=0: expected 1 to 100 (PACS_CHANGEFEED_MAX_LIMIT)"),
        ("limit=-5", "invalid limit=-5: expected 1 to 100"),
        ("limit=101", "invalid limit=101: expected 1 to 100 (PACS_CHANGEFEED_MAX_LIMIT)"),
        ("limit=ten", "invalid limit='ten': expected an integer"),
        ("offset=99999999999999999999", "expected 0 to 9223372036854775807"),
        ("wait=-1", "invalid wait=-1: expected 0 to 30 (PACS_CHANGEFEED_MAX_WAIT)"),
        ("wait=31", "invalid wait=31: expected 0 to 30 (PACS_CHANGEFEED_MAX_WAIT)"),
        ("wait=0.5", "invalid wait='0.5': expected an integer"),
        ("includemetadata=yes", "invalid includemetadata='yes': expected true or false"),
        ("since=2024-01-01", "unknown query parameter 'since'"),
        ("offset=1&offset=2", "'offset' given more than once"),
    ],
)
def test_bad_parameters(http: httpx.Client, query: str, message: str) -> None:
    answer = http.get(f"changefeed?{query}")
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_bad_parameters_of_latest(http: httpx.Client) -> None:
    answer = http.get("changefeed/latest?offset=3")
    assert answer.status_code == 400
    assert "unknown query parameter 'offset'" in answer.json()["error"]
    answer = http.get("changefeed/latest?includemetadata=1")
    assert answer.status_code == 400


def test_only_json(http: httpx.Client) -> None:
    for path in ("changefeed", "changefeed/latest"):
        answer = http.get(path, headers={"Accept": "application/dicom+json"})
        assert answer.status_code == 406, path


def test_a_malformed_tenant(http: httpx.Client) -> None:
    answer = http.get("tenants/Not_Valid!/changefeed")
    assert answer.status_code == 400
    assert "invalid tenant" in answer.json()["error"]
