"""Requests to a live server and the properties every answer must have.

An answer must come within the timeout (no hang), be complete (as long as its
Content-Length says, or a chunked body that ends properly: httpx raises otherwise; a
multipart body ends with its close delimiter), and not be a 5xx: whatever a client sends,
the archive answers a client error or a success.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.dicom.multipart import parse_media_type
from tests.conformance.helpers import Stored
from tests.fuzz.budget import Figures

TIMEOUT = 30.0  # seconds per request: a request still unanswered by then is a hang
HEALTH_WITHIN = 1.0  # /health after a batch: seconds


@dataclass
class Served:
    """A server on one index backend, what it holds, and where it logs."""

    backend: str
    url: str  # base URL, without /dicomweb
    samples: list[Stored]
    log: Path


@dataclass
class Live:
    """One target's fuzzing of a served archive."""

    served: Served
    figures: Figures
    _log_start: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._log_start = self.served.log.stat().st_size

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicomweb"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.dicomweb, timeout=TIMEOUT)

    def request(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        params: Iterable[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
    ) -> httpx.Response:
        """Send one request and check its answer (see the module docstring)."""
        self.figures.requests += 1
        what = f"{method} {path} params={params!r} headers={headers!r}"
        try:
            response = client.request(
                method, path, params=list(params or ()), headers=headers, content=content
            )
        except httpx.TimeoutException as exc:
            raise AssertionError(f"no complete answer in {TIMEOUT} s: {what}") from exc
        except httpx.RemoteProtocolError as exc:
            raise AssertionError(f"the answer broke off ({exc}): {what}") from exc
        check_answer(response, what)
        return response

    def check_after(self) -> None:
        """/health answers at once, and the server logged no error while fuzzed: a client
        error is logged as one (INFO/WARNING), never at ERROR or with a traceback."""
        self.check_health()
        with self.served.log.open("rb") as log:
            log.seek(self._log_start)
            text = log.read().decode("utf-8", "replace")
        errors = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
        assert not errors, "the server logged errors:\n" + "\n".join(errors[:20])

    def check_health(self) -> None:
        start = time.monotonic()
        response = httpx.get(f"{self.url}/health", timeout=TIMEOUT)
        elapsed = time.monotonic() - start
        assert response.status_code == 200, response.text
        assert elapsed < HEALTH_WITHIN, f"/health took {elapsed:.3f} s"


def check_answer(response: httpx.Response, what: str) -> None:
    status = response.status_code
    # 501: a feature the archive does not offer (anonymize=yes), answered as such.
    assert status < 500 or status == 501, f"{status} for {what}: {response.text[:500]}"
    length = response.headers.get("content-length")
    if length is not None:
        assert int(length) == len(response.content), f"Content-Length {length} for {what}"
    media_type, params = parse_media_type(response.headers.get("content-type", ""))
    if media_type == "multipart/related":
        boundary = params.get("boundary", "")
        assert boundary, f"multipart answer without a boundary: {what}"
        end = response.content.rstrip(b"\r\n")
        assert end.endswith(f"--{boundary}--".encode()), (
            f"multipart answer without its close delimiter: {what}"
        )
