"""A DICOM node as a forwarding destination: the instances of a job C-STOREd on one
association of our own (C-STORE SCU), as C-MOVE sends them (app/dimse/retrieve.py).

Per SOP class the association proposes the stored transfer syntaxes and both little endian
ones (app/dimse/contexts.py `sending_contexts`): an instance goes as its stored file when
the peer accepts that syntax, else transcoded by the delivery service to one it accepted
(a JPEG 2000 study to a peer that takes only uncompressed data). A peer that cannot be
reached, rejects the association, aborts it or does not answer within the timeout makes
the attempt fail (tried again later); a failure status of a C-STORE is a refusal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pynetdicom.status import code_to_category

from app.auth.principal import Access
from app.dimse import message, sending
from app.dimse.association import Aborted, Association, AssociationRejected, associate
from app.dimse.contexts import sending_contexts
from app.dimse.pdu import PduError
from app.services.delivery import Delivery
from app.services.errors import ArchiveError
from app.services.forward_rules import DicomNode
from app.services.forwarding import DestinationUnavailable, Sent
from app.services.ports import StoredInstance

log = logging.getLogger(__name__)

# Our largest PDU (we read only responses).
MAX_PDU = 1 << 16


class DicomSender:
    def __init__(
        self, node: DicomNode, delivery: Delivery, *, calling_ae: str, timeout: float
    ) -> None:
        self.node = node
        self.delivery = delivery
        self.calling_ae = calling_ae
        self.timeout = timeout

    async def send(self, access: Access, instances: Sequence[StoredInstance]) -> Sent:
        node = self.node
        try:
            assoc = await associate(
                node.host,
                node.port,
                calling_ae=self.calling_ae,
                called_ae=node.ae_title,
                contexts=sending_contexts(instances),
                answer_within=self.timeout,
                max_pdu=MAX_PDU,
            )
        except OSError as exc:
            raise DestinationUnavailable(
                f"cannot connect to {node}: {exc.strerror or exc}"
            ) from None
        except AssociationRejected as exc:
            raise DestinationUnavailable(f"{node} did not accept an association: {exc}") from None
        sent = Sent(len(instances))
        try:
            for instance in instances:
                await self._send_one(access, assoc, instance, sent)
        finally:
            if not assoc.closed:
                await assoc.release(self.timeout)
        return sent

    async def close(self) -> None:
        pass

    async def _send_one(
        self, access: Access, assoc: Association, instance: StoredInstance, sent: Sent
    ) -> None:
        uid = instance.sop_instance_uid
        accepted = sending.accepted_syntaxes(assoc, instance.sop_class_uid)
        if not accepted:
            sent.refuse(f"{uid}: {self.node} accepted no context for its SOP class")
            return
        try:
            local = await self.delivery.local_file(access, instance, accepted)
        except ArchiveError as exc:
            sent.refuse(f"{uid}: {exc}")
            return
        try:
            context = sending.context_for(assoc, instance.sop_class_uid, local.transfer_syntax_uid)
            if context is None:  # local_file gives an accepted syntax
                sent.refuse(f"{uid}: no accepted context for {local.transfer_syntax_uid}")
                return
            outgoing = sending.read_ahead(assoc, context, local.path, uid)
            async with asyncio.timeout(self.timeout):
                answer = await sending.send(assoc, outgoing, message_id=assoc.next_message_id())
        except TimeoutError:
            await assoc.abort()
            raise DestinationUnavailable(
                f"{self.node} did not answer a C-STORE within {self.timeout:g} s"
            ) from None
        except (Aborted, PduError, ConnectionError) as exc:
            await assoc.abort()
            raise DestinationUnavailable(f"{self.node} ended the association: {exc}") from None
        finally:
            local.discard()
        status = int(answer.get(message.STATUS, 0xC000))
        if code_to_category(status) in ("Success", "Warning"):
            sent.sent += 1
        else:
            sent.refuse(f"{uid}: C-STORE status 0x{status:04X}")
