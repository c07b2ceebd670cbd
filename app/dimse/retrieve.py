"""C-MOVE and C-GET SCP: send the instances an identifier names, each file as it is stored.

pynetdicom drives the sub-operations: a handler yields the destination (C-MOVE only), the
number of instances, then one `(Pending, dataset)` per instance, and pynetdicom sends each
with `send_c_store` on the destination association (C-MOVE, one association per request)
or on the requestor's own association (C-GET), counting completed, failed and warning
sub-operations and choosing the final status (PS3.4 C.4.2.1.5, C.4.3.1.4): Success when all
succeeded, Warning (B000) when some failed, A702 when all failed, Cancel (FE00) on C-CANCEL.

pynetdicom only passes datasets on, but a dataset would be decoded and encoded again. So
each instance travels as a `StoredFile` placeholder, and `send_c_store` of the association
that sends is wrapped to send the file instead: the blob is downloaded to a spool file and
sent from disk in chunks (`STORE_SEND_CHUNKED_DATASET`), its dataset bytes as stored. That
needs a presentation context in the stored transfer syntax; when the peer accepted only
the other native little endian syntax, the file is read with pydicom and pynetdicom
converts it. Anything else fails that sub-operation: the archive does not transcode.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.status import code_to_category

from app.auth.ae_policy import DimseService
from app.auth.principal import Access
from app.dicom.transfer_syntax import NATIVE_LITTLE_ENDIAN
from app.dimse.audit import record_transfer, refuse
from app.dimse.bridge import Bridge, access_for, peer, policy_of
from app.dimse.contexts import GET_MODELS, MOVE_MODELS, sending_contexts
from app.dimse.status import Status, with_comment
from app.query.identifier import Model, parse_retrieve_identifier
from app.query.matching import QueryError
from app.services.errors import StorageInconsistent
from app.services.ports import StoredInstance

log = logging.getLogger(__name__)


class StoredFile(Dataset):
    """Stands in for a stored instance among the datasets pynetdicom sends; the wrapped
    `send_c_store` sends `path` instead. SOPInstanceUID is set for pynetdicom's list of
    failed instances."""

    def __init__(self, instance: StoredInstance, path: Path | None, error: str = "") -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self._stored_instance = instance
        self._stored_path = path
        self._stored_error = error


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
    found = _instances(event, bridge, model, access_for(event.assoc, policy), "C-MOVE")
    if isinstance(found, Dataset):
        yield from _status_only(answer_only, found)
        return
    tally = Tally()
    address = (destination.host, destination.port)
    tls: dict[str, Any] = {}
    if destination.tls:
        # pynetdicom wraps the socket with (context, server host name for SNI).
        tls["tls_args"] = (bridge.config.tls_move_context, destination.host)
    options = {
        "contexts": sending_contexts(found),
        "evt_handlers": [(evt.EVT_ESTABLISHED, _wrap_sender, [tally])],
        **tls,
    }
    yield (*address, options)
    try:  # pynetdicom drops the generator after a count of 0: still audited
        yield len(found)
        yield from _send_each(event, bridge, found, "C-MOVE")
    finally:  # also when pynetdicom stops early (cancel, abort)
        via = " over TLS" if destination.tls else ""
        log.info("C-MOVE from %s to %s (%s:%d%s): %s", who, name, *address, via, tally)
        failure = tally.failure(len(found))
        record_transfer(event.assoc, bridge, found, destination=name, failure=failure)


def _status_only(answer_only: tuple[str, int], status: Dataset) -> Iterator[Any]:
    """A C-MOVE answered with `status`: a status with a comment can only follow a
    destination and a count, so the association goes to the answer-only listener."""
    yield (*answer_only, {"contexts": sending_contexts(())})
    yield 1
    yield status, None


def handle_get(event: Event, bridge: Bridge) -> Iterator[Any]:
    model = GET_MODELS[str(event.request.AffectedSOPClassUID)]
    policy = policy_of(event.assoc, bridge)
    if policy.allows(DimseService.GET):
        found = _instances(event, bridge, model, access_for(event.assoc, policy), "C-GET")
    else:
        log.info("C-GET from %s refused: not authorized", peer(event.assoc))
        found = refuse(event.assoc, bridge, DimseService.GET)
    if isinstance(found, Dataset):
        yield 1
        yield found, None
        return
    tally = Tally()
    assoc = event.assoc
    restore = _wrap_sender(event, tally)
    try:  # pynetdicom drops the generator after a count of 0: still audited
        yield len(found)
        yield from _send_each(event, bridge, found, "C-GET")
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
    event: Event, bridge: Bridge, instances: list[StoredInstance], operation: str
) -> Iterator[Any]:
    for instance in instances:
        if event.is_cancelled:
            log.info("%s cancelled by %s", operation, peer(event.assoc))
            yield Status.CANCEL, None  # pynetdicom adds the remaining and failed counts
            return
        path: Path | None = None
        error = ""
        try:
            path = bridge.run(_download(bridge, instance))
        except StorageInconsistent as exc:
            error = str(exc)
        except Exception:
            log.exception("cannot read instance %s from storage", instance.sop_instance_uid)
            error = f"cannot read instance {instance.sop_instance_uid} from storage"
        try:
            yield Status.PENDING, StoredFile(instance, path, error)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)


async def _download(bridge: Bridge, instance: StoredInstance) -> Path:
    """The stored file in a spool file, checked against the SHA-256 recorded at ingest."""
    folder = bridge.archive.store.spool_dir
    path = folder / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in bridge.archive.retrieve.content(instance):
            digest.update(chunk)
            await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    handle.close()
    if digest.hexdigest() != instance.sha256:
        path.unlink(missing_ok=True)
        raise StorageInconsistent(
            f"the stored file of instance {instance.sop_instance_uid} does not match its "
            "checksum; the archive needs a consistency check"
        )
    return path


def _wrap_sender(event: Event, tally: Tally) -> Callable[[], None]:
    """Make `send_c_store` of `event.assoc` send `StoredFile`s as stored files; returns a
    function that undoes it. Bound to EVT_ESTABLISHED of a C-MOVE destination association,
    called with the C-GET request's event for a C-GET."""
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
            status = _send_stored(
                target, original, dataset, msg_id, priority, originator_aet, originator_id
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


def _read_whole(path: Path, instance: StoredInstance) -> Dataset:
    """The stored file read and every value decoded, for pynetdicom to re-encode. pynetdicom
    logs a failure's message (pydicom's may quote values): ours names the type only."""
    try:
        ds = dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
    except Exception as exc:
        raise ValueError(
            f"instance {instance.sop_instance_uid} cannot be converted for the peer: its stored "
            f"data is damaged ({type(exc).__name__})"
        ) from None
    return ds


def _send_stored(
    assoc: Association, send: Callable[..., Dataset], stored: StoredFile, *args: Any
) -> Dataset:
    """`send` (the original `send_c_store` of `assoc`) of the file of `stored`; `args` are
    the rest of `send_c_store`'s arguments."""
    path = stored._stored_path
    if path is None:
        raise RuntimeError(stored._stored_error or "the stored file could not be read")
    instance = stored._stored_instance
    sop_class, syntax = instance.sop_class_uid, instance.transfer_syntax_uid
    if _accepted(assoc, sop_class, syntax):
        return send(path, *args)  # chunked from disk, the dataset bytes as stored
    if syntax in NATIVE_LITTLE_ENDIAN and any(
        _accepted(assoc, sop_class, other) for other in NATIVE_LITTLE_ENDIAN
    ):
        return send(_read_whole(path, instance), *args)  # pynetdicom converts the syntax
    raise ValueError(
        f"the peer accepted no presentation context for {UID(sop_class).name} in "
        f"{UID(syntax).name} (the archive does not transcode)"
    )


def _accepted(assoc: Association, sop_class: str, syntax: str) -> bool:
    """Whether we may send `sop_class` in `syntax` on `assoc`."""
    return any(
        cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax and cx.as_scu
        for cx in assoc.accepted_contexts
    )
