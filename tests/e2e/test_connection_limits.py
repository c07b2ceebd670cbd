"""Each timeout and connection budget fires, with short settings (issue 10): slow request
headers and a stalled STOW body get 408 and are closed; a connection over the per-address
cap is closed at once and logged once, not once per connection; on the DICOM port a
connection that sends no A-ASSOCIATE-RQ is closed after ARTIM, and one over the per-address
cap at once, while a real echoscu is served.

Test clients use their own loopback addresses (127.0.1.x), so that the per-address caps
they reach are theirs alone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.support import flood
from tests.support.dcmtk import check, require_dcmtk
from tests.support.server import free_port, running_server

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
ARTIM = 3
IDLE = 2
MAX_ASSOCIATIONS = 3
HTTP_PER_ADDRESS = 4
DIMSE_PER_ADDRESS = 2


@dataclass(frozen=True)
class Pacs:
    url: str
    port: int
    dimse_port: int
    log: Path


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    require_dcmtk()
    data = tmp_path_factory.mktemp("limits")
    dimse_port = free_port()
    env = {
        "PACS_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "PACS_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "PACS_HTTP_MAX_CONNECTIONS_PER_ADDRESS": str(HTTP_PER_ADDRESS),
        "PACS_DIMSE_REQUEST_TIMEOUT": str(ARTIM),
        "PACS_DIMSE_MAX_CONNECTIONS_PER_ADDRESS": str(DIMSE_PER_ADDRESS),
        "PACS_DIMSE_IDLE_TIMEOUT": str(IDLE),
        "PACS_DIMSE_MAX_ASSOCIATIONS": str(MAX_ASSOCIATIONS),
    }
    with running_server(data, "--dimse-port", str(dimse_port), env=env) as url:
        yield Pacs(url, int(url.rsplit(":", 1)[1]), dimse_port, data / "server.log")


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - start


def log_lines(pacs: Pacs, text: str) -> list[str]:
    return [line for line in pacs.log.read_text().splitlines() if text in line]


def test_slow_request_headers_get_408_and_the_connection_is_closed(pacs: Pacs) -> None:
    with connect(pacs.port, "127.0.1.1") as slow, connect(pacs.port, "127.0.1.1") as silent:
        slow.sendall(flood.PARTIAL_REQUEST)
        answer, waited = until_closed(slow)
        nothing, silent_waited = until_closed(silent)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"PACS_HTTP_HEADER_TIMEOUT" in answer, answer
    assert HEADER_TIMEOUT - 0.5 < waited < HEADER_TIMEOUT + 3
    # A connection that sent nothing is closed without an answer it could take for the
    # answer to its next request.
    assert nothing == b"" and silent_waited < HEADER_TIMEOUT + 3
    assert log_lines(pacs, "request headers not complete within 2 s")


def test_headers_sent_a_byte_at_a_time_still_get_408_at_the_header_timeout(pacs: Pacs) -> None:
    """Bytes arriving do not restart the header timeout (slowloris)."""
    with connect(pacs.port, "127.0.1.9") as sock:
        start = time.monotonic()
        sock.sendall(flood.PARTIAL_REQUEST)
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - start < HEADER_TIMEOUT + 5:
            try:
                sock.sendall(b"x")
                answer = sock.recv(4096)
                break
            except TimeoutError:
                continue
            except OSError:
                break
        waited = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert waited < HEADER_TIMEOUT + 3


def test_stalled_stow_body_gets_408_and_no_server_error(pacs: Pacs) -> None:
    head = (
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: pacs\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 100000\r\n\r\n"
    )
    with connect(pacs.port, "127.0.1.2") as sock:
        sock.sendall(head + b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 1000)
        answer, waited = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"PACS_HTTP_BODY_TIMEOUT" in answer, answer
    assert BODY_TIMEOUT - 0.5 < waited < BODY_TIMEOUT + 3
    time.sleep(0.5)  # the app's end of the request
    log = pacs.log.read_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    assert httpx.get(f"{pacs.url}/health", timeout=10).status_code == 200


def test_body_bytes_trickling_in_keep_the_request_until_they_stop(pacs: Pacs) -> None:
    """The body timer is not re-armed per chunk but checks, when it fires, when the latest
    bytes came: a body sent in pieces for longer than the timeout (gaps shorter than it)
    is still read, and the 408 comes a timeout after the last piece, not the first."""
    head = (
        b"POST /dicomweb/studies HTTP/1.1\r\nHost: pacs\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 100000\r\n\r\n"
    )
    gap = BODY_TIMEOUT * 0.4
    with connect(pacs.port, "127.0.1.3") as sock:
        sock.sendall(head + b"--b\r\nContent-Type: application/dicom\r\n\r\n")
        for _ in range(4):  # 4 gaps: 1.6 timeouts of trickling
            time.sleep(gap)
            sock.sendall(b"\0" * 100)
        answer, waited = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert BODY_TIMEOUT - 0.5 < waited < BODY_TIMEOUT + 3


def test_connections_over_the_per_address_cap_are_closed_at_once_and_logged_once(
    pacs: Pacs,
) -> None:
    source = "127.0.1.3"
    held = [connect(pacs.port, source) for _ in range(HTTP_PER_ADDRESS)]
    try:
        assert flood.request_all(held) == HTTP_PER_ADDRESS  # now idle on keep-alive
        refused = [connect(pacs.port, source) for _ in range(30)]
        for sock in refused:
            answer, waited = until_closed(sock)
            sock.close()
            assert answer == b"" and waited < 1
        assert flood.still_open(held) == HTTP_PER_ADDRESS
        # Other addresses are served meanwhile.
        assert httpx.get(f"{pacs.url}/health", timeout=10).status_code == 200
    finally:
        flood.close_all(held)
    lines = log_lines(pacs, "PACS_HTTP_MAX_CONNECTIONS_PER_ADDRESS=4")
    assert 1 <= len(lines) <= 2 and source in lines[0], lines


def test_dimse_connection_without_association_request_is_closed_after_artim(pacs: Pacs) -> None:
    with connect(pacs.dimse_port, "127.0.1.4") as sock:
        answer, waited = until_closed(sock)
    assert answer == b""
    assert ARTIM - 0.5 < waited < ARTIM + 3
    assert log_lines(pacs, "no A-ASSOCIATE-RQ within 3 s")


def test_dimse_connections_over_the_per_address_cap_are_closed_at_once(pacs: Pacs) -> None:
    source = "127.0.1.5"
    held = [connect(pacs.dimse_port, source) for _ in range(DIMSE_PER_ADDRESS)]
    try:
        time.sleep(0.2)  # accepted and counted
        with connect(pacs.dimse_port, source) as extra:
            answer, waited = until_closed(extra)
        assert answer == b"" and waited < 1
        assert flood.still_open(held) == DIMSE_PER_ADDRESS
        check("echoscu", "-aet", "ECHOSCU", "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port))
    finally:
        flood.close_all(held)
    lines = log_lines(pacs, "PACS_DIMSE_MAX_CONNECTIONS_PER_ADDRESS=2")
    assert len(lines) == 1 and source in lines[0], lines


def test_idle_association_is_aborted_after_the_idle_timeout_and_logged_as_info(pacs: Pacs) -> None:
    ae = AE(ae_title="IDLESCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs.dimse_port, ae_title="PACS")
    assert assoc.is_established
    start = time.monotonic()
    assoc.join(timeout=IDLE + 5)  # the association's thread ends when the server aborts
    waited = time.monotonic() - start
    assert assoc.is_aborted and IDLE - 0.5 < waited < IDLE + 5, (assoc.is_aborted, waited)
    lines = log_lines(pacs, "idle for longer than PACS_DIMSE_IDLE_TIMEOUT")
    assert lines and " INFO " in lines[0], lines
    assert " ERROR " not in pacs.log.read_text()


def test_connections_stalled_in_their_association_request_leave_associations_free(
    pacs: Pacs,
) -> None:
    """Connections that sent the first bytes of an A-ASSOCIATE-RQ and stopped, more than
    PACS_DIMSE_MAX_ASSOCIATIONS of them, do not take the associations (pynetdicom counted
    them); they are closed after ARTIM."""
    sources = ["127.0.1.6", "127.0.1.7", "127.0.1.8"]
    stalled = [connect(pacs.dimse_port, s) for s in sources for _ in range(DIMSE_PER_ADDRESS)]
    assert len(stalled) > MAX_ASSOCIATIONS
    try:
        for sock in stalled:
            sock.sendall(b"\x01\x00")  # A-ASSOCIATE-RQ, reserved: then nothing
        time.sleep(0.3)
        check("echoscu", "-aet", "ECHOSCU", "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port))
        for sock in stalled:
            _, waited = until_closed(sock)
            assert waited < ARTIM + 3
    finally:
        flood.close_all(stalled)
    assert " ERROR " not in pacs.log.read_text()


def test_connections_over_the_server_budgets_are_closed_at_once(tmp_path: Path) -> None:
    """Every connection from its own address, so that only the servers' budgets apply."""
    dimse_port = free_port()
    env = {"PACS_HTTP_MAX_CONNECTIONS": "6", "PACS_DIMSE_MAX_CONNECTIONS": "3"}
    addresses = iter(flood.loopback_addresses(2 * 256 + 10, 20))  # 127.0.2.10 ...
    with running_server(tmp_path / "data", "--dimse-port", str(dimse_port), env=env) as url:
        port = int(url.rsplit(":", 1)[1])
        http = [connect(port, next(addresses)) for _ in range(6)]
        dimse = [connect(dimse_port, next(addresses)) for _ in range(3)]
        try:
            assert flood.request_all(http) == 6
            time.sleep(0.2)  # the DICOM connections accepted and counted
            for extra in (connect(port, next(addresses)), connect(dimse_port, next(addresses))):
                answer, waited = until_closed(extra)
                extra.close()
                assert answer == b"" and waited < 1
            assert flood.still_open(http + dimse) == 9
        finally:
            flood.close_all(http + dimse)
        log = (tmp_path / "data" / "server.log").read_text()
    assert "budget of connections is used (PACS_HTTP_MAX_CONNECTIONS=6)" in log
    assert "budget of connections is used (PACS_DIMSE_MAX_CONNECTIONS=3)" in log
