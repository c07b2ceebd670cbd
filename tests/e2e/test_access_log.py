"""At the default log level every request is one access log line: method, route template,
status, bytes sent, duration and client address; a search's query string (a patient's name
and birth date) and the UIDs in the path never reach it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.support.server import running_server

# "GET /dicomweb/studies 200 2 B 3.1 ms from 127.0.0.1"
LINE = re.compile(r"pacs\.access: (\S+) (\S+) (\d{3}|-) (\d+) B (\d+\.\d) ms from (\S+)$")


def access_lines(log: Path, count: int) -> list[tuple[str, ...]]:
    """The fields of the first `count` access log lines but /health's (the start-up check),
    waiting for them to be written."""
    deadline = time.monotonic() + 10
    while True:
        lines = map(LINE.search, log.read_text().splitlines())
        found = [m.groups() for m in lines if m and m.group(2) != "/health"]
        if len(found) >= count or time.monotonic() > deadline:
            return found[:count]
        time.sleep(0.05)


def test_access_log_has_route_templates_and_no_query_strings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as url, httpx.Client(base_url=url, timeout=30) as client:
        search = client.get(
            "/dicomweb/studies",
            params={"PatientName": "SECRET^NAME", "PatientBirthDate": "19230405"},
        )
        assert search.status_code == 200, search.text
        series = client.get("/dicomweb/studies/1.2.840.99999.7/series")
        assert series.status_code in (200, 204, 404), series.text
        missing = client.get("/no/such/path?PatientName=OTHER^SECRET")
        assert missing.status_code == 404
        lines = access_lines(data / "server.log", 3)
    assert len(lines) == 3, lines
    assert lines == [
        ("GET", "/dicomweb/studies", "200", str(len(search.content)), lines[0][4], "127.0.0.1"),
        (
            "GET",
            "/dicomweb/studies/{study}/series",
            str(series.status_code),
            str(len(series.content)),
            lines[1][4],
            "127.0.0.1",
        ),
        ("GET", "(unrouted)", "404", str(len(missing.content)), lines[2][4], "127.0.0.1"),
    ]
    text = (data / "server.log").read_text()
    for secret in ("SECRET", "19230405", "1.2.840.99999.7"):
        assert secret not in text
