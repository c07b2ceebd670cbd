"""One association we accept, from its A-ASSOCIATE-RQ to its release or abort.

The set-up must arrive within ARTIM; the association is then served message by message by
one task: C-ECHO and C-STORE are answered in turn, a C-FIND, C-MOVE or C-GET runs as a task
of its own so that a C-CANCEL (and, for a C-GET, the answers to its C-STOREs) can still be
read meanwhile. Without asynchronous operations negotiated a peer has one request at a time
(PS3.7 D.3.3.3): a second one while another runs aborts the association.

A peer that breaks the protocol (a PDU of an unknown type, too long, out of place, on a
context never accepted) gets an A-ABORT and a log line at WARNING; one that idles for longer
than PACS_DIMSE_IDLE_TIMEOUT (with no operation running) an A-ABORT and a line at INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from pydicom.uid import UID
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext

from app.auth.ae_policy import DimseService
from app.dimse import acceptor, message
from app.dimse.association import (
    Aborted,
    Association,
    Context,
    Message,
    Released,
    peer_max_pdu,
)
from app.dimse.audit import record_rejected, refuse
from app.dimse.bridge import Bridge, policy_of
from app.dimse.find import handle_find
from app.dimse.message import CommandField
from app.dimse.negotiation import Negotiated, negotiate
from app.dimse.operation import Operation
from app.dimse.pdu import AbortReason, Pdu, PduError, PduType, abort, read_pdu
from app.dimse.retrieve import handle_get, handle_move
from app.dimse.status import Status, with_comment
from app.dimse.store import handle_store, open_sink
from app.services.spool import ReceivedSink
from app.throttled_log import ThrottledLog

log = logging.getLogger(__name__)
silences = ThrottledLog(log, level=logging.INFO)

# Largest P-DATA-TF we receive: big enough for throughput, small enough to bound memory
# per association (one PDU is held at a time).
MAX_PDU = 1 << 20
# Distinct A-ASSOCIATE-RQs whose outcome is remembered (see Sessions._set_up).
SET_UPS_REMEMBERED = 32
SET_UP_BYTES_REMEMBERED = 1 << 16  # 128 contexts take about 10 KB
IDLE = "association aborted: idle for longer than PACS_DIMSE_IDLE_TIMEOUT"

Handler = Callable[[Operation, Bridge], Awaitable[None]]
_LONG: dict[int, Handler] = {
    CommandField.C_FIND_RQ: handle_find,
    CommandField.C_MOVE_RQ: handle_move,
    CommandField.C_GET_RQ: handle_get,
}


class Sessions:
    """The associations of one server: set-up, the association limit, serving."""

    def __init__(self, bridge: Bridge, supported: Sequence[PresentationContext]) -> None:
        self.bridge = bridge
        self.supported = list(supported)
        self.associations = 0
        self._set_ups: dict[bytes, tuple[A_ASSOCIATE, Negotiated, bytes]] = {}

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, port: int
    ) -> None:
        config = self.bridge.config
        timeout = config.limits.request_timeout
        try:
            async with asyncio.timeout(timeout):
                first = await read_pdu(reader, MAX_PDU)
        except TimeoutError:
            why = f"no A-ASSOCIATE-RQ within {timeout:g} s (PACS_DIMSE_REQUEST_TIMEOUT)"
            silences.log(f"DICOM connection closed: {why}", address)
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            silences.log(
                "DICOM connection closed: closed by the peer before an A-ASSOCIATE-RQ", address
            )
            return
        except PduError as exc:
            log.warning("DICOM connection from %s:%d aborted: %s", address, port, exc)
            await _abort(writer, exc.reason)
            return
        if first.type is not PduType.ASSOCIATE_RQ:
            log.warning(
                "DICOM connection from %s:%d aborted: %s before an A-ASSOCIATE-RQ",
                address,
                port,
                first.type.name,
            )
            await _abort(writer, AbortReason.UNEXPECTED_PDU)
            return
        try:
            request, negotiated, accept = self._set_up(first)
        except PduError as exc:
            log.warning("DICOM connection from %s:%d aborted: %s", address, port, exc)
            await _abort(writer, exc.reason)
            return
        calling = str(request.calling_ae_title)
        assoc = Association(
            reader,
            writer,
            peer_ae=calling,
            address=address,
            port=port,
            local_ae=config.ae_title,
            max_pdu=MAX_PDU,
            peer_max_pdu=peer_max_pdu(request),
        )
        log.info(
            "association requested by %s@%s:%d for %s", calling, address, port, config.ae_title
        )
        self.associations += 1
        try:
            if rejection := self._rejection(calling):
                log.warning("association with %s rejected: %s", assoc.peer, rejection.reason)
                record_rejected(self.bridge, assoc, rejection.reason)
                writer.write(acceptor.reject(rejection))
                with contextlib.suppress(OSError):
                    await writer.drain()
                return
            assoc.contexts = dict(negotiated.contexts)
            writer.write(accept)
            refused = [
                UID(str(cx.abstract_syntax)).name for cx in negotiated.results if cx.result != 0
            ]
            note = f"; refused {len(refused)}: {', '.join(refused[:5])}" if refused else ""
            log.info(
                "association with %s accepted: %d presentation contexts%s",
                assoc.peer,
                len(negotiated.contexts),
                note,
            )
            await Session(assoc, self.bridge).run()
        finally:
            self.associations -= 1

    def _set_up(self, pdu: Pdu) -> tuple[A_ASSOCIATE, Negotiated, bytes]:
        """The request of an A-ASSOCIATE-RQ, its negotiation and our A-ASSOCIATE-AC. A
        modality sends the same request every time, and decoding, negotiating and encoding
        128 contexts with pynetdicom's classes takes tens of milliseconds: the last few
        distinct requests are remembered (the outcome depends on the request alone)."""
        cached = self._set_ups.get(pdu.body)
        if cached is None:
            request = acceptor.decode_request(pdu)
            negotiated = negotiate(request, self.supported)
            cached = (request, negotiated, acceptor.accept(request, negotiated, MAX_PDU))
            if len(pdu.body) <= SET_UP_BYTES_REMEMBERED:
                if len(self._set_ups) >= SET_UPS_REMEMBERED:
                    del self._set_ups[next(iter(self._set_ups))]
                self._set_ups[pdu.body] = cached
        return cached

    def _rejection(self, calling: str) -> acceptor.Rejection | None:
        config = self.bridge.config
        allowed = [a.strip() for a in config.required_calling_aes]
        if allowed and calling.strip() not in allowed:
            return acceptor.calling_ae_not_allowed(calling)
        if self.associations > config.max_associations:
            return acceptor.too_many_associations(config.max_associations)
        return None


async def _abort(writer: asyncio.StreamWriter, reason: int) -> None:
    with contextlib.suppress(OSError):
        writer.write(abort(reason=reason))
        await writer.drain()


class Session:
    """The messages of one established association."""

    def __init__(self, assoc: Association, bridge: Bridge) -> None:
        self.assoc = assoc
        self.bridge = bridge
        self.running: asyncio.Task[None] | None = None
        self.current: Operation | None = None
        self._timer: asyncio.Timeout | None = None
        assoc.answers = {}

    def _busy(self) -> bool:
        return self.running is not None and not self.running.done()

    def _deadline(self) -> float | None:
        idle = self.bridge.config.idle_timeout
        return None if self._busy() else asyncio.get_running_loop().time() + idle

    def _finished(self, _: object) -> None:
        # The operation ended while the loop waited without a deadline: idle from now.
        if self._timer is not None and not self._busy():
            self._timer.reschedule(self._deadline())

    async def run(self) -> None:
        assoc = self.assoc
        try:
            await self._loop()
        except Released:
            await self._stop_operation()
            await assoc.release_reply()
            log.info("association with %s released", assoc.peer)
        except Aborted:
            await self._stop_operation()
            log.info("association with %s aborted", assoc.peer)
        except PduError as exc:
            await self._stop_operation()
            log.warning("association with %s aborted: %s", assoc.peer, exc)
            await assoc.abort(reason=exc.reason)
        except TimeoutError:
            await self._stop_operation()
            log.info("%s (%s)", IDLE, assoc.peer)
            await assoc.abort()
        except asyncio.CancelledError:  # the server stops
            await self._stop_operation()
            log.info("association with %s aborted: the server stops", assoc.peer)
            await assoc.abort()
            raise
        finally:
            assoc.fail_waiting(Aborted("the association ended"))
            await assoc.close()

    async def _stop_operation(self) -> None:
        if self._busy():
            assert self.running is not None
            self.running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.running

    async def _loop(self) -> None:
        assoc = self.assoc
        incoming: list[ReceivedSink] = []

        def sink(command: message.Command, context: Context) -> ReceivedSink | None:
            if command.get(message.COMMAND_FIELD) != CommandField.C_STORE_RQ:
                return None
            incoming.append(open_sink(self.bridge, command, assoc.peer_ae, context.transfer_syntax))
            return incoming[-1]

        while True:
            incoming.clear()
            try:
                try:
                    async with asyncio.timeout_at(self._deadline()) as self._timer:
                        received = await assoc.receive(sink)
                finally:
                    self._timer = None
                await self._dispatch(received, incoming[0] if incoming else None)
            finally:
                for spool in incoming:  # unless the store service took it
                    spool.discard()

    async def _dispatch(self, received: Message, sink: ReceivedSink | None) -> None:
        """Answer or start the operation of a received message."""
        assoc = self.assoc
        command = received.command
        field = command.get(message.COMMAND_FIELD)
        if field == CommandField.C_CANCEL_RQ:
            responded_to = command.get(message.MESSAGE_ID_BEING_RESPONDED_TO)
            if self.current is not None and self.current.message_id == responded_to:
                self.current.cancelled = True
            return
        if isinstance(field, int) and field & 0x8000:
            if not assoc.answered(command):
                log.info("association with %s: an answer to no request, ignored", assoc.peer)
            return
        if self._busy():
            raise PduError(
                "a second request while one is in progress "
                "(no asynchronous operations were negotiated)",
                AbortReason.UNEXPECTED_PDU,
            )
        operation = Operation(assoc, received.context, command, received.data)
        if not received.context.as_scp:
            await operation.respond(_response(field), Status.SOP_CLASS_NOT_SUPPORTED)
        elif field == CommandField.C_ECHO_RQ:
            await self._echo(operation)
        elif field == CommandField.C_STORE_RQ and sink is None:
            # Its Command Data Set Type said "no data set": nothing to store (PS3.7 9.3.1.1
            # requires one). It ended the session with an IndexError.
            log.info("C-STORE from %s refused: a request without a data set", assoc.peer)
            refused = with_comment(Status.CANNOT_UNDERSTAND, "a C-STORE-RQ without a data set")
            await operation.respond(CommandField.C_STORE_RSP, refused)
        elif field == CommandField.C_STORE_RQ:
            assert sink is not None
            await handle_store(operation, self.bridge, sink)
        elif isinstance(field, int) and field in _LONG:
            self.current = operation
            self.running = asyncio.create_task(self._long(_LONG[field], operation))
            self.running.add_done_callback(self._finished)
        else:
            raise PduError(
                f"an unsupported DIMSE command 0x{field:04X}"
                if isinstance(field, int)
                else "a command without a Command Field",
                AbortReason.UNRECOGNIZED_PARAMETER,
            )

    async def _long(self, handler: Handler, operation: Operation) -> None:
        name = handler.__name__
        try:
            await handler(operation, self.bridge)
        except (Aborted, ConnectionError, OSError) as exc:
            log.info("association with %s: %s interrupted (%s)", self.assoc.peer, name, exc)
        except Exception:  # our fault: say so, and answer rather than leave the peer waiting
            log.exception("association with %s: %s failed", self.assoc.peer, name)
            with contextlib.suppress(Exception):
                await operation.respond(
                    _response(operation.command.get(message.COMMAND_FIELD)),
                    Status.PROCESSING_FAILURE,
                )
        finally:
            self.current = None

    async def _echo(self, operation: Operation) -> None:
        if not policy_of(self.assoc, self.bridge).allows(DimseService.ECHO):
            log.info("C-ECHO from %s refused: not authorized", self.assoc.peer)
            status = refuse(self.assoc, self.bridge, DimseService.ECHO)
            await operation.respond(CommandField.C_ECHO_RSP, status)
            return
        log.info("C-ECHO from %s", self.assoc.peer)
        await operation.respond(CommandField.C_ECHO_RSP, Status.SUCCESS)


def _response(field: object) -> CommandField:
    """The response's Command Field of a request's (PS3.7 E.1: the request's | 0x8000)."""
    try:
        return CommandField(int(field) | 0x8000)  # type: ignore[call-overload]
    except (ValueError, TypeError):
        return CommandField.C_ECHO_RSP
