"""C-STORE sub-operations of C-MOVE and C-GET: one local PS3.10 file sent as it is.

The data set bytes of the file (past its preamble and file meta) go out on the presentation
context the peer accepted for its SOP class and transfer syntax, without being decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pynetdicom.dsutils import split_dataset

from app.dimse import message
from app.dimse.association import Association, Context
from app.dimse.message import Command, CommandField

# Preamble, "DICM", then (0002,0000) UL 4 <length> in explicit VR little endian.
_PREFIX = 128 + 4
_GROUP_LENGTH = struct.Struct("<HH2sHL")


def data_set_offset(path: Path) -> int:
    """Where the data set of the PS3.10 file `path` starts. Read from the File Meta
    Information Group Length the store service writes; any other file is parsed."""
    with open(path, "rb") as file:
        head = file.read(_PREFIX + _GROUP_LENGTH.size)
    if len(head) == _PREFIX + _GROUP_LENGTH.size and head[128:132] == b"DICM":
        group, element, vr, length, value = _GROUP_LENGTH.unpack_from(head, _PREFIX)
        if (group, element, vr, length) == (2, 0, b"UL", 4):
            return _PREFIX + _GROUP_LENGTH.size + int(value)
    return split_dataset(path)[1]


def context_for(assoc: Association, sop_class: str, transfer_syntax: str) -> Context | None:
    """The accepted context to send `sop_class` in `transfer_syntax` on, if any."""
    for context in assoc.contexts.values():
        if (
            context.abstract_syntax == sop_class
            and context.transfer_syntax == transfer_syntax
            and context.as_scu
        ):
            return context
    return None


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """The transfer syntaxes we may send `sop_class` in on `assoc`, in context order."""
    return [
        cx.transfer_syntax
        for _, cx in sorted(assoc.contexts.items())
        if cx.abstract_syntax == sop_class and cx.as_scu
    ]


async def send_file(
    assoc: Association,
    context: Context,
    path: Path,
    *,
    sop_instance_uid: str,
    message_id: int,
    originator: tuple[str, int] | None = None,
) -> Command:
    """C-STORE the file at `path` on `context`; the C-STORE-RSP's command.
    `originator`: the AE title and message ID of the C-MOVE this is a sub-operation of."""
    command: Command = {
        message.COMMAND_FIELD: CommandField.C_STORE_RQ,
        message.MESSAGE_ID: message_id & 0xFFFF,
        message.PRIORITY: message.PRIORITY_MEDIUM,
        message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
        message.AFFECTED_SOP_CLASS_UID: context.abstract_syntax,
        message.AFFECTED_SOP_INSTANCE_UID: sop_instance_uid,
    }
    if originator is not None:
        command[message.MOVE_ORIGINATOR_AE_TITLE] = originator[0]
        command[message.MOVE_ORIGINATOR_MESSAGE_ID] = originator[1] & 0xFFFF
    answer = await assoc.request(context, command, path, data_set_offset(path))
    if answer.get(message.COMMAND_FIELD) != CommandField.C_STORE_RSP:
        raise ValueError("the peer answered a C-STORE-RQ with another message")
    return answer
