"""The C-STORE handler against a minimal bridge: an association on a socket pair, the real
store service on a SQLite index and a folder blob store. The handler hands over the sink
the data set was received into and answers the service's result."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from app.auth.ae_policy import parse_ae_policy
from app.dimse import message, pdata
from app.dimse.association import Association, Context
from app.dimse.bridge import Bridge, DimseConfig
from app.dimse.operation import Operation
from app.dimse.pdu import RELEASE_RP, RELEASE_RQ, PduType
from app.dimse.session import Session
from app.dimse.store import open_sink, stored_status
from app.services.archive import Archive
from app.services.audit import AuditService
from app.services.store import StoreService
from tests.support.dicom_factory import make_file
from tests.support.ingest import STORAGE_FULL, Ingest, data_set_offset, ingest

POLICY = parse_ae_policy("MODALITY=store;VIEWER=find")


@dataclass
class MiniArchive:
    """What the C-STORE handler uses of the archive."""

    store: StoreService
    audit: AuditService


@dataclass
class Scp:
    setup: Ingest
    bridge: Bridge
    work: Path

    async def store(self, data: bytes, calling_ae: str = "MODALITY") -> Dataset | int:
        """C-STORE `data`'s data set as it arrives on an association: into a sink of the
        store service (which the association discards unless the service took it)."""
        ds = pydicom.dcmread(io.BytesIO(data))
        command: message.Command = {
            message.COMMAND_FIELD: message.CommandField.C_STORE_RQ,
            message.AFFECTED_SOP_CLASS_UID: str(ds.SOPClassUID),
            message.AFFECTED_SOP_INSTANCE_UID: str(ds.SOPInstanceUID),
        }
        sink = open_sink(self.bridge, command, calling_ae, ExplicitVRLittleEndian)
        view = memoryview(data)
        for start in range(data_set_offset(data), len(data), 16384):  # as fragments arrive
            sink.write(view[start : start + 16384])
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        assoc = Association(reader, writer, calling_ae, "127.0.0.1", 40000, "PACS", 1, 1)
        context = Context(1, CTImageStorage, ExplicitVRLittleEndian, as_scp=True)
        try:
            status = await stored_status(Operation(assoc, context, command), self.bridge, sink)
        finally:
            await assoc.close()
            theirs.close()
        sink.discard()  # as the association does
        return status


@pytest.fixture
async def scp(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Scp]:
    put_fault = getattr(request, "param", None)
    async with ingest(tmp_path / "data", put_fault=put_fault) as setup:
        archive = MiniArchive(setup.service, setup.service.audit)
        config = DimseConfig("127.0.0.1", 0, "PACS", ae_policies=POLICY)
        bridge = Bridge(cast(Archive, archive), asyncio.get_running_loop(), config)
        yield Scp(setup, bridge, tmp_path)


def _code(status: Dataset | int) -> int:
    return status if isinstance(status, int) else int(status.Status)


async def test_a_received_dataset_is_stored(scp: Scp) -> None:
    data = make_file(rows=32, columns=32)
    assert _code(await scp.store(data)) == 0x0000
    [blob] = scp.setup.blob_files()
    assert pydicom.dcmread(blob).PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData
    assert pydicom.dcmread(blob).file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert scp.setup.spool_files() == []


@pytest.mark.parametrize("scp", [STORAGE_FULL], indirect=True)
async def test_a_full_storage_is_a700_with_the_services_words(scp: Scp) -> None:
    status = await scp.store(make_file())
    assert isinstance(status, Dataset)
    assert (status.Status, status.ErrorComment) == (0xA700, "storage is full")
    assert scp.setup.spool_files() == [] and scp.setup.blob_files() == []


async def test_a_damaged_dataset_is_refused_c000(scp: Scp) -> None:
    data = make_file(rows=32, columns=32)
    status = await scp.store(data[: len(data) - 100])  # pixel data cut short
    assert isinstance(status, Dataset)
    assert status.Status == 0xC000
    assert scp.setup.spool_files() == [] and scp.setup.blob_files() == []


async def test_another_patient_in_a_stored_study_is_c40a(scp: Scp) -> None:
    study = generate_uid()
    assert _code(await scp.store(make_file(study=study, PatientID="A"))) == 0x0000
    status = await scp.store(make_file(study=study, PatientID="B"))
    assert isinstance(status, Dataset)
    assert status.Status == 0xC40A
    assert len(scp.setup.blob_files()) == 1


async def test_an_ae_without_store_is_refused_0124_and_nothing_is_stored(scp: Scp) -> None:
    status = await scp.store(make_file(), calling_ae="VIEWER")
    assert isinstance(status, Dataset)
    assert status.Status == 0x0124
    assert scp.setup.spool_files() == [] and scp.setup.blob_files() == []


async def _session(scp: Scp, pdus: list[bytes | memoryview], *, then_close: bool) -> bytes:
    """Serve one association (already set up) whose peer sends `pdus`, then closes the
    connection (an abort) or releases; what we answered."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    assoc = Association(reader, writer, "MODALITY", "127.0.0.1", 40000, "PACS", 1 << 20, 16384)
    assoc.contexts = {1: Context(1, CTImageStorage, ExplicitVRLittleEndian, as_scp=True)}
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    session = asyncio.create_task(Session(assoc, scp.bridge).run())
    peer_writer.writelines(pdus)
    if not then_close:
        peer_writer.write(RELEASE_RQ)
    await peer_writer.drain()
    if then_close:
        peer_writer.close()
    await asyncio.wait_for(session, 10)
    answered = await peer_reader.read()
    peer_writer.close()
    return answered


def _c_store_pdus(data: bytes, *, cut_at: int | None = None) -> list[bytes | memoryview]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    command = message.encode(
        {
            message.AFFECTED_SOP_CLASS_UID: str(ds.SOPClassUID),
            message.COMMAND_FIELD: message.CommandField.C_STORE_RQ,
            message.MESSAGE_ID: 1,
            message.PRIORITY: message.PRIORITY_MEDIUM,
            message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
            message.AFFECTED_SOP_INSTANCE_UID: str(ds.SOPInstanceUID),
        }
    )
    data_set = memoryview(data)[data_set_offset(data) :]
    pieces = pdata.pdus(1, True, command, 16384)
    return pieces + pdata.pdus(1, False, data_set[:cut_at], 16384, last=cut_at is None)


async def test_a_data_set_cut_off_by_the_peer_leaves_no_spool_file(scp: Scp) -> None:
    # Held in a temporary file that only the answer removed: an abort left it behind.
    data = make_file(rows=1024, columns=1024)  # 2 MB: part of it is on disk when cut off
    await _session(scp, _c_store_pdus(data, cut_at=(1 << 20) + 300_000), then_close=True)
    assert scp.setup.spool_files() == [] and scp.setup.blob_files() == []


async def test_a_data_set_received_in_fragments_on_an_association_is_stored(scp: Scp) -> None:
    data = make_file(rows=1024, columns=1024)
    answered = await _session(scp, _c_store_pdus(data), then_close=False)
    assert answered.startswith(bytes([PduType.P_DATA_TF]))  # the C-STORE-RSP
    [blob] = scp.setup.blob_files()
    assert blob.read_bytes().endswith(data[data_set_offset(data) :])
    assert scp.setup.spool_files() == []


async def test_a_c_store_without_a_data_set_is_answered_c000_not_a_crash(scp: Scp) -> None:
    # The session took the data set's sink for granted and ended with an IndexError.
    command = message.encode(
        {
            message.AFFECTED_SOP_CLASS_UID: CTImageStorage,
            message.COMMAND_FIELD: message.CommandField.C_STORE_RQ,
            message.MESSAGE_ID: 7,
            message.PRIORITY: message.PRIORITY_MEDIUM,
            message.COMMAND_DATA_SET_TYPE: message.NO_DATA_SET,
            message.AFFECTED_SOP_INSTANCE_UID: generate_uid(),
        }
    )
    answered = await _session(scp, pdata.pdus(1, True, command, 16384), then_close=False)
    length = int.from_bytes(answered[2:6], "big")
    [pdv] = pdata.split(answered[6 : 6 + length])
    response = message.decode(bytes(pdv.data))
    assert response[message.COMMAND_FIELD] == message.CommandField.C_STORE_RSP
    assert response[message.STATUS] == 0xC000
    assert response[message.MESSAGE_ID_BEING_RESPONDED_TO] == 7
    assert answered[6 + length :] == RELEASE_RP  # served on, then released
    assert scp.setup.spool_files() == [] and scp.setup.blob_files() == []
