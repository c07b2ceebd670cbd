"""C-MOVE and C-GET SCP: send the instances an identifier names, each file as it is stored.

pynetdicom drives the sub-operations: a handler yields the destination (C-MOVE only), the
number of instances, then one `(Pending, dataset)` per instance, and pynetdicom sends each
with `send_c_store` on the destination association (C-MOVE, one association per request)
or on the requestor's own association (C-GET), counting completed, failed and warning
sub-operations and choosing the final status (PS3.4 C.4.2.1.5, C.4.3.1.4): Success when all
succeeded, Warning (B000) when some failed, A702 when all failed, Cancel (FE00) on C-CANCEL.

pynetdicom only passes datasets on, but a dataset would be decoded and encoded again. So
each instance travels as a `StoredFile` placeholder, and `send_c_store` of the association
that sends is wrapped to send a file instead, from disk in chunks
(`STORE_SEND_CHUNKED_DATASET`): the one the delivery service gives (app/services/delivery.py),
in a transfer syntax the peer accepted for the instance's SOP class. That is the stored file
itself when the peer accepts its syntax, a transcoded copy otherwise; a sub-operation fails
only when no accepted syntax can be produced or the stored file is missing or damaged.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.status import code_to_category

from app.auth.ae_policy import DimseService
from app.auth.principal import Access
from app.dimse import message, sending
from app.dimse.association import Association as DestinationAssociation
from app.dimse.association import AssociationRejected, associate
from app.dimse.audit import record_transfer, refuse
from app.dimse.bridge import Bridge, access_for, peer, policy_of
from app.dimse.contexts import GET_MODELS, MOVE_MODELS, sending_contexts
from app.dimse.nodelay import set_no_delay
from app.dimse.status import Status, with_comment
from app.query.identifier import Model, parse_retrieve_identifier
from app.query.matching import QueryError
from app.services.errors import ArchiveError
from app.services.ports import StoredInstance
from app.settings import MoveDestination

log = logging.getLogger(__name__)

# Our largest PDU on the associations we open (we read only their responses).
MAX_PDU = 1 << 16
# How long a destination has to answer our A-RELEASE-RQ.
RELEASE_TIMEOUT = 5.0

# Bound to every association a C-MOVE opens (to its destination or the answer-only listener).
OUTGOING_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, set_no_delay)]


class StoredFile(Dataset):
    """Stands in for a stored instance among the datasets pynetdicom sends; the wrapped
    `send_c_store` sends its file instead, read with `access` (the requestor's).
    SOPInstanceUID is set for pynetdicom's list of failed instances."""

    def __init__(self, instance: StoredInstance, access: Access) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self._stored_instance = instance
        self._stored_access = access


@dataclass
class Tally:
    """What the sub-operations did, for the log line of the request."""

    completed: int = 0
    warning: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, status: Dataset) -> None:
        category = code_to_category(int(status.get("Status", 0xC000)))
        if category == "Success":
            self.completed += 1
        elif category == "Warning":
            self.warning += 1
        else:
            self.failed += 1

    def __str__(self) -> str:
        text = f"{self.completed} sent, {self.warning} with warnings, {self.failed} failed"
        return f"{text} ({'; '.join(self.errors[:3])})" if self.errors else text

    def failure(self, total: int) -> str:
        """Why not every sub-operation succeeded, for the audit trail ("" if they did)."""
        if self.failed or self.completed + self.warning < total:
            return f"{self.completed + self.warning} of {total} sent: {self}"
        return ""


def handle_move(event: Event, bridge: Bridge, answer_only: tuple[str, int]) -> Iterator[Any]:
    """`answer_only`: where an answer with a status alone goes (see `answer_only.py`)."""
    model = MOVE_MODELS[str(event.request.AffectedSOPClassUID)]
    who = peer(event.assoc)
    # The policy first: a caller that may not move must not learn from A801 which
    # destinations exist, nor make us associate with one.
    policy = policy_of(event.assoc, bridge)
    if not policy.allows(DimseService.MOVE):
        log.info("C-MOVE from %s refused: not authorized", who)
        yield from _status_only(answer_only, refuse(event.assoc, bridge, DimseService.MOVE))
        return
    name = (event.move_destination or "").strip()
    destination = bridge.config.move_destinations.get(name)
    if destination is None:
        log.info("C-MOVE from %s refused: unknown move destination %r", who, name)
        yield None, None  # pynetdicom answers A801 Move Destination Unknown
        return
    access = access_for(event.assoc, policy)
    found = _instances(event, bridge, model, access, "C-MOVE")
    if isinstance(found, Dataset):
        yield from _status_only(answer_only, found)
        return
    tally = Tally()
    address = (destination.host, destination.port)
    via = " over TLS" if destination.tls else ""
    try:
        sub = bridge.run(_associate(bridge, name, destination, found))
    except (OSError, AssociationRejected) as exc:
        reason = _reason(exc)
        log.warning(
            "C-MOVE from %s: cannot associate with %s (%s:%d%s): %s",
            *(who, name, *address, via, reason),
        )
        record_transfer(event.assoc, bridge, found, destination=name, failure=reason)
        yield from _status_only(
            answer_only,
            with_comment(Status.MOVE_DESTINATION_UNKNOWN, f"cannot associate with {name}"),
        )
        return
    # pynetdicom still answers the C-MOVE request: it "sends" each instance on an
    # association with the answer-only listener, whose send_c_store sends it on ours.
    options = {
        "contexts": sending_contexts(()),
        "evt_handlers": [
            *OUTGOING_HANDLERS,
            (evt.EVT_ESTABLISHED, _wrap_sender, [bridge, tally, sub]),
        ],
    }
    yield (*answer_only, options)
    try:  # pynetdicom drops the generator after a count of 0: still audited
        yield len(found)
        yield from _send_each(event, found, access, "C-MOVE")
    finally:  # also when pynetdicom stops early (cancel, abort)
        bridge.run(sub.release(RELEASE_TIMEOUT))
        log.info("C-MOVE from %s to %s (%s:%d%s): %s", who, name, *address, via, tally)
        failure = tally.failure(len(found))
        record_transfer(event.assoc, bridge, found, destination=name, failure=failure)


async def _associate(
    bridge: Bridge, name: str, destination: MoveDestination, found: list[StoredInstance]
) -> DestinationAssociation:
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


def _status_only(answer_only: tuple[str, int], status: Dataset) -> Iterator[Any]:
    """A C-MOVE answered with `status`: a status with a comment can only follow a
    destination and a count, so the association goes to the answer-only listener."""
    options = {
        "contexts": sending_contexts(()),
        "evt_handlers": OUTGOING_HANDLERS,
    }
    yield (*answer_only, options)
    yield 1
    yield status, None


def handle_get(event: Event, bridge: Bridge) -> Iterator[Any]:
    model = GET_MODELS[str(event.request.AffectedSOPClassUID)]
    policy = policy_of(event.assoc, bridge)
    access = access_for(event.assoc, policy)
    if policy.allows(DimseService.GET):
        found = _instances(event, bridge, model, access, "C-GET")
    else:
        log.info("C-GET from %s refused: not authorized", peer(event.assoc))
        found = refuse(event.assoc, bridge, DimseService.GET)
    if isinstance(found, Dataset):
        yield 1
        yield found, None
        return
    tally = Tally()
    assoc = event.assoc
    restore = _wrap_sender(event, bridge, tally)
    try:  # pynetdicom drops the generator after a count of 0: still audited
        yield len(found)
        yield from _send_each(event, found, access, "C-GET")
    finally:  # also when pynetdicom stops early (cancel, abort)
        restore()
        log.info("C-GET from %s: %s", peer(assoc), tally)
        failure = tally.failure(len(found))
        record_transfer(assoc, bridge, found, destination=None, failure=failure)


def _instances(
    event: Event, bridge: Bridge, model: Model, access: Access, operation: str
) -> list[StoredInstance] | Dataset:
    """The instances of the caller's tenant the identifier names, or the failure status
    to answer with."""
    who = peer(event.assoc)
    try:
        query = parse_retrieve_identifier(event.identifier, model)
    except QueryError as exc:
        log.info("%s from %s refused: %s", operation, who, exc.loggable)
        return with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    except Exception as exc:  # pydicom raises many types for an undecodable identifier
        log.info(
            "%s from %s: cannot decode the identifier (%s)", operation, who, type(exc).__name__
        )
        return with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "cannot decode")
    try:
        found = bridge.run(bridge.archive.retrieve.instances_matching(access, query))
    except Exception:
        log.exception("%s from %s: the search failed", operation, who)
        return with_comment(Status.PROCESSING_FAILURE, "the search failed")
    log.info("%s %s from %s: %d instances", operation, query.level, who, len(found))
    return found


def _send_each(
    event: Event, instances: list[StoredInstance], access: Access, operation: str
) -> Iterator[Any]:
    for instance in instances:
        if event.is_cancelled:
            log.info("%s cancelled by %s", operation, peer(event.assoc))
            yield Status.CANCEL, None  # pynetdicom adds the remaining and failed counts
            return
        yield Status.PENDING, StoredFile(instance, access)


def _wrap_sender(
    event: Event, bridge: Bridge, tally: Tally, sub: DestinationAssociation | None = None
) -> Callable[[], None]:
    """Make `send_c_store` of `event.assoc` send `StoredFile`s as stored files, on `sub`
    (our own association with a C-MOVE destination) when given; returns a function that
    undoes it. Bound to EVT_ESTABLISHED of a C-MOVE's carrier association, called with the
    C-GET request's event for a C-GET."""
    target = event.assoc
    original = target.send_c_store

    def send_c_store(
        dataset: Any,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        if not isinstance(dataset, StoredFile):
            return original(dataset, msg_id, priority, originator_aet, originator_id)
        try:
            if sub is not None:
                originator = (originator_aet or "", originator_id or 0)
                status = bridge.run(_send_on(sub, bridge, dataset, msg_id, originator))
            else:
                status = _send_stored(
                    target,
                    bridge,
                    original,
                    dataset,
                    *(msg_id, priority, originator_aet, originator_id),
                )
        except Exception as exc:
            tally.failed += 1
            tally.errors.append(f"{dataset.SOPInstanceUID}: {exc}")
            raise
        tally.add(status)
        return status

    target.send_c_store = send_c_store  # type: ignore[method-assign]

    def restore() -> None:
        del target.send_c_store

    return restore


def _send_stored(
    assoc: Association,
    bridge: Bridge,
    send: Callable[..., Dataset],
    stored: StoredFile,
    *args: Any,
) -> Dataset:
    """`send` (the original `send_c_store` of `assoc`) of the file the delivery service
    gives for `stored`: as stored, or transcoded to a syntax the peer accepted; `args` are
    the rest of `send_c_store`'s arguments."""
    instance = stored._stored_instance
    accepted = _accepted_syntaxes(assoc, instance.sop_class_uid)
    delivery, access = bridge.archive.delivery, stored._stored_access
    try:
        local = None
        if instance.transfer_syntax_uid in accepted:  # the usual case: without the event loop
            local = delivery.stored_file(access, instance)
        if local is None:
            local = bridge.run(delivery.local_file(access, instance, accepted))
    except ArchiveError as exc:
        log.warning("instance %s not sent: %s", instance.sop_instance_uid, exc)
        raise ValueError(str(exc)) from None
    except Exception:
        log.exception("cannot read instance %s from storage", instance.sop_instance_uid)
        raise ValueError(f"cannot read instance {instance.sop_instance_uid} from storage") from None
    try:
        return send(local.path, *args)  # chunked from disk, the dataset bytes as they are
    finally:
        local.discard()


async def _send_on(
    sub: DestinationAssociation,
    bridge: Bridge,
    stored: StoredFile,
    message_id: int,
    originator: tuple[str, int],
) -> Dataset:
    """Send the file the delivery service gives for `stored` on `sub`; its status."""
    instance = stored._stored_instance
    accepted = sending.accepted_syntaxes(sub, instance.sop_class_uid)
    delivery, access = bridge.archive.delivery, stored._stored_access
    try:
        local = None
        if instance.transfer_syntax_uid in accepted:
            local = delivery.stored_file(access, instance)
        if local is None:
            local = await delivery.local_file(access, instance, accepted)
    except ArchiveError as exc:
        log.warning("instance %s not sent: %s", instance.sop_instance_uid, exc)
        raise ValueError(str(exc)) from None
    except Exception:
        log.exception("cannot read instance %s from storage", instance.sop_instance_uid)
        raise ValueError(f"cannot read instance {instance.sop_instance_uid} from storage") from None
    try:
        context = sending.context_for(sub, instance.sop_class_uid, local.transfer_syntax_uid)
        if context is None:  # local_file gives an accepted syntax
            raise ValueError(f"no context for {local.transfer_syntax_uid}")
        answer = await sending.send_file(
            sub,
            context,
            local.path,
            sop_instance_uid=instance.sop_instance_uid,
            message_id=message_id,
            originator=originator,
        )
    finally:
        local.discard()
    status = Dataset()
    status.Status = int(answer.get(message.STATUS, 0xC000))
    comment = answer.get(message.ERROR_COMMENT)
    if isinstance(comment, str) and comment:
        status.ErrorComment = comment
    return status


def _accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """The transfer syntaxes we may send `sop_class` in on `assoc`, in the order accepted."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu
    ]
