"""PDVs: split from a P-DATA-TF, cut to the peer's maximum PDU, a file sent as fragments."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from app.dimse import pdata
from app.dimse.pdu import PduError, PduType, read_pdu


def _joined(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in pieces)


async def _read_all(data: bytes, max_body: int) -> list[pdata.Pdv]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    found: list[pdata.Pdv] = []
    while not reader.at_eof():
        pdu = await read_pdu(reader, max_body)
        assert pdu.type is PduType.P_DATA_TF
        assert len(pdu.body) <= max_body
        found += pdata.split(pdu.body)
        await asyncio.sleep(0)
    return found


@pytest.mark.parametrize(
    ("size", "max_pdu"), [(0, 100), (1, 100), (94, 100), (95, 100), (1000, 16)]
)
async def test_data_is_cut_to_the_peers_maximum_and_reassembles(size: int, max_pdu: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    pdvs = await _read_all(_joined(pdata.pdus(5, False, data, max_pdu)), max_pdu)
    assert b"".join(bytes(p.data) for p in pdvs) == data
    assert [p.last for p in pdvs] == [False] * (len(pdvs) - 1) + [True]
    assert {(p.context_id, p.command) for p in pdvs} == {(5, False)}
    assert len(pdvs) == max(1, -(-size // (max_pdu - 6)))


async def test_a_fragment_not_marked_last_leaves_the_message_open() -> None:
    pdvs = await _read_all(_joined(pdata.pdus(1, True, b"abc", 100, last=False)), 100)
    assert [(p.command, p.last, bytes(p.data)) for p in pdvs] == [(True, False, b"abc")]


def test_several_pdvs_in_one_pdu_are_split() -> None:
    body = b"\x00\x00\x00\x05\x01\x03abc" + b"\x00\x00\x00\x03\x03\x02z"
    pdvs = list(pdata.split(body))
    assert [(p.context_id, p.command, p.last, bytes(p.data)) for p in pdvs] == [
        (1, True, True, b"abc"),
        (3, False, True, b"z"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no PDV
        b"\x00\x00\x00",  # truncated item header
        b"\x00\x00\x00\x01\x01\x03",  # length below 2
        b"\x00\x00\x00\x09\x01\x03abc",  # longer than the PDU
    ],
)
def test_a_pdv_that_does_not_fit_is_refused(body: bytes) -> None:
    with pytest.raises(PduError):
        list(pdata.split(body))


def test_a_maximum_without_room_for_data_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        pdata.fragment_size(6)
    assert pdata.fragment_size(0) == pdata.DEFAULT_PDU - 6  # 0: no limit


@pytest.mark.parametrize("chunk", [pdata.FILE_CHUNK, 50_000], ids=["one read", "several"])
async def test_a_file_is_sent_from_an_offset_in_fragments(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdata, "FILE_CHUNK", chunk)
    path = tmp_path / "file"
    content = bytes(range(256)) * 4000  # 1 MB: several reads of FILE_CHUNK at 16 KB PDUs
    path.write_bytes(b"HEAD" + content)
    ours, theirs = socket.socketpair()
    reader, their_writer = await asyncio.open_connection(sock=theirs)
    _, writer = await asyncio.open_connection(sock=ours)
    sent = asyncio.create_task(pdata.send_file(writer, 3, path, 4, 16384))
    received = bytearray()
    count = 0
    while True:
        pdu = await read_pdu(reader, 16384)
        (pdv,) = pdata.split(pdu.body)
        assert pdv.context_id == 3 and not pdv.command
        received += pdv.data
        count += 1
        if pdv.last:
            break
    await sent
    writer.close()
    their_writer.close()
    assert bytes(received) == content
    assert count == -(-len(content) // (16384 - 6))
