"""A scripted day at the archive, and the audit trail it leaves (issue 9, "Audit trail").

One `pacs serve` with sign-in on (the real OpenID provider of tests/support/oidc.py),
DIMSE on with an allow-list and an AE policy, and its audit messages going to Debian's
rsyslog over TLS. The day: a service stores a study by STOW-RS; a signed-in user searches
(QIDO-RS) and views it (WADO-RS instance, metadata, rendered); a modality stores a second
study with storescu; a workstation finds it (findscu), moves it to a storescp (movescu)
and gets the first one (getscu); two requests come without a valid token (none, garbage);
the user tries a STOW-RS without the write permission (403); the modality tries a C-FIND
its policy does not allow (0124); and an AE that is not allowed tries to associate.

Then the admin API holds exactly the expected events (action, outcome, who, study,
patient), each from the right address (two requests come through a trusted proxy: theirs
is the client the proxy names), and the collector received the same events as PS3.15
audit messages.
"""

from __future__ import annotations

import base64
import json
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import stow
from tests.support.dcmtk import require_dcmtk, run, storescp
from tests.support.dicom_factory import make_file
from tests.support.oidc import SERVICE, WEB, OpenIdProvider
from tests.support.rsyslog import Collector, running_rsyslog
from tests.support.server import free_port, running_server

MODALITY, WORKSTATION, STRANGER, DESTINATION = "MODALITY", "WORKSTATION", "STRANGER", "DEST"
POLICY = f"{MODALITY}=echo,store;{WORKSTATION}=echo,find,move,get"
# "<input> <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG", as rsyslog wrote it.
_RECEIVED = re.compile(rb"\S+ <\d+>1 \S+ \S+ \S+ \S+ \S+ - \xef\xbb\xbf(?P<xml><\?xml .*)")
GARBAGE_TOKEN = "not-a-jwt-but-a-secret-looking-string"
# Two requests come through a proxy the archive trusts (127.0.0.1): their client is this.
PROXIED = {"X-Forwarded-For": "203.0.113.9"}

# (action, EventActionCode, outcome, who, study, patient): one row per expected event.
Row = tuple[str, str, int, str, str | None, str | None]


@dataclass(frozen=True)
class Day:
    url: str
    dimse_port: int
    collector: Collector
    admin: str  # an admin token
    writer_subject: str
    reader_subject: str
    web_study: str
    web_patient: str
    sop: str
    dimse_study: str
    dimse_patient: str
    moved: Path

    def expected(self) -> list[Row]:
        web, dimse = (self.web_study, self.web_patient), (self.dimse_study, self.dimse_patient)
        return [
            ("instances-transferred", "C", 0, self.writer_subject, *web),  # STOW-RS
            ("query", "E", 0, self.reader_subject, None, None),  # QIDO-RS
            ("instances-transferred", "R", 0, self.reader_subject, *web),  # WADO-RS
            ("instances-accessed", "R", 0, self.reader_subject, *web),  # metadata
            ("instances-accessed", "R", 0, self.reader_subject, *web),  # rendered
            ("instances-transferred", "C", 0, MODALITY, *dimse),  # C-STORE
            ("query", "E", 0, WORKSTATION, None, None),  # C-FIND
            ("instances-transferred", "R", 0, WORKSTATION, *dimse),  # C-MOVE
            ("instances-transferred", "R", 0, WORKSTATION, *web),  # C-GET
            ("user-authentication", "E", 4, "anonymous", None, None),  # no token
            ("user-authentication", "E", 4, "anonymous", None, None),  # garbage token
            ("security-alert", "E", 4, self.reader_subject, None, None),  # STOW-RS, 403
            ("security-alert", "E", 4, MODALITY, None, None),  # C-FIND, 0124
            ("security-alert", "E", 4, STRANGER, None, None),  # association rejected
        ]


def dcmtk(port: int, tool: str, calling: str, *args: str, send: Path | None = None) -> str:
    """A DCMTK tool's output, run as `calling` (storescu sending `send`)."""
    peer = ("127.0.0.1", str(port), *([send] if send else []))
    return run(tool, "-aet", calling, "-aec", "PACS", "-v", *args, *peer).stdout


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_trail(url: str, admin: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{url}/dicomweb/audit", params={"limit": "1000"}, headers=bearer(admin), timeout=30
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()
    return events


def day_events(url: str, admin: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The trail without the admin's own searches, once it holds `count` events (reads
    are written in batches, off the request path)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in audit_trail(url, admin) if e["action"] != "audit-log-used"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def row(event: dict[str, Any]) -> Row:
    return (
        event["action"],
        event["eventActionCode"],
        event["outcome"],
        event["subject"],
        event["studyInstanceUID"],
        event["patientID"],
    )


@pytest.fixture(scope="module")
def day(oidc_provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    require_dcmtk()
    root = tmp_path_factory.mktemp("audit-day")
    with (
        running_rsyslog(root / "rsyslog") as collector,
        storescp(root / "moved", DESTINATION) as destination_port,
    ):
        port = free_port()
        env = oidc_provider.archive_env(
            PACS_AUDIT_SYSLOG=collector.tls_url,
            PACS_AUDIT_SYSLOG_CA=str(collector.pki.ca),
            PACS_DIMSE_AE_POLICY=POLICY,
            PACS_DIMSE_ALLOWED_AES=f"{MODALITY},{WORKSTATION}",
            PACS_TRUSTED_PROXIES="127.0.0.1",
        )
        args = ["--dimse-port", str(port)]
        args += ["--move-destination", f"{DESTINATION}=127.0.0.1:{destination_port}"]
        with running_server(root / "data", *args, env=env) as url:
            yield _live_the_day(url, port, collector, oidc_provider, root)


def _live_the_day(
    url: str, port: int, collector: Collector, provider: OpenIdProvider, root: Path
) -> Day:
    writer = provider.token(SERVICE, ("pacs:read", "pacs:write"))
    reader = provider.user_token("reader", ("pacs:read",))
    admin = provider.token(SERVICE, ("pacs:admin",))
    web_study, web_patient = generate_uid(), f"PAT-WEB-{generate_uid()[-6:]}"
    dimse_study, dimse_patient = generate_uid(), f"PAT-DIMSE-{generate_uid()[-6:]}"
    series, sop = generate_uid(), generate_uid()
    web_file = make_file(study=web_study, series=series, sop=sop, PatientID=web_patient)
    api = f"{url}/dicomweb"
    with httpx.Client(base_url=api, timeout=30) as http:
        # STOW-RS by the service.
        stored = stow(http, [web_file], headers=bearer(writer))
        assert stored.status_code == 200, stored.text
        # QIDO-RS, WADO-RS (instance, metadata, rendered) by the signed-in user.
        found = http.get(
            "/studies", params={"PatientID": web_patient}, headers={**bearer(reader), **PROXIED}
        )
        assert found.status_code == 200 and len(found.json()) == 1, found.text
        instance = f"/studies/{web_study}/series/{series}/instances/{sop}"
        dicom = {"Accept": "application/dicom", **bearer(reader)}
        assert http.get(instance, headers=dicom).content == web_file
        assert http.get(f"{instance}/metadata", headers=bearer(reader)).status_code == 200
        rendered = http.get(
            f"{instance}/rendered", headers={"Accept": "image/png", **bearer(reader)}
        )
        assert rendered.status_code == 200, rendered.text
    # C-STORE by the modality, C-FIND and C-MOVE by the workstation.
    dimse_file = root / "dimse.dcm"
    dimse_file.write_bytes(make_file(study=dimse_study, PatientID=dimse_patient))
    assert "Received Store Response (Success)" in dcmtk(port, "storescu", MODALITY, send=dimse_file)
    found_text = dcmtk(
        port, "findscu", WORKSTATION, "-S", "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"PatientID={dimse_patient}", "-k", "StudyInstanceUID",
    )  # fmt: skip
    assert dimse_study in found_text, found_text
    moved = dcmtk(
        port, "movescu", WORKSTATION, "-S", "-aem", DESTINATION,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={dimse_study}",
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in moved, moved
    got = root / "got"
    got.mkdir()
    fetched = dcmtk(
        port, "getscu", WORKSTATION, "-S", "-od", str(got),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={web_study}",
    )  # fmt: skip
    assert "Number of Completed Suboperations : 1" in fetched, fetched
    # Two failed sign-ins, a 403, a refused C-FIND, a rejected association.
    assert httpx.get(f"{api}/studies", timeout=30).status_code == 401
    garbage = httpx.get(f"{api}/studies", headers={**bearer(GARBAGE_TOKEN), **PROXIED}, timeout=30)
    assert garbage.status_code == 401
    with httpx.Client(base_url=api, timeout=30) as http:
        refused = stow(http, [make_file(study=web_study)], headers=bearer(reader))
        assert refused.status_code == 403, refused.text
    refused_find = dcmtk(
        port, "findscu", MODALITY, "-S", "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyInstanceUID",
    )  # fmt: skip
    assert "0x124" in refused_find or "0124" in refused_find, refused_find
    assert "Association Rejected" in dcmtk(port, "echoscu", STRANGER)
    return Day(
        url,
        port,
        collector,
        admin,
        writer_subject=claims(writer)["sub"],
        reader_subject=claims(reader)["sub"],
        web_study=web_study,
        web_patient=web_patient,
        sop=sop,
        dimse_study=dimse_study,
        dimse_patient=dimse_patient,
        moved=root / "moved",
    )


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, as issued (who the archive should say the caller is)."""
    payload = token.split(".")[1]
    found: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return found


# PS3.15 A.5.3 EventID codes (CID 400) of the actions the admin API names.
EVENT_ID = {
    "instances-transferred": "110104",
    "instances-accessed": "110103",
    "query": "110112",
    "security-alert": "110113",
    "user-authentication": "110114",
}
AUDIT_LOG_USED = "110101"


def test_the_trail_holds_the_days_events(day: Day) -> None:
    expected = day.expected()
    events = day_events(day.url, day.admin, len(expected))
    assert Counter(row(e) for e in events) == Counter(expected)
    # The real client's address: the proxy's client for the two proxied requests.
    proxied = [e for e in events if e["address"] == PROXIED["X-Forwarded-For"]]
    assert sorted(e["action"] for e in proxied) == ["query", "user-authentication"], proxied
    assert all(e["address"] == "127.0.0.1" for e in events if e not in proxied), events
    by_action: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    # Who, beyond the subject: the OAuth client of a token, the AE title of an association.
    for event in events:
        if event["protocol"] == "DIMSE":
            assert event["aeTitle"] == event["subject"] and event["called"] == "PACS", event
        elif event["subject"] == day.writer_subject:
            assert event["client"] == SERVICE, event
        elif event["subject"] == day.reader_subject:
            assert event["client"] == WEB, event
    stow_event, store_event = sorted(
        (e for e in by_action["instances-transferred"] if e["eventActionCode"] == "C"),
        key=lambda e: e["protocol"],
    )
    assert stow_event["protocol"] == "DICOMweb" and stow_event["sopInstanceUIDs"] == [day.sop]
    assert store_event["protocol"] == "DIMSE"
    move, get = sorted(
        (e for e in by_action["instances-transferred"] if e["aeTitle"] == WORKSTATION),
        key=lambda e: e["destination"] is None,
    )
    assert move["destination"] == DESTINATION and move["studyInstanceUID"] == day.dimse_study
    assert get["destination"] is None and get["studyInstanceUID"] == day.web_study
    assert len(list(day.moved.iterdir())) == 1  # and the study really went there
    qido, find = sorted(by_action["query"], key=lambda e: e["protocol"])
    assert f"PatientID={day.web_patient}" in qido["query"]
    assert f"PatientID={day.dimse_patient}" in find["query"]
    sign_ins = by_action["user-authentication"]
    assert {e["eventType"] for e in sign_ins} == {"Login"}
    assert all(GARBAGE_TOKEN not in (e["reason"] or "") for e in sign_ins)
    assert Counter(e["eventType"] for e in by_action["security-alert"]) == {
        "Use of Restricted Function": 2,
        "Node Authentication": 1,
    }


def test_the_collector_received_them_as_ps315_messages(day: Day) -> None:
    expected = day.expected()
    day_events(day.url, day.admin, len(expected))
    # Every event the trail holds, the admin's searches too, reaches the collector.
    total = len(audit_trail(day.url, day.admin))
    messages = [message(line) for line in day.collector.wait_for(total)]
    rows = [xml_row(m) for m in messages if xml_row(m)[0] != AUDIT_LOG_USED]
    assert Counter(rows) == Counter(
        (EVENT_ID[action], code, outcome, who, study, patient)
        for action, code, outcome, who, study, patient in expected
    )
    # The QIDO-RS search is there as asked: the query participant object, base64.
    queries = [
        base64.b64decode(text).decode()
        for m in messages
        for text in (q.text for q in m.iter("ParticipantObjectQuery"))
        if text
    ]
    assert any(f"PatientID={day.web_patient}" in q for q in queries), queries


def message(line: bytes) -> ET.Element:
    found = _RECEIVED.fullmatch(line)
    assert found is not None, line[:300]
    root = ET.fromstring(found["xml"])
    assert root.tag == "AuditMessage"
    return root


def xml_row(root: ET.Element) -> tuple[str, str, int, str, str | None, str | None]:
    """(EventID code, EventActionCode, outcome, requestor's UserID, study, patient)."""
    identification = root.find("EventIdentification")
    assert identification is not None
    event_id = identification.find("EventID")
    assert event_id is not None
    (requestor,) = (p for p in root.iter("ActiveParticipant") if p.get("UserIsRequestor") == "true")
    objects: dict[str | None, str | None] = {}
    for found in root.iter("ParticipantObjectIdentification"):
        id_type = found.find("ParticipantObjectIDTypeCode")
        assert id_type is not None
        objects[id_type.get("csd-code")] = found.get("ParticipantObjectID")
    return (
        str(event_id.get("csd-code")),
        str(identification.get("EventActionCode")),
        int(identification.get("EventOutcomeIndicator", "-1")),
        str(requestor.get("UserID")),
        objects.get("110180"),  # Study Instance UID
        objects.get("2"),  # Patient Number (RFC 3881)
    )
