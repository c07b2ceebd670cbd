"""C-MOVE and C-GET SCP: send the instances an identifier names, each file as it is stored.

C-MOVE opens an association of our own with the destination (`association.associate`),
C-GET sends on the requestor's association (the SCP role it proposed for the storage SOP
classes). Each instance goes as the file the delivery service gives
(app/services/delivery.py), in a transfer syntax the peer accepted for its SOP class: the
stored file itself when the peer accepts its syntax, a transcoded copy otherwise; a
sub-operation fails only when no accepted syntax can be produced or the stored file is
missing or damaged. After each sub-operation a Pending response counts what is left and
what was done; the final status (PS3.4 C.4.2.1.5, C.4.3.1.4) is Success when all
succeeded, Warning (B000) when some failed, A702 when all failed, Cancel (FE00) on
C-CANCEL, with the Failed SOP Instance UID List when any failed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.status import code_to_category

from app.auth.ae_policy import DimseService
from app.auth.principal import Access
from app.dimse import message, sending
from app.dimse.association import Aborted, Association, AssociationRejected, associate
from app.dimse.audit import record_transfer, refuse
from app.dimse.bridge import Bridge, access_for, policy_of
from app.dimse.contexts import GET_MODELS, MOVE_MODELS, sending_contexts
from app.dimse.message import Command, CommandField
from app.dimse.operation import Operation
from app.dimse.pdu import PduError
from app.dimse.status import Status, with_comment
from app.query.identifier import Model, parse_retrieve_identifier
from app.query.matching import QueryError
from app.services.delivery import LocalFile
from app.services.errors import ArchiveError
from app.services.ports import StoredInstance
from app.settings import MoveDestination

log = logging.getLogger(__name__)

# Our largest PDU on the associations we open (we read only their responses).
MAX_PDU = 1 << 16
# How long a destination has to answer our A-RELEASE-RQ.
RELEASE_TIMEOUT = 5.0
# The counts of a request answered before any sub-operation.
_NONE_DONE: Command = {message.COMPLETED: 0, message.FAILED: 0, message.WARNING: 0}


@dataclass
class Tally:
    """What the sub-operations did: the counts of the responses and the log line."""

    total: int
    completed: int = 0
    warning: int = 0
    failed: int = 0
    failed_uids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, code: int, sop_instance_uid: str) -> None:
        category = code_to_category(code)
        if category == "Success":
            self.completed += 1
        elif category == "Warning":
            self.warning += 1
        else:
            self.fail(sop_instance_uid)

    def fail(self, sop_instance_uid: str, error: str = "") -> None:
        self.failed += 1
        self.failed_uids.append(sop_instance_uid)
        if error:
            self.errors.append(f"{sop_instance_uid}: {error}")

    @property
    def done(self) -> int:
        return self.completed + self.warning + self.failed

    def counts(self, remaining: bool = True) -> Command:
        counts: Command = {
            message.COMPLETED: self.completed,
            message.FAILED: self.failed,
            message.WARNING: self.warning,
        }
        if remaining:
            counts[message.REMAINING] = self.total - self.done
        return counts

    def final_status(self) -> int:
        if not self.failed and not self.warning:
            return Status.SUCCESS
        if not self.completed and not self.warning:
            return Status.UNABLE_TO_PERFORM_SUBOPERATIONS
        return Status.WARNING

    def failed_list(self) -> Dataset | None:
        if not self.failed_uids:
            return None
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = self.failed_uids
        return identifier

    def __str__(self) -> str:
        text = f"{self.completed} sent, {self.warning} with warnings, {self.failed} failed"
        return f"{text} ({'; '.join(self.errors[:3])})" if self.errors else text

    def failure(self) -> str:
        """Why not every sub-operation succeeded, for the audit trail ("" if they did)."""
        if self.failed or self.completed + self.warning < self.total:
            return f"{self.completed + self.warning} of {self.total} sent: {self}"
        return ""


async def handle_move(operation: Operation, bridge: Bridge) -> None:
    assoc = operation.assoc
    who = assoc.peer

    async def answer(status: int | Dataset, extra: Command | None = None) -> None:
        await operation.respond(CommandField.C_MOVE_RSP, status, None, extra or _NONE_DONE)

    model = MOVE_MODELS.get(operation.sop_class)
    if model is None:
        await answer(Status.SOP_CLASS_NOT_SUPPORTED)
        return
    # The policy first: a caller that may not move must not learn from A801 which
    # destinations exist, nor make us associate with one.
    policy = policy_of(assoc, bridge)
    if not policy.allows(DimseService.MOVE):
        log.info("C-MOVE from %s refused: not authorized", who)
        await answer(refuse(assoc, bridge, DimseService.MOVE))
        return
    name = str(operation.command.get(message.MOVE_DESTINATION, "")).strip()
    destination = bridge.config.move_destinations.get(name)
    if destination is None:
        log.info("C-MOVE from %s refused: unknown move destination %r", who, name)
        await answer(Status.MOVE_DESTINATION_UNKNOWN)
        return
    access = access_for(assoc, policy)
    found = await _instances(operation, bridge, model, access, "C-MOVE")
    if isinstance(found, Dataset):
        await answer(found)
        return
    address = (destination.host, destination.port)
    via = " over TLS" if destination.tls else ""
    tally = Tally(len(found))
    if not found:
        log.info("C-MOVE from %s to %s (%s:%d%s): %s", who, name, *address, via, tally)
        record_transfer(assoc, bridge, found, destination=name, failure="")
        await answer(Status.SUCCESS)
        return
    try:
        sub = await _associate(bridge, name, destination, found)
    except (OSError, AssociationRejected) as exc:
        reason = _reason(exc)
        log.warning(
            "C-MOVE from %s: cannot associate with %s (%s:%d%s): %s",
            *(who, name, *address, via, reason),
        )
        record_transfer(assoc, bridge, found, destination=name, failure=reason)
        await answer(with_comment(Status.MOVE_DESTINATION_UNKNOWN, f"cannot associate with {name}"))
        return
    originator = (assoc.peer_ae, operation.message_id)
    try:
        status = await _send_all(operation, bridge, sub, found, access, tally, originator)
    finally:
        await sub.release(RELEASE_TIMEOUT)
        log.info("C-MOVE from %s to %s (%s:%d%s): %s", who, name, *address, via, tally)
        record_transfer(assoc, bridge, found, destination=name, failure=tally.failure())
    await operation.respond(
        CommandField.C_MOVE_RSP, status, tally.failed_list(), tally.counts(status == Status.CANCEL)
    )


async def handle_get(operation: Operation, bridge: Bridge) -> None:
    assoc = operation.assoc
    model = GET_MODELS.get(operation.sop_class)
    if model is None:
        await operation.respond(CommandField.C_GET_RSP, Status.SOP_CLASS_NOT_SUPPORTED)
        return
    policy = policy_of(assoc, bridge)
    access = access_for(assoc, policy)
    found: list[StoredInstance] | Dataset
    if policy.allows(DimseService.GET):
        found = await _instances(operation, bridge, model, access, "C-GET")
    else:
        log.info("C-GET from %s refused: not authorized", assoc.peer)
        found = refuse(assoc, bridge, DimseService.GET)
    if isinstance(found, Dataset):
        await operation.respond(CommandField.C_GET_RSP, found, None, _NONE_DONE)
        return
    tally = Tally(len(found))
    try:
        status = await _send_all(operation, bridge, assoc, found, access, tally, None)
    finally:
        log.info("C-GET from %s: %s", assoc.peer, tally)
        record_transfer(assoc, bridge, found, destination=None, failure=tally.failure())
    await operation.respond(
        CommandField.C_GET_RSP, status, tally.failed_list(), tally.counts(status == Status.CANCEL)
    )


async def _send_all(  # noqa: PLR0917 (one call per operation, each argument named)
    operation: Operation,
    bridge: Bridge,
    target: Association,
    found: list[StoredInstance],
    access: Access,
    tally: Tally,
    originator: tuple[str, int] | None,
) -> int:
    """Send each instance on `target`, a Pending response after each; the final status.

    Only one C-STORE may be outstanding (no asynchronous operations are negotiated), so
    the next instance is made ready (found, read) while the peer stores the current one:
    its answer is followed at once by the next request, not by our disk and CPU. The
    Pending responses wait too: C-GET's go out with the next request, C-MOVE's to the
    requestor once the next request is on its way to the destination."""
    field = CommandField(int(operation.command[message.COMMAND_FIELD]) | 0x8000)
    operation_name = "C-MOVE" if field == CommandField.C_MOVE_RSP else "C-GET"
    ahead: asyncio.Task[_Ready] | None = None

    def read_ahead(index: int) -> Callable[[], None]:
        def start() -> None:
            nonlocal ahead
            if target is not operation.assoc:
                operation.assoc.flush_soon()
            if index < len(found) and not operation.cancelled:
                ahead = asyncio.create_task(_ready(bridge, target, found[index], access))

        return start

    try:
        for index, instance in enumerate(found):
            if operation.cancelled:
                log.info("%s cancelled by %s", operation_name, operation.assoc.peer)
                return Status.CANCEL
            if target.closed and target is not operation.assoc:
                tally.fail(instance.sop_instance_uid, "the destination ended the association")
                await operation.respond(field, Status.PENDING, None, tally.counts())
                continue
            try:
                if ahead is not None:
                    task, ahead = ahead, None
                    ready = await task
                else:
                    ready = await _ready(bridge, target, instance, access)
                code = await _send_one(bridge, target, ready, originator, read_ahead(index + 1))
            except ValueError as exc:
                tally.fail(instance.sop_instance_uid, str(exc))
            else:
                tally.add(code, instance.sop_instance_uid)
            # Held back: it goes out with or after the next C-STORE-RQ (or the final response).
            await operation.respond(field, Status.PENDING, None, tally.counts(), more=True)
        return tally.final_status()
    finally:
        if ahead is not None:
            _drop(ahead)


@dataclass(frozen=True)
class _Ready:
    """An instance ready to be sent: the local file (discarded once sent) and its data."""

    local: LocalFile
    outgoing: sending.Outgoing


def _drop(ahead: asyncio.Task[_Ready]) -> None:
    """An instance made ready that will not be sent: its copy, if any, is removed."""
    if not ahead.done():
        ahead.add_done_callback(_drop)
        ahead.cancel()
    elif not ahead.cancelled() and ahead.exception() is None:
        ahead.result().local.discard()


async def _ready(
    bridge: Bridge, target: Association, instance: StoredInstance, access: Access
) -> _Ready:
    """`instance` as a file in a syntax `target` accepts, its data set read; ValueError
    (why) when it cannot be sent."""
    accepted = sending.accepted_syntaxes(target, instance.sop_class_uid)
    try:
        # The stored file when the peer accepts its syntax, else a transcoded copy.
        local = await bridge.archive.delivery.local_file(access, instance, accepted)
    except ArchiveError as exc:
        log.warning("instance %s not sent: %s", instance.sop_instance_uid, exc)
        raise ValueError(str(exc)) from None
    except Exception:
        log.exception("cannot read instance %s from storage", instance.sop_instance_uid)
        raise ValueError(f"cannot read instance {instance.sop_instance_uid} from storage") from None
    try:
        context = sending.context_for(target, instance.sop_class_uid, local.transfer_syntax_uid)
        if context is None:  # local_file gives an accepted syntax
            raise ValueError(f"no accepted context for {local.transfer_syntax_uid}")
        try:
            outgoing = sending.read_ahead(target, context, local.path, instance.sop_instance_uid)
        except OSError as exc:
            log.warning("instance %s not sent: %s", instance.sop_instance_uid, exc)
            raise ValueError(f"cannot read instance {instance.sop_instance_uid}") from None
    except BaseException:
        local.discard()
        raise
    return _Ready(local, outgoing)


async def _send_one(
    bridge: Bridge,
    target: Association,
    ready: _Ready,
    originator: tuple[str, int] | None,
    sent: Callable[[], None],
) -> int:
    """The status code of the C-STORE of `ready` on `target`; ValueError (why) when it
    could not be sent. `sent`: called once the request is written."""
    try:
        # A peer that never answers must not hold the request for ever.
        async with asyncio.timeout(bridge.config.idle_timeout):
            answer = await sending.send(
                target,
                ready.outgoing,
                message_id=target.next_message_id(),
                originator=originator,
                sent=sent,
            )
    except TimeoutError:
        await target.abort()
        why = f"no C-STORE response within {bridge.config.idle_timeout:g} s"
        if target.answers is not None:  # C-GET: the requestor's own association
            raise Aborted(why) from None
        raise ValueError(why) from None
    except (Aborted, PduError, ConnectionError) as exc:
        if target.answers is not None:  # C-GET: the requestor's own association ended
            raise
        await target.abort()
        raise ValueError(f"the destination ended the association ({exc})") from None
    finally:
        ready.local.discard()
    return int(answer.get(message.STATUS, 0xC000))


async def _instances(
    operation: Operation, bridge: Bridge, model: Model, access: Access, name: str
) -> list[StoredInstance] | Dataset:
    """The instances of the caller's tenant the identifier names, or the failure status
    to answer with."""
    who = operation.assoc.peer
    try:
        query = parse_retrieve_identifier(operation.identifier(), model)
    except QueryError as exc:
        log.info("%s from %s refused: %s", name, who, exc.loggable)
        return with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    except Exception as exc:  # pydicom raises many types for an undecodable identifier
        log.info("%s from %s: cannot decode the identifier (%s)", name, who, type(exc).__name__)
        return with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "cannot decode")
    try:
        found = await bridge.archive.retrieve.instances_matching(access, query)
    except Exception:
        log.exception("%s from %s: the search failed", name, who)
        return with_comment(Status.PROCESSING_FAILURE, "the search failed")
    log.info("%s %s from %s: %d instances", name, query.level, who, len(found))
    return found


async def _associate(
    bridge: Bridge, name: str, destination: MoveDestination, found: list[StoredInstance]
) -> Association:
    config = bridge.config
    return await associate(
        destination.host,
        destination.port,
        calling_ae=config.ae_title,
        called_ae=name,
        contexts=sending_contexts(found),
        answer_within=config.limits.request_timeout,
        max_pdu=MAX_PDU,
        ssl_context=config.tls_move_context if destination.tls else None,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "reason", None) or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc)
