"""A peer that breaks the DICOM upper layer protocol gets an A-ABORT and a log line at
WARNING, never a traceback or an association left hanging; the server goes on serving."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from app.dimse import message, pdata
from app.dimse.association import Association, associate
from app.dimse.contexts import VERIFICATION
from app.dimse.message import CommandField
from app.dimse.pdu import PduType, header
from tests.support.dcmtk import check, require_dcmtk, run
from tests.support.dicom_factory import make_file
from tests.support.server import free_port, running_server

# A-ABORT from the service provider (source 2) with a reason (PS3.8 9.3.8).
ABORT = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 2))


IDLE = 2


@dataclass(frozen=True)
class Pacs:
    port: int
    log: Path


@pytest.fixture(scope="module")
def silent() -> Iterator[int]:
    """A C-MOVE destination that accepts an association and never answers a C-STORE."""
    release = threading.Event()

    def never_answer(event: Event) -> int:
        release.wait(60)
        return 0x0000

    ae = AE(ae_title="SILENT")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, never_answer)]
    )
    try:
        yield port
    finally:
        release.set()
        server.shutdown()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, silent: int) -> Iterator[Pacs]:
    require_dcmtk()
    data = tmp_path_factory.mktemp("protocol")
    port = free_port()
    args = ["--dimse-port", str(port), "--move-destination", f"SILENT=127.0.0.1:{silent}"]
    with running_server(data, *args, env={"PACS_DIMSE_IDLE_TIMEOUT": str(IDLE)}):
        yield Pacs(port, data / "server.log")


def _answer(port: int, data: bytes) -> bytes:
    """What the server sends back to `data` on a new connection, until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received


async def _associated(port: int) -> Association:
    return await associate(
        "127.0.0.1",
        port,
        calling_ae="RAWSCU",
        called_ae="PACS",
        contexts=[build_context(VERIFICATION)],
        answer_within=10,
        max_pdu=1 << 16,
    )


def _after_association(port: int, pieces: list[bytes | memoryview]) -> bytes:
    async def run() -> bytes:
        assoc = await _associated(port)
        assoc.writer.writelines(pieces)
        try:
            return await asyncio.wait_for(assoc.reader.read(), 10)
        finally:
            await assoc.close()

    return asyncio.run(run())


def _warned(pacs: Pacs, text: str) -> None:
    log = pacs.log.read_text()
    lines = [line for line in log.splitlines() if text in line]
    assert lines and " WARNING " in lines[-1], log[-2000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_http_on_the_dicom_port_is_aborted(pacs: Pacs) -> None:
    answer = _answer(pacs.port, b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
    assert answer == ABORT + bytes((0x01,))  # unrecognized PDU
    _warned(pacs, "unknown PDU type 0x47")


def test_an_oversized_pdu_is_aborted_before_its_body(pacs: Pacs) -> None:
    answer = _after_association(pacs.port, [header(PduType.P_DATA_TF, 0x7FFF_FFFF)])
    assert answer == ABORT + bytes((0x06,))  # invalid parameter value
    _warned(pacs, "P_DATA_TF of 2147483647 bytes is longer than")


def test_a_message_on_a_context_never_accepted_is_aborted(pacs: Pacs) -> None:
    echo = {message.COMMAND_FIELD: CommandField.C_ECHO_RQ, message.MESSAGE_ID: 1}
    answer = _after_association(pacs.port, pdata.pdus(99, True, message.encode(echo), 1 << 16))
    assert answer.startswith(ABORT)
    _warned(pacs, "presentation context 99 was not accepted")


def test_a_truncated_pdv_is_aborted(pacs: Pacs) -> None:
    answer = _after_association(pacs.port, [header(PduType.P_DATA_TF, 3) + b"\x00\x00\x00"])
    assert answer.startswith(ABORT)
    _warned(pacs, "truncated PDV item header")


def test_a_move_destination_that_never_answers_fails_after_the_idle_timeout(
    pacs: Pacs, tmp_path: Path
) -> None:
    """Regression: the archive waited for ever for the C-STORE response of a destination
    that accepted the association and then said nothing; the C-MOVE never ended."""
    study = generate_uid()
    path = tmp_path / "one.dcm"
    path.write_bytes(make_file(study=study))
    check("storescu", "-aec", "PACS", "127.0.0.1", str(pacs.port), path)
    start = time.monotonic()
    moved = run(
        "movescu", "-v", "-S", "-aec", "PACS", "-aem", "SILENT",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(pacs.port), timeout=30,
    )  # fmt: skip
    assert time.monotonic() - start < IDLE + 10
    assert "Received Final Move Response (Refused: OutOfResourcesSubOperations)" in moved.stdout, (
        moved.stdout
    )
    assert "no C-STORE response within 2 s" in pacs.log.read_text()


def test_the_server_still_serves_after_protocol_errors(pacs: Pacs) -> None:
    assert "Received Echo Response (Success)" in check(
        "echoscu", "-v", "-aec", "PACS", "127.0.0.1", str(pacs.port)
    )
