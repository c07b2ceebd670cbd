"""C-STORE sub-operations of C-MOVE and C-GET: one local PS3.10 file sent as it is.

The data set bytes of the file (past its preamble and file meta) go out on the presentation
context the peer accepted for its SOP class and transfer syntax, without being decoded.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.dsutils import split_dataset

from app.dimse import message, pdata
from app.dimse.association import Association, Context
from app.dimse.message import Command, CommandField

# Preamble, "DICM", then (0002,0000) UL 4 <length> in explicit VR little endian.
_PREFIX = 128 + 4
_GROUP_LENGTH = struct.Struct("<HH2sHL")


def data_set_offset(path: Path) -> int:
    """Where the data set of the PS3.10 file `path` starts (see `_data_set_offset`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _data_set_offset(fd, path)
    finally:
        os.close(fd)


def _data_set_offset(fd: int, path: Path) -> int:
    """Where the data set of the PS3.10 file `fd` (of `path`) starts. Read from the File
    Meta Information Group Length the store service writes; any other file is parsed."""
    head = os.pread(fd, _PREFIX + _GROUP_LENGTH.size, 0)
    if len(head) == _PREFIX + _GROUP_LENGTH.size and head[128:132] == b"DICM":
        group, element, vr, length, value = _GROUP_LENGTH.unpack_from(head, _PREFIX)
        if (group, element, vr, length) == (2, 0, b"UL", 4):
            return _PREFIX + _GROUP_LENGTH.size + int(value)
    return split_dataset(path)[1]


def context_for(assoc: Association, sop_class: str, transfer_syntax: str) -> Context | None:
    """The accepted context to send `sop_class` in `transfer_syntax` on, if any."""
    for context in assoc.contexts_for(sop_class):
        if context.transfer_syntax == transfer_syntax:
            return context
    return None


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """The transfer syntaxes we may send `sop_class` in on `assoc`, in context order."""
    return [cx.transfer_syntax for cx in assoc.contexts_for(sop_class)]


@dataclass(frozen=True)
class Outgoing:
    """A C-STORE-RQ ready to be sent: the instance, its context, its data set read ahead."""

    sop_instance_uid: str
    context: Context
    data: pdata.FileData


def read_ahead(assoc: Association, context: Context, path: Path, sop_instance_uid: str) -> Outgoing:
    """The file at `path` ready to be C-STOREd on `context`: its data set's first chunk
    (the whole of a usual instance) read now. OSError when the file cannot be read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = _data_set_offset(fd, path)
        data = pdata.read_ahead(fd, path, offset, context.id, assoc.peer_max_pdu)
    finally:
        os.close(fd)
    return Outgoing(sop_instance_uid, context, data)


async def send(
    assoc: Association,
    outgoing: Outgoing,
    *,
    message_id: int,
    originator: tuple[str, int] | None = None,
    sent: Callable[[], object] | None = None,
) -> Command:
    """C-STORE `outgoing`; the C-STORE-RSP's command. `originator`: the AE title and
    message ID of the C-MOVE this is a sub-operation of; `sent`: see Association.request."""
    context = outgoing.context
    command: Command = {
        message.COMMAND_FIELD: CommandField.C_STORE_RQ,
        message.MESSAGE_ID: message_id & 0xFFFF,
        message.PRIORITY: message.PRIORITY_MEDIUM,
        message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
        message.AFFECTED_SOP_CLASS_UID: context.abstract_syntax,
        message.AFFECTED_SOP_INSTANCE_UID: outgoing.sop_instance_uid,
    }
    if originator is not None:
        command[message.MOVE_ORIGINATOR_AE_TITLE] = originator[0]
        command[message.MOVE_ORIGINATOR_MESSAGE_ID] = originator[1] & 0xFFFF
    answer = await assoc.request(context, command, outgoing.data, sent)
    if answer.get(message.COMMAND_FIELD) != CommandField.C_STORE_RSP:
        raise ValueError("the peer answered a C-STORE-RQ with another message")
    return answer


async def send_file(
    assoc: Association,
    context: Context,
    path: Path,
    *,
    sop_instance_uid: str,
    message_id: int,
    originator: tuple[str, int] | None = None,
) -> Command:
    """C-STORE the file at `path` on `context`; the C-STORE-RSP's command."""
    outgoing = read_ahead(assoc, context, path, sop_instance_uid)
    return await send(assoc, outgoing, message_id=message_id, originator=originator)
