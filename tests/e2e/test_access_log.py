"""At log level debug uvicorn logs every request line; a search's query string (a patient's
name and birth date) must not reach that log, while the request itself still does."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.server import running_server


def test_debug_access_log_has_paths_without_query_strings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, env={"PACS_LOG_LEVEL": "debug"}) as url:
        answer = httpx.get(
            f"{url}/dicomweb/studies",
            params={"PatientName": "SECRET^NAME", "PatientBirthDate": "19230405"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        log = data / "server.log"
        deadline = time.monotonic() + 10
        while "GET /dicomweb/studies HTTP/1.1" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
    text = log.read_text()
    assert "SECRET" not in text and "19230405" not in text
