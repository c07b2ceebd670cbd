"""The requestor side of association set-up, and messages read back from PDVs, against an
acceptor made of pynetdicom's PDU classes on a loopback socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context, negotiate_as_acceptor

from app.dimse import message, pdata, sending
from app.dimse.association import Aborted, Association, AssociationRejected, Context, associate
from app.dimse.message import CommandField
from app.dimse.pdu import PduError, PduType, abort, header, read_pdu

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _acceptor(handle: Handler) -> AsyncIterator[int]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _request(reader: asyncio.StreamReader) -> A_ASSOCIATE:
    pdu = await read_pdu(reader, 1 << 20)
    assert pdu.type is PduType.ASSOCIATE_RQ
    rq = A_ASSOCIATE_RQ()
    rq.decode(header(pdu.type, len(pdu.body)) + pdu.body)
    return rq.to_primitive()


def _accepting(max_pdu: int, received: list[bytes] | None = None) -> Handler:
    """Accepts CT in implicit VR little endian and answers each C-STORE with Success;
    the data set fragments go to `received`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _request(reader)
        supported = [build_context(CTImageStorage, [ImplicitVRLittleEndian])]
        accepted, _ = negotiate_as_acceptor(request.presentation_context_definition_list, supported)
        answer = A_ASSOCIATE()
        answer.application_context_name = request.application_context_name
        answer.calling_ae_title = request.calling_ae_title
        answer.called_ae_title = request.called_ae_title
        answer.result = 0
        answer.result_source = 1
        answer.presentation_context_definition_results_list = accepted
        length = MaximumLengthNotification()
        length.maximum_length_received = max_pdu
        answer.user_information = [*request.user_information[1:2], length]
        ac = A_ASSOCIATE_AC()
        ac.from_primitive(answer)
        writer.write(ac.encode())
        # Then answer each C-STORE-RQ with Success, and a release with its reply.
        while True:
            pdu = await read_pdu(reader, 1 << 20)
            if pdu.type is PduType.RELEASE_RQ:
                writer.write(header(PduType.RELEASE_RP, 4) + bytes(4))
                await writer.drain()
                writer.close()
                return
            for pdv in pdata.split(pdu.body):
                if not pdv.command and received is not None:
                    received.append(bytes(pdv.data))
                if pdv.command and pdv.last:
                    rq = message.decode(bytes(pdv.data))
                    rsp = message.response(rq, CommandField.C_STORE_RSP, 0, False)
                    writer.writelines(pdata.pdus(pdv.context_id, True, message.encode(rsp), 0))

    return handle


async def _associate(port: int, syntaxes: list[str]) -> Association:
    return await associate(
        "127.0.0.1",
        port,
        calling_ae="PACS",
        called_ae="STORESCP",
        contexts=[build_context(CTImageStorage, [ts]) for ts in syntaxes],
        answer_within=5,
        max_pdu=1 << 16,
    )


async def test_the_accepted_contexts_and_the_peers_maximum_are_the_associations() -> None:
    async with _acceptor(_accepting(4096)) as port:
        assoc = await _associate(port, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        try:
            assert list(assoc.contexts.values()) == [
                Context(3, CTImageStorage, ImplicitVRLittleEndian)
            ]
            assert assoc.peer_max_pdu == 4096
            sock = assoc.writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            await assoc.release(5)


async def test_nothing_accepted_is_a_rejection() -> None:
    async with _acceptor(_accepting(4096)) as port:
        with pytest.raises(AssociationRejected, match="no presentation context"):
            await _associate(port, [ExplicitVRLittleEndian])


async def test_a_rejection_says_why() -> None:
    async def reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        rj = A_ASSOCIATE_RJ()
        rj.result, rj.source, rj.reason_diagnostic = 1, 1, 3
        writer.write(rj.encode())
        await writer.drain()

    async with _acceptor(reject) as port:
        with pytest.raises(AssociationRejected, match="Calling AE title not recognised"):
            await _associate(port, [ImplicitVRLittleEndian])


async def test_an_abort_instead_of_an_answer_is_a_rejection() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(abort())
        await writer.drain()

    async with _acceptor(refuse) as port:
        with pytest.raises(AssociationRejected, match="ABORT"):
            await _associate(port, [ImplicitVRLittleEndian])


def _ct_file(path: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientName = "Test^Person"
    ds.BitsAllocated = 16
    ds.PixelData = bytes(70000)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_data_set_offset_is_the_one_pydicom_finds(tmp_path: Path) -> None:
    path = _ct_file(tmp_path / "ct.dcm")
    assert sending.data_set_offset(path) == split_dataset(path)[1]
    # Without a file meta group length, the file is parsed.
    raw = path.read_bytes()
    path.write_bytes(raw[:132] + raw[144:])
    assert sending.data_set_offset(path) == split_dataset(path)[1]


async def test_a_file_is_stored_on_the_accepted_context(tmp_path: Path) -> None:
    path = _ct_file(tmp_path / "ct.dcm")
    received: list[bytes] = []

    async with _acceptor(_accepting(1000, received)) as port:
        assoc = await _associate(port, [ImplicitVRLittleEndian])
        context = next(iter(assoc.contexts.values()))
        answer = await sending.send_file(
            assoc, context, path, sop_instance_uid="1.2.3.4", message_id=1
        )
        await assoc.release(5)
    assert answer[message.STATUS] == 0
    assert answer[message.AFFECTED_SOP_INSTANCE_UID] == "1.2.3.4"
    # The data set as it is in the file, past the file meta, in PDUs of the peer's size.
    assert b"".join(received) == path.read_bytes()[sending.data_set_offset(path) :]
    assert max(map(len, received)) == 1000 - 6


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[Association, asyncio.StreamWriter]]:
    """An association with one accepted context, and the peer's end of its connection."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    _, peer = await asyncio.open_connection(sock=theirs)
    assoc = Association(
        reader, writer, "PEER", "127.0.0.1", 1, "PACS", max_pdu=1000, peer_max_pdu=1000
    )
    assoc.contexts[1] = Context(1, CTImageStorage, ImplicitVRLittleEndian)
    try:
        yield assoc, peer
    finally:
        peer.close()
        await assoc.close()


_FIND = {
    message.COMMAND_FIELD: CommandField.C_FIND_RQ,
    message.MESSAGE_ID: 1,
    message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
}


async def test_a_message_is_reassembled_from_fragments_in_several_pdus() -> None:
    identifier = bytes(range(256)) * 10
    async with _pair() as (assoc, peer):
        peer.writelines(pdata.pdus(1, True, message.encode(_FIND), 20))
        peer.writelines(pdata.pdus(1, False, identifier, 100))
        received = await assoc.receive()
    assert received.command == _FIND and received.data == identifier


async def test_a_data_set_goes_to_the_sink_as_it_arrives(tmp_path: Path) -> None:
    async with _pair() as (assoc, peer):
        peer.writelines(pdata.pdus(1, True, message.encode(_FIND), 100))
        peer.writelines(pdata.pdus(1, False, b"x" * 5000, 100))
        with (tmp_path / "sink").open("wb") as sink:
            received = await assoc.receive(lambda command, context: sink)
    assert received.data is None
    assert (tmp_path / "sink").read_bytes() == b"x" * 5000


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (pdata.pdus(7, True, message.encode(_FIND), 100), "context 7 was not accepted"),
        (pdata.pdus(1, False, b"data", 100), "before its command set"),
        ([b"\x04\x00\x00\x00\x00\x03\x00\x00\x00"], "truncated PDV"),
        ([header(PduType.ASSOCIATE_RQ, 0)], "unexpected ASSOCIATE_RQ"),
    ],
)
async def test_a_broken_message_is_a_protocol_error(
    first: list[bytes | memoryview], error: str
) -> None:
    async with _pair() as (assoc, peer):
        peer.writelines(first)
        with pytest.raises(PduError, match=error):
            await assoc.receive()


async def test_an_abort_or_a_closed_connection_ends_the_wait() -> None:
    async with _pair() as (assoc, peer):
        peer.write(abort())
        with pytest.raises(Aborted, match="A-ABORT"):
            await assoc.receive()
    async with _pair() as (assoc, peer):
        peer.writelines(pdata.pdus(1, True, message.encode(_FIND), 100))
        peer.close()
        with pytest.raises(Aborted, match="closed"):
            await assoc.receive()
