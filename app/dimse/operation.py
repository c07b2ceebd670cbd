"""One DIMSE request being served: its command, its identifier, and the way to answer it.

Handlers (`find.py`, `retrieve.py`, `store.py`) are coroutines on the archive's event loop
that take an Operation, call the services and answer with `respond`; a C-CANCEL of the
request sets `cancelled`, which the handlers of C-FIND, C-MOVE and C-GET look at between
matches or sub-operations.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import dsutils

from app.dimse import identifier_decoding, message
from app.dimse.association import Association, Context
from app.dimse.message import Command, CommandField


@dataclass
class Operation:
    assoc: Association
    context: Context
    command: Command
    # The identifier's bytes (C-FIND, C-MOVE, C-GET), None for a C-ECHO or a C-STORE.
    data: bytes | None = None
    cancelled: bool = False

    @property
    def message_id(self) -> int:
        return int(self.command.get(message.MESSAGE_ID, 0))

    @property
    def sop_class(self) -> str:
        return str(self.command.get(message.AFFECTED_SOP_CLASS_UID, ""))

    def identifier(self) -> Dataset:
        """The request's identifier; pydicom's exception when it cannot be decoded."""
        data = self.data or b""
        implicit, little, deflated = _encoding(self.context)
        if little and not deflated and (fast := identifier_decoding.decode(data, implicit)):
            return fast
        return dsutils.decode(io.BytesIO(data), implicit, little, deflated)

    async def respond(
        self,
        field: CommandField,
        status: int | Dataset,
        identifier: Dataset | None = None,
        extra: Command | None = None,
        *,
        encoded: bytes | None = None,
        more: bool = False,
    ) -> None:
        """Send a response with `status` (a code, or a Dataset with a comment), the
        elements of `extra` (sub-operation counts) and `identifier` if given (or its
        `encoded` bytes, in the context's transfer syntax). `more`: see Association.send."""
        data = encoded
        if identifier is not None:
            data = dsutils.encode(identifier, *_encoding(self.context))
        command = message.response(self.command, field, status, data is not None)
        if extra:
            command.update(extra)
        await self.assoc.send(self.context, command, data, more=more)


def _encoding(context: Context) -> tuple[bool, bool, bool]:
    """Implicit VR, little endian, deflated: how the context's data sets are encoded."""
    syntax = context.transfer_syntax
    return (
        syntax == ImplicitVRLittleEndian,
        syntax != ExplicitVRBigEndian,
        syntax == DeflatedExplicitVRLittleEndian,
    )
