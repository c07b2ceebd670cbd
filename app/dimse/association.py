"""An established association on asyncio (PS3.8 7): DIMSE messages in and out, release,
abort; and the requestor side of association set-up (C-MOVE sub-associations).

The association PDUs are encoded and decoded by `pynetdicom.pdu`, the contexts negotiated by
`pynetdicom.presentation`; the P-DATA path (`pdata.py`, `message.py`) is ours: a message is
read PDU by PDU straight from the stream, and a file is sent from disk in large writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_requestor

from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from app.dimse import message, pdata
from app.dimse.message import Command, CommandError
from app.dimse.pdu import (
    RELEASE_RP,
    RELEASE_RQ,
    SOURCE_PROVIDER,
    SOURCE_USER,
    AbortReason,
    Pdu,
    PduError,
    PduType,
    abort,
    header,
    read_pdu,
)

log = logging.getLogger(__name__)

# Seconds a closing connection may take to send what is left.
CLOSE_WAIT = 2.0
# Bytes of messages held back (`Association.send(..., more=True)`) before they go anyway.
HELD_BYTES = 1 << 16

# PS3.7 A.2.1: the DICOM application context.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"


class Aborted(Exception):
    """The peer aborted the association, or closed the connection without a release."""


class Released(Exception):
    """The peer asked to release the association (answered by `Association.release_reply`)."""


class AssociationRejected(Exception):
    """The peer rejected our A-ASSOCIATE-RQ, or never answered it."""


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


# Where a data set goes as it arrives: a file for it, by its command, or None (bytes).
Sink = Callable[[Command, "Context"], Writable | None]


@dataclass(frozen=True)
class Context:
    """An accepted presentation context."""

    id: int
    abstract_syntax: str
    transfer_syntax: str
    # Whether we may act as SCU (send C-STOREs: C-MOVE, C-GET), and as SCP (serve requests).
    as_scu: bool = True
    as_scp: bool = False


@dataclass
class Message:
    context: Context
    command: Command
    # The data set's bytes, unless it went to a sink (see `Association.receive`).
    data: bytes | None = None


@dataclass
class Association:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # The peer: its AE title, address and port; our AE title.
    peer_ae: str
    address: str
    port: int
    local_ae: str
    # Our maximum P-DATA-TF length (what we read), the peer's (what we send).
    max_pdu: int
    peer_max_pdu: int
    contexts: dict[int, Context] = field(default_factory=dict)
    # Set once we sent or received an A-ABORT or the connection broke.
    closed: bool = False
    # While another task reads the association (an acceptor's message loop), the answers
    # to our requests (C-GET's C-STOREs) are handed over here, by message ID.
    answers: dict[int, asyncio.Future[Command]] | None = None
    _message_id: int = 0
    _held: list[bytes | memoryview] = field(default_factory=list)
    _held_bytes: int = 0
    _by_class: dict[str, list[Context]] = field(default_factory=dict)

    def next_message_id(self) -> int:
        """A message ID for a request of ours (C-GET's C-STOREs: unique on the association)."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    @property
    def peer(self) -> str:
        """For log lines: AE title, address and port."""
        return f"{self.peer_ae}@{self.address}:{self.port}"

    # -- receiving ----------------------------------------------------------------------

    async def receive(self, sink: Sink | None = None) -> Message:
        """The next DIMSE message. Its data set is returned as bytes, unless `sink` gives
        a file for it (by its command): then each fragment is written there as it arrives,
        and the data set is never whole in memory. Raises Released, Aborted, PduError."""
        command_bytes = bytearray()
        command: Command | None = None
        context: Context | None = None
        data = bytearray()
        out: Writable | None = None
        while True:
            pdu = await self._read()
            if pdu.type is not PduType.P_DATA_TF:
                self._not_data(pdu.type, pdu.body, between=command is None and not command_bytes)
            for pdv in pdata.split(pdu.body):
                if context is None:
                    context = self._context(pdv.context_id)
                elif pdv.context_id != context.id:
                    raise PduError("a message's fragments on two presentation contexts")
                if pdv.command:
                    if command is not None:
                        raise PduError("a command fragment after the command set was complete")
                    command_bytes += pdv.data
                    if pdv.last:
                        try:
                            command = message.decode(bytes(command_bytes))
                        except CommandError as exc:
                            raise PduError(f"undecodable command set: {exc}") from None
                        if not message.has_data_set(command):
                            return Message(context, command)
                        out = sink(command, context) if sink is not None else None
                    continue
                if command is None:
                    raise PduError("a data set fragment before its command set")
                if out is not None:
                    out.write(pdv.data)
                else:
                    data += pdv.data
                if pdv.last:
                    return Message(context, command, None if out is not None else bytes(data))

    async def _read(self) -> Pdu:
        try:
            return await read_pdu(self.reader, self.max_pdu)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.closed = True
            raise Aborted("the peer closed the connection") from exc

    def _not_data(self, kind: PduType, body: bytes, *, between: bool) -> None:
        if kind is PduType.ABORT:
            self.closed = True
            raise Aborted("the peer sent an A-ABORT")
        if kind is PduType.RELEASE_RQ and between:
            raise Released()
        raise PduError(f"an unexpected {kind.name} PDU", AbortReason.UNEXPECTED_PDU)

    def _context(self, context_id: int) -> Context:
        context = self.contexts.get(context_id)
        if context is None:
            raise PduError(f"presentation context {context_id} was not accepted")
        return context

    # -- sending ------------------------------------------------------------------------

    async def send(
        self, context: Context, command: Command, data: bytes | None = None, *, more: bool = False
    ) -> None:
        """Send a message. With `more`, it is held back (up to HELD_BYTES) and goes out
        with the next message sent without: C-FIND's matches of a page in one write."""
        if self.closed:
            raise Aborted("the association has ended")
        pieces = pdata.pdus(context.id, True, message.encode(command), self.peer_max_pdu)
        if data is not None:
            pieces += pdata.pdus(context.id, False, data, self.peer_max_pdu)
        self._held += pieces
        self._held_bytes += sum(map(len, pieces))
        if not more or self._held_bytes > HELD_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Send the messages held back."""
        if self._held:
            held, self._held, self._held_bytes = self._held, [], 0
            self.writer.writelines(held)
            await self.writer.drain()

    def flush_soon(self) -> None:
        """Hand the messages held back to the transport without waiting for it to drain:
        a few short responses, sent while something else is awaited (the next `send` or
        `flush` waits for the transport)."""
        if self._held and not self.closed and not self.writer.is_closing():
            held, self._held, self._held_bytes = self._held, [], 0
            self.writer.writelines(held)

    async def send_file(
        self,
        context: Context,
        command: Command,
        data: pdata.FileData,
        sent: Callable[[], object] | None = None,
    ) -> None:
        """A command and, as its data set, the file `data` was read ahead from: the
        messages held back, the command and the first chunk go out in one write. `sent`
        is called once they are handed to the transport, before waiting for it to drain
        (the peer reads them meanwhile)."""
        if self.closed:
            raise Aborted("the association has ended")
        pieces = pdata.pdus(context.id, True, message.encode(command), self.peer_max_pdu)
        held, self._held, self._held_bytes = self._held, [], 0  # messages held back go first
        self.writer.writelines([*held, *pieces, data.first])
        if sent is not None:
            sent()
        await pdata.send_rest(self.writer, data)

    async def request(
        self,
        context: Context,
        command: Command,
        data: pdata.FileData,
        sent: Callable[[], object] | None = None,
    ) -> Command:
        """Send a request with the data set `data`; its answer's command. `sent`: see
        `send_file`; the time the peer takes to read, store and answer is the time to
        read the next file."""
        message_id = int(command[message.MESSAGE_ID])
        waiting: asyncio.Future[Command] | None = None
        if self.answers is not None:
            waiting = self.answers[message_id] = asyncio.get_running_loop().create_future()
        try:
            await self.send_file(context, command, data, sent)
            if waiting is not None:
                return await waiting
            return (await self.receive()).command
        finally:
            if self.answers is not None:
                self.answers.pop(message_id, None)

    def contexts_for(self, abstract_syntax: str) -> list[Context]:
        """The accepted contexts of `abstract_syntax` we may send on (as SCU), in context
        ID order; looked up once per SOP class (C-GET: 128 contexts, every instance)."""
        found = self._by_class.get(abstract_syntax)
        if found is None:
            found = self._by_class[abstract_syntax] = [
                cx
                for _, cx in sorted(self.contexts.items())
                if cx.abstract_syntax == abstract_syntax and cx.as_scu
            ]
        return found

    def answered(self, command: Command) -> bool:
        """Hand an answer to the request waiting for it; False if none is."""
        responded_to = command.get(message.MESSAGE_ID_BEING_RESPONDED_TO)
        waiting = (
            self.answers.get(int(responded_to), None)
            if self.answers and isinstance(responded_to, int)
            else None
        )
        if waiting is None or waiting.done():
            return False
        waiting.set_result(command)
        return True

    def fail_waiting(self, error: BaseException) -> None:
        """The association ended: the requests waiting for answers get `error`."""
        for waiting in (self.answers or {}).values():
            if not waiting.done():
                waiting.set_exception(error)

    # -- ending -------------------------------------------------------------------------

    async def release(self, answer_within: float) -> None:
        """As requestor: A-RELEASE-RQ, wait for the RP (or anything), close."""
        try:
            self.writer.write(RELEASE_RQ)
            await self.writer.drain()
            async with asyncio.timeout(answer_within):
                while True:
                    pdu = await read_pdu(self.reader, self.max_pdu)
                    if pdu.type in (PduType.RELEASE_RP, PduType.ABORT):
                        break
                    if pdu.type is PduType.RELEASE_RQ:  # a collision (PS3.8 7.2.2.7)
                        self.writer.write(RELEASE_RP)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, PduError):
            pass
        finally:
            await self.close()

    async def release_reply(self) -> None:
        """As acceptor, after Released: A-RELEASE-RP, then the requestor closes."""
        with contextlib.suppress(OSError):
            self.writer.write(RELEASE_RP)
            await self.writer.drain()
        await self.close()

    async def abort(
        self, source: int = SOURCE_PROVIDER, reason: int = AbortReason.NOT_SPECIFIED
    ) -> None:
        """Send an A-ABORT and drop the connection, with whatever is still unsent (a peer
        that stopped reading must not keep it open)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.write(abort(source, reason))
        self.writer.transport.abort()

    async def close(self) -> None:
        """Close the connection once what was written is sent, within CLOSE_WAIT seconds
        (then drop it)."""
        self.closed = True
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_WAIT)
        except TimeoutError:
            self.writer.transport.abort()
        except (OSError, ssl.SSLError):
            pass  # already closed by the peer


def no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY: a DIMSE message is a request and a wait for the answer; with Nagle's
    algorithm its last short segment would wait for the peer's delayed ACK."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def user_information(max_pdu: int) -> list[Any]:
    """The user information items we send in an A-ASSOCIATE-RQ or -AC."""
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return [length, implementation, version]


def peer_max_pdu(primitive: A_ASSOCIATE) -> int:
    for item in primitive.user_information:
        if isinstance(item, MaximumLengthNotification):
            return int(item.maximum_length_received or 0)
    return 0


async def associate(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    contexts: Sequence[PresentationContext],
    answer_within: float,
    max_pdu: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Association:
    """Open an association with `called_ae` at host:port proposing `contexts`; the
    accepted ones (at least one) are the association's. AssociationRejected when the peer
    rejects, aborts, accepts nothing or does not answer within `answer_within` seconds;
    OSError when it cannot be reached."""
    proposed = []
    for number, cx in enumerate(contexts):
        copy = PresentationContext()
        copy.context_id = 2 * number + 1
        copy.abstract_syntax = cx.abstract_syntax
        copy.transfer_syntax = list(cx.transfer_syntax)
        proposed.append(copy)
    async with asyncio.timeout(answer_within):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
        )
    no_delay(writer)
    try:
        primitive = A_ASSOCIATE()
        primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
        primitive.calling_ae_title = calling_ae
        primitive.called_ae_title = called_ae
        primitive.presentation_context_definition_list = proposed
        primitive.user_information = user_information(max_pdu)
        request = A_ASSOCIATE_RQ()
        request.from_primitive(primitive)
        writer.write(request.encode())
        async with asyncio.timeout(answer_within):
            answer = await read_pdu(reader, max_pdu)
        raw = header(answer.type, len(answer.body)) + answer.body
        if answer.type is PduType.ASSOCIATE_RJ:
            rejection = A_ASSOCIATE_RJ()
            rejection.decode(raw)
            raise AssociationRejected(f"rejected: {rejection.reason_str}")
        if answer.type is not PduType.ASSOCIATE_AC:
            raise AssociationRejected(f"answered with {answer.type.name}")
        accept = A_ASSOCIATE_AC()
        accept.decode(raw)
        result = accept.to_primitive()
        negotiated = negotiate_as_requestor(
            proposed, result.presentation_context_definition_results_list
        )
    except (TimeoutError, asyncio.IncompleteReadError, PduError, ValueError) as exc:
        writer.close()
        raise AssociationRejected(str(exc) or type(exc).__name__) from None
    except BaseException:
        writer.close()
        raise
    assoc = Association(
        reader,
        writer,
        peer_ae=called_ae,
        address=host,
        port=port,
        local_ae=calling_ae,
        max_pdu=max_pdu,
        peer_max_pdu=peer_max_pdu(result),
    )
    for cx in negotiated:
        if cx.result == 0 and cx.as_scu:
            assert cx.context_id is not None
            assoc.contexts[cx.context_id] = Context(
                cx.context_id, str(cx.abstract_syntax), str(cx.transfer_syntax[0])
            )
    if not assoc.contexts:
        await assoc.abort(SOURCE_USER)
        raise AssociationRejected("no presentation context was accepted")
    return assoc
