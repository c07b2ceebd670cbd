"""C-STORE sub-operations of a C-MOVE (`retrieve._send_all`) against a minimal bridge: the
destination is an association on a socket pair, answered by the test; the delivery service
gives the instances' files. The next instance is read while the destination stores the
current one, and an instance read for nothing leaves no copy behind."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

from app.auth.ae_policy import parse_ae_policy
from app.dimse import message, pdata, retrieve, sending
from app.dimse.association import Association, Context, Message
from app.dimse.bridge import Bridge, DimseConfig
from app.dimse.message import CommandField
from app.dimse.operation import Operation
from app.dimse.status import Status
from app.services.archive import Archive
from app.services.delivery import LocalFile
from app.services.ports import StoredInstance
from tests.support.dicom_factory import make_file

POLICY = parse_ae_policy("WS=move")
CT = Context(1, CTImageStorage, ExplicitVRLittleEndian)


@dataclass
class FileDelivery:
    """The delivery service's `local_file` (as `stored_file`): each instance's file, or a
    copy of it (removed by `discard`) when `copies` is given."""

    files: dict[str, Path]
    copies: Path | None = None
    made: list[Path] = field(default_factory=list)

    def stored_file(self, access: object, instance: StoredInstance) -> LocalFile:
        path = self.files[instance.sop_instance_uid]
        if self.copies is not None:
            path = Path(shutil.copy(path, self.copies / path.name))
            self.made.append(path)
        return LocalFile(path, instance.transfer_syntax_uid, temporary=self.copies is not None)

    async def local_file(
        self, access: object, instance: StoredInstance, accepted: object
    ) -> LocalFile:
        """What the handlers call: the plan keeps the stored syntax the peers here accept."""
        return self.stored_file(access, instance)


@dataclass
class MiniArchive:
    delivery: FileDelivery


def _instance(uid: str) -> StoredInstance:
    return StoredInstance(
        "1.2.3", "1.2.3.1", uid, CTImageStorage, ExplicitVRLittleEndian, "", 0, "", False, (), {}
    )


def _write(folder: Path, count: int) -> dict[str, Path]:
    files = {}
    for number in range(count):
        uid = f"1.2.3.1.{number + 1}"
        path = folder / f"{number}.dcm"
        path.write_bytes(make_file(sop=uid, rows=200, columns=200, seed=number))
        files[uid] = path
    return files


async def _connected() -> tuple[Association, Association]:
    """Two ends of one association: ours (sends C-STOREs) and the destination's."""
    ours, theirs = socket.socketpair()
    ends = []
    for sock, ae in ((ours, "DEST"), (theirs, "PACS")):
        reader, writer = await asyncio.open_connection(sock=sock)
        assoc = Association(reader, writer, ae, "127.0.0.1", 1, "X", 1 << 20, 16384)
        assoc.contexts[1] = CT
        ends.append(assoc)
    return ends[0], ends[1]


@dataclass
class Move:
    """A C-MOVE being served: its operation, and its sub-operations' outcome."""

    operation: Operation
    bridge: Bridge
    target: Association

    async def send(self, found: list[StoredInstance]) -> tuple[int, retrieve.Tally]:
        tally = retrieve.Tally(len(found))
        access = POLICY.of("WS", "127.0.0.1").access("WS", "127.0.0.1")
        status = await retrieve._send_all(
            self.operation, self.bridge, self.target, found, access, tally, ("WS", 7)
        )
        return status, tally


@asynccontextmanager
async def _moving(
    delivery: FileDelivery, stored: Callable[[Move, int, Message], Awaitable[None]]
) -> AsyncIterator[Move]:
    """A C-MOVE to a destination that calls `stored(move, number, request)` on each
    C-STORE-RQ before it answers Success."""
    target, destination = await _connected()
    requestor, requestor_end = await _connected()
    command: message.Command = {
        message.COMMAND_FIELD: CommandField.C_MOVE_RQ,
        message.MESSAGE_ID: 7,
    }
    context = Context(1, MOVE, ExplicitVRLittleEndian, as_scu=False, as_scp=True)
    bridge = Bridge(
        cast(Archive, MiniArchive(delivery)),
        asyncio.get_running_loop(),
        DimseConfig("127.0.0.1", 11112, "PACS", ae_policies=POLICY, idle_timeout=5),
    )
    move = Move(Operation(requestor, context, command), bridge, target)

    async def answer() -> None:
        number = 0
        while True:
            request = await destination.receive()
            await stored(move, number, request)
            number += 1
            response = message.response(request.command, CommandField.C_STORE_RSP, 0, False)
            await destination.send(request.context, response)

    answering = asyncio.create_task(answer())
    try:
        yield move
    finally:
        answering.cancel()
        for assoc in (target, destination, requestor, requestor_end):
            await assoc.close()


@pytest.mark.parametrize("chunk", [pdata.FILE_CHUNK, 20_000], ids=["whole", "in chunks"])
async def test_the_next_instance_is_read_while_the_destination_stores_the_current_one(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In chunks: only the first is read ahead, the rest as it is sent.
    monkeypatch.setattr(pdata, "FILE_CHUNK", chunk)
    files = _write(tmp_path, 3)
    paths = list(files.values())
    sent = [p.read_bytes()[sending.data_set_offset(p) :] for p in paths]
    received: list[bytes] = []

    async def stored(move: Move, number: int, request: Message) -> None:
        received.append(request.data or b"")
        if number == 0:  # the second file's start changes before the first is answered
            raw = bytearray(paths[1].read_bytes())
            raw[-80000:-79000] = b"\xff" * 1000
            paths[1].write_bytes(raw)

    async with _moving(FileDelivery(files), stored) as move:
        status, tally = await move.send([_instance(uid) for uid in files])
    assert (status, tally.completed) == (Status.SUCCESS, 3)
    # The second was read before it changed: while the first was being stored.
    assert received == sent


async def test_an_instance_read_ahead_for_a_cancelled_move_leaves_no_copy(
    tmp_path: Path,
) -> None:
    (tmp_path / "copies").mkdir()
    delivery = FileDelivery(_write(tmp_path, 3), copies=tmp_path / "copies")

    async def stored(move: Move, number: int, request: Message) -> None:
        await asyncio.sleep(0.05)  # the second instance is made ready meanwhile
        move.operation.cancelled = True

    async with _moving(delivery, stored) as move:
        status, tally = await move.send([_instance(uid) for uid in delivery.files])
    assert (status, tally.completed) == (Status.CANCEL, 1)
    assert len(delivery.made) == 2  # the first, sent, and the second, made ready
    assert list((tmp_path / "copies").iterdir()) == []


async def test_a_move_answers_pending_once_the_next_instance_is_on_its_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _write(tmp_path, 3)
    writes: list[str] = []

    async def stored(move: Move, number: int, request: Message) -> None:
        pass

    async with _moving(FileDelivery(files), stored) as move:
        for name, assoc in (("requestor", move.operation.assoc), ("destination", move.target)):
            write = assoc.writer.writelines

            def logged(
                data: Iterable[bytes | memoryview], name: str = name, write: Any = write
            ) -> None:
                writes.append(name)
                write(data)

            monkeypatch.setattr(assoc.writer, "writelines", logged)
        status, _ = await move.send([_instance(uid) for uid in files])
    # The destination's answer is followed by the next request, then the Pending response
    # (the last one goes with the final response, sent by handle_move).
    assert writes == ["destination", "destination", "requestor", "destination", "requestor"]
    assert status == Status.SUCCESS
