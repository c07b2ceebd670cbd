"""Reading PDUs from a stream: the header is checked before the body is read."""

from __future__ import annotations

import asyncio

import pytest

from app.dimse.pdu import RELEASE_RQ, AbortReason, PduError, PduType, abort, read_pdu


def _stream(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_release_request_is_read_whole() -> None:
    pdu = await read_pdu(_stream(RELEASE_RQ + abort()), 1024)
    assert pdu.type is PduType.RELEASE_RQ and pdu.body == bytes(4)


async def test_consecutive_pdus_are_read_one_at_a_time() -> None:
    reader = _stream(RELEASE_RQ + abort(reason=AbortReason.UNEXPECTED_PDU))
    assert (await read_pdu(reader, 1024)).type is PduType.RELEASE_RQ
    last = await read_pdu(reader, 1024)
    assert last.type is PduType.ABORT and last.body[3] == AbortReason.UNEXPECTED_PDU


@pytest.mark.parametrize("data", [b"", b"\x05\x00\x00", RELEASE_RQ[:-1]])
async def test_a_truncated_pdu_is_an_incomplete_read(data: bytes) -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_pdu(_stream(data), 1024)


async def test_a_p_data_longer_than_our_maximum_is_refused_before_its_body() -> None:
    # The announced length is never allocated: only the 6-byte header is read.
    reader = _stream(b"\x04\x00\xff\xff\xff\xff")
    with pytest.raises(PduError, match="longer than the 16384 allowed") as caught:
        await read_pdu(reader, 16384)
    assert caught.value.reason == AbortReason.INVALID_PARAMETER


async def test_an_association_request_is_bounded_by_its_own_limit() -> None:
    with pytest.raises(PduError, match="ASSOCIATE_RQ"):
        await read_pdu(_stream(b"\x01\x00\x7f\xff\xff\xff"), 1 << 30)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00\x01", bytes(6)])
async def test_garbage_is_an_unrecognized_pdu(data: bytes) -> None:
    with pytest.raises(PduError) as caught:
        await read_pdu(_stream(data), 1024)
    assert caught.value.reason == AbortReason.UNRECOGNIZED_PDU
