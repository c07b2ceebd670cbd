"""The C-FIND handler against a minimal bridge (a search service giving fixed matches, an
audit service keeping what it is given): each query is audited once, after its answer is
on its way to the caller (the audit trail and the log are no part of the caller's wait)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import dsutils
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from app.audit.event import AuditEvent, EventOutcome
from app.auth.ae_policy import parse_ae_policy
from app.auth.principal import Access
from app.dimse import find, message
from app.dimse.association import Association, Context
from app.dimse.bridge import Bridge, DimseConfig
from app.dimse.message import CommandField
from app.dimse.operation import Operation
from app.query.model import Query
from app.services.archive import Archive
from app.services.ports import Json

POLICY = parse_ae_policy("WS=find")
CONTEXT = Context(1, FIND, ExplicitVRLittleEndian, as_scu=False, as_scp=True)


@dataclass
class Searches:
    """The search service: `matches` studies, a page at a time."""

    matches: int

    async def search(self, access: Access, query: Query) -> list[Json]:
        first = query.offset or 0
        last = min(self.matches, first + (query.limit or self.matches))
        return [{"0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]}} for n in range(first, last)]


@dataclass
class Audits:
    """The audit service; each event is kept with what the caller had received by then."""

    caller: socket.socket
    events: list[tuple[AuditEvent, bytes]] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        try:
            received = self.caller.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            received = b""
        self.events.append((event, received))


@dataclass
class MiniArchive:
    search: Searches
    audit: Audits


@dataclass
class Find:
    operation: Operation
    bridge: Bridge
    audits: Audits


@asynccontextmanager
async def _finding(matches: int) -> AsyncIterator[Find]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=ours)
    assoc = Association(reader, writer, "WS", "127.0.0.1", 1, "PACS", 1 << 20, 1 << 20)
    assoc.contexts[1] = CONTEXT
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    command: message.Command = {
        message.COMMAND_FIELD: CommandField.C_FIND_RQ,
        message.MESSAGE_ID: 3,
        message.AFFECTED_SOP_CLASS_UID: FIND,
    }
    data = bytes(dsutils.encode(identifier, False, True, False) or b"")
    audits = Audits(theirs)
    bridge = Bridge(
        cast(Archive, MiniArchive(Searches(matches), audits)),
        asyncio.get_running_loop(),
        DimseConfig("127.0.0.1", 11112, "PACS", ae_policies=POLICY),
    )
    try:
        yield Find(Operation(assoc, CONTEXT, command, data), bridge, audits)
    finally:
        await assoc.close()
        theirs.close()


def _final_status(received: bytes) -> int | None:
    """The status of the last C-FIND-RSP in `received` (None if none is complete)."""
    status = None
    offset = 0
    while offset + 6 <= len(received):
        length = int.from_bytes(received[offset + 2 : offset + 6], "big")
        body = received[offset + 6 : offset + 6 + length]
        offset += 6 + length
        if len(body) == length and body[5] & 0x01:  # a command fragment (one PDV each)
            status = int(message.decode(body[6:]).get(message.STATUS, -1))
    return status


@pytest.mark.parametrize("matches", [0, 1, 5], ids=["none", "one", "two pages and a half"])
async def test_a_query_is_audited_once_after_its_answer_is_sent(
    matches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(find, "PAGE", 2)
    async with _finding(matches) as query:
        await find.handle_find(query.operation, query.bridge)
        (event, received), *more = query.audits.events
    assert more == []
    assert event.outcome == EventOutcome.SUCCESS
    # A page of matches or the whole answer was on its way when the event was recorded.
    assert _final_status(received) == (0xFF00 if matches > 2 else 0x0000)


async def test_a_cancelled_query_is_audited_once() -> None:
    async with _finding(3) as query:
        query.operation.cancelled = True
        await find.handle_find(query.operation, query.bridge)
        (event, received), *more = query.audits.events
    assert more == []
    assert (event.outcome, _final_status(received)) == (EventOutcome.SUCCESS, 0xFE00)
