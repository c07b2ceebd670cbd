"""The hostile rows of issue 10's table, replayed one after another against a real server
process while /health is polled every 20 ms: each is a clear 4xx or status (never a 5xx),
the server's peak resident memory stays under a stated bound during each row, and /health
keeps answering (p99 under 100 ms, none over 250 ms).

Peak memory per row: the kernel's high-water mark (VmHWM) is reset before each row by
writing 5 to /proc/<pid>/clear_refs, and read after it. The connection-flood rows (idle
HTTP and DIMSE connections) have tests of their own.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    Stored,
    error_message,
    items,
    multipart_body,
    reuid_testdata,
    stored,
    stow,
    stow_ok,
    token,
)
from tests.fuzz.stow_bodies import with_transfer_syntax
from tests.support.dicom_factory import make_file
from tests.support.postgres import index_backend_env
from tests.support.server import PIDS, running_server

MIB = 1024 * 1024
# Measured on 2 shared cores, SQLite and PostgreSQL: 114-116 MiB resident after start-up
# and a peak of 114-119 MiB in every row (the chunked STOW of 1.3 MB and the 550 KB of empty
# parts add 3 MiB). Before the fixes one viewport row alone reached 9.7 GB and the frame
# list built a 328 MB response. The bound, about twice the measured peak, leaves room for
# allocator and library differences, while a row that held any hostile-sized response, body
# or image would pass it.
PEAK_RSS_BOUND = 256 * MIB
# /health: the bound is a p99 under 100 ms; no poll may wait 250 ms either (a row
# holding the event loop: 550 KB of empty parts held it for 150-570 ms before parts
# yielded to other requests; tests/unit/web/test_stow_yields.py pins that down). Not a
# 100 ms maximum: a full garbage collection of the server's heap alone takes 50-170 ms on
# 2 busy cores. Measured meanwhile: p99 5-35 ms, max 5-44 ms.
HEALTH_P99 = 0.100
HEALTH_MAX = 0.250
POLL_EVERY = 0.020  # s
MAX_REQUEST_BYTES = 1 * MIB  # PACS_MAX_REQUEST_BYTES of the server under test
ARABIC_ONE = "\u0661"


@dataclass
class Poll:
    started: float  # wall-clock time
    latency: float  # seconds
    status: int  # 0: no answer


@contextmanager
def polling_health(url: str) -> Iterator[list[Poll]]:
    """Poll /health every POLL_EVERY seconds from another process (tests/support/
    health_poll.py: the test's own work cannot delay it) meanwhile; the list is filled at
    the end."""
    polls: list[Poll] = []
    command = [sys.executable, "-m", "tests.support.health_poll", url, str(POLL_EVERY)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield polls
    finally:
        out, _ = process.communicate(timeout=30)
        for line in out.splitlines():
            started, latency, status = line.split()
            polls.append(Poll(float(started), float(latency), int(status)))


def _memory(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current resident size (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Fixture:
    url: str
    ct: Stored  # 512 x 512 CT
    emri: Stored  # 10 frames
    mixed_study: str  # a study with a CT and an MR series


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fixture]:
    data = tmp_path_factory.mktemp(f"resources-{request.param}")
    with index_backend_env(request.param) as backend:
        env = {**backend, "PACS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
        with (
            running_server(data, env=env) as url,
            httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http,
        ):
            ct = stored(make_file(rows=512, columns=512, PatientID=token()))
            emri = stored(reuid_testdata("emri_small.dcm", PatientID=token())[0])
            study = generate_uid()
            mixed = [
                make_file(study=study, Modality=modality, PatientID="MIXED")
                for modality in ("CT", "MR")
            ]
            stow_ok(http, [ct.data, emri.data, *mixed])
            yield Fixture(url, ct, emri, study)


Row = Callable[[httpx.Client, Fixture], None]


def _refused(response: httpx.Response, *words: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    message = error_message(response)
    for word in words:
        assert word in message, message


def huge_viewport(http: httpx.Client, f: Fixture) -> None:
    response = http.get(f"{f.ct.path}/rendered", params={"viewport": "100000,100000"})
    _refused(response, "viewport")


def ten_thousand_frames(http: httpx.Client, f: Fixture) -> None:
    _refused(http.get(f"{f.emri.path}/frames/{','.join(['1'] * 10_000)}"))


def qido_integer_overflow(http: httpx.Client, f: Fixture) -> None:
    _refused(http.get("/studies", params={"offset": str(2**63)}), "offset")
    response = http.get("/instances", params={"InstanceNumber": "9" * 23})
    _refused(response, "InstanceNumber")


def qido_nul(http: httpx.Client, f: Fixture) -> None:
    _refused(http.get("/studies", params={"PatientName": "A\x00B"}), "PatientName", "NUL")


def stow_unknown_transfer_syntax(http: httpx.Client, f: Fixture) -> None:
    data = with_transfer_syntax(make_file(), "1.2.3.4.5")
    response = stow(http, [data])
    assert response.status_code == 409, response.text
    (failed,) = items(response.json(), "00081198")
    assert failed["00081197"]["Value"] == [0xC122], failed


def empty_parts(http: httpx.Client, f: Fixture) -> None:
    part = b"--B\r\n\r\n\r\n"
    body = part * (550 * 1024 // len(part)) + b"--B--\r\n"
    response = http.post(
        "/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
    )
    _refused(response, "PACS_MAX_STOW_PARTS", status=413)


def chunked_stow_over_the_limit(http: httpx.Client, f: Fixture) -> None:
    files = [make_file(rows=128, columns=128, PatientID="CHUNKED") for _ in range(40)]
    body = multipart_body(files, "B")  # 40 x 33 KiB: over the 1 MiB limit
    assert len(body) > MAX_REQUEST_BYTES

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(body), 64 * 1024):
            yield body[at : at + 64 * 1024]

    response = http.post(
        "/studies",
        content=chunks(),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
    )
    assert response.status_code == 202, response.text
    listed = items(response.json(), "00081199")
    (failed,) = items(response.json(), "00081198")
    assert failed["00081197"]["Value"] == [0xA700], failed
    # Everything stored is listed: the patient's instances are exactly those.
    found = http.get("/instances", params={"PatientID": "CHUNKED", "limit": "1000"})
    assert len(found.json()) == len(listed) > 0


def modalities_wildcard(http: httpx.Client, f: Fixture) -> None:
    scope = {"StudyInstanceUID": f.mixed_study}
    response = http.get("/studies", params={**scope, "ModalitiesInStudy": "C*R"})
    assert response.status_code == 200, response.text
    assert response.json() == []
    response = http.get("/studies", params={**scope, "ModalitiesInStudy": "C*"})
    assert len(response.json()) == 1


def non_ascii_digit_and_nameless_parameter(http: httpx.Client, f: Fixture) -> None:
    _refused(http.get(f"{f.emri.path}/frames/{ARABIC_ONE}"))
    _refused(http.get("/studies?=1"), "no name")


ROWS: list[tuple[str, Row]] = [
    ("rendered viewport 100000 x 100000", huge_viewport),
    ("frames/1,1,1,... (10,000)", ten_thousand_frames),
    ("QIDO offset and InstanceNumber overflow", qido_integer_overflow),
    ("QIDO NUL", qido_nul),
    ("STOW TransferSyntaxUID 1.2.3.4.5", stow_unknown_transfer_syntax),
    ("550 KB of empty parts", empty_parts),
    ("chunked STOW over PACS_MAX_REQUEST_BYTES", chunked_stow_over_the_limit),
    ("ModalitiesInStudy=C*R", modalities_wildcard),
    ("frames/١ and ?=1", non_ascii_digit_and_nameless_parameter),
]


def test_hostile_rows_cost_bounded_memory_and_keep_health_responsive(
    archive: Fixture, request: pytest.FixtureRequest
) -> None:
    pid = PIDS[archive.url]
    peaks: dict[str, int] = {}
    spans: dict[str, tuple[float, float]] = {}
    with (
        polling_health(archive.url) as polls,
        httpx.Client(base_url=f"{archive.url}/dicomweb", timeout=60) as http,
    ):
        time.sleep(0.2)  # a few polls before the first row
        for name, row in ROWS:
            _reset_peak(pid)
            start = time.time()
            row(http, archive)
            spans[name] = (start, time.time())
            peaks[name] = _memory(pid, "VmHWM")
    latencies = sorted(p.latency for p in polls)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    lines = []
    for name, (start, end) in spans.items():
        during = [p.latency for p in polls if start <= p.started <= end]
        lines.append(
            f"{name}: {end - start:.2f} s, peak RSS {peaks[name] / MIB:.0f} MiB, "
            f"/health max {max(during, default=0) * 1000:.0f} ms over {len(during)} polls"
        )
    lines.append(
        f"/health: {len(latencies)} polls, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    report = "\n".join(lines)
    print(f"\n{request.node.callspec.id}:\n{report}")
    assert all(p.status == 200 for p in polls), report
    assert max(peaks.values()) < PEAK_RSS_BOUND, report
    assert p99 < HEALTH_P99, report
    assert latencies[-1] < HEALTH_MAX, report
