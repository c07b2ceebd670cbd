"""DIMSE command sets (PS3.7 9.3, 10.3, E.1): encode and decode, implicit VR little endian.

A command set is a handful of group 0000 elements whose VRs the standard fixes, so it is a
dict of tag -> int or str here, encoded and decoded in a few microseconds without building
a pydicom Dataset; identifiers and data sets (the messages' second part) are pydicom's
business (`dsutils`) or are sent as file bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum

from pydicom.dataset import Dataset

Value = int | str | bytes
Command = dict[int, Value]

_ELEMENT = struct.Struct("<HHL")

# Tags (group 0000) with the VR each is encoded in.
GROUP_LENGTH = 0x0000_0000
AFFECTED_SOP_CLASS_UID = 0x0000_0002
REQUESTED_SOP_CLASS_UID = 0x0000_0003
COMMAND_FIELD = 0x0000_0100
MESSAGE_ID = 0x0000_0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0000_0120
MOVE_DESTINATION = 0x0000_0600
PRIORITY = 0x0000_0700
COMMAND_DATA_SET_TYPE = 0x0000_0800
STATUS = 0x0000_0900
OFFENDING_ELEMENT = 0x0000_0901
ERROR_COMMENT = 0x0000_0902
ERROR_ID = 0x0000_0903
AFFECTED_SOP_INSTANCE_UID = 0x0000_1000
REQUESTED_SOP_INSTANCE_UID = 0x0000_1001
REMAINING = 0x0000_1020
COMPLETED = 0x0000_1021
FAILED = 0x0000_1022
WARNING = 0x0000_1023
MOVE_ORIGINATOR_AE_TITLE = 0x0000_1030
MOVE_ORIGINATOR_MESSAGE_ID = 0x0000_1031

_US = {
    COMMAND_FIELD,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    PRIORITY,
    COMMAND_DATA_SET_TYPE,
    STATUS,
    ERROR_ID,
    0x0000_1002,  # Event Type ID
    0x0000_1008,  # Action Type ID
    REMAINING,
    COMPLETED,
    FAILED,
    WARNING,
    MOVE_ORIGINATOR_MESSAGE_ID,
}
_UI = {
    AFFECTED_SOP_CLASS_UID,
    REQUESTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    REQUESTED_SOP_INSTANCE_UID,
}
_TEXT = {MOVE_DESTINATION, ERROR_COMMENT, MOVE_ORIGINATOR_AE_TITLE}  # AE, LO
# Anything else (AT lists, unknown elements) is kept as its bytes.

# Command Data Set Type: any other value means a data set follows.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0000
PRIORITY_MEDIUM = 0x0000


class CommandField(IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


class CommandError(ValueError):
    """A command set that cannot be decoded."""


def encode(command: Mapping[int, Value]) -> bytes:
    """`command` as an implicit VR little endian group 0000 with its group length."""
    parts = []
    for tag in sorted(command):
        if tag == GROUP_LENGTH:
            continue
        value = command[tag]
        if isinstance(value, int):
            raw = struct.pack("<H", value)
        elif isinstance(value, str):
            raw = value.encode("ascii", "replace")
            if len(raw) % 2:
                raw += b"\0" if tag in _UI else b" "
        else:
            raw = value
        parts.append(_ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(raw)) + raw)
    body = b"".join(parts)
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def decode(data: bytes) -> Command:
    """A command set from its bytes; CommandError when it is not one."""
    command: Command = {}
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _ELEMENT.size:
            raise CommandError("truncated command element")
        group, element, length = _ELEMENT.unpack_from(view, offset)
        offset += _ELEMENT.size
        if group != 0 or length > end - offset:
            raise CommandError("not a command set (a group other than 0000, or a bad length)")
        raw = bytes(view[offset : offset + length])
        offset += length
        tag = element
        if tag in _US:
            if length != 2:
                raise CommandError(f"(0000,{element:04X}) must be 2 bytes long")
            command[tag] = struct.unpack("<H", raw)[0]
        elif tag in _UI:
            command[tag] = raw.rstrip(b"\0 ").decode("ascii", "replace")
        elif tag in _TEXT:
            command[tag] = raw.decode("ascii", "replace").strip()
        elif tag != GROUP_LENGTH:
            command[tag] = raw
    if COMMAND_FIELD not in command:
        raise CommandError("the command set has no Command Field")
    return command


def has_data_set(command: Mapping[int, Value]) -> bool:
    return command.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET


def status_items(status: int | Dataset) -> Command:
    """The command elements of a status: the code and, from a Dataset (see
    `status.with_comment`), its Error Comment and other group 0000 elements."""
    if isinstance(status, int):
        return {STATUS: int(status)}
    items: Command = {}
    for element in status:
        tag = int(element.tag)
        if tag >> 16 == 0 and element.value is not None:
            items[tag] = element.value if isinstance(element.value, (int, str)) else b""
    items.setdefault(STATUS, 0xC000)
    return items


def response(
    request: Mapping[int, Value], field: CommandField, status: int | Dataset, data_set: bool
) -> Command:
    """The response to `request` (same SOP class, instance and message ID)."""
    command: Command = {
        COMMAND_FIELD: int(field),
        MESSAGE_ID_BEING_RESPONDED_TO: request.get(MESSAGE_ID, 0),
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT if data_set else NO_DATA_SET,
    }
    sop_class = request.get(AFFECTED_SOP_CLASS_UID)
    if sop_class:
        command[AFFECTED_SOP_CLASS_UID] = sop_class
    instance = request.get(AFFECTED_SOP_INSTANCE_UID)
    if instance and field == CommandField.C_STORE_RSP:
        command[AFFECTED_SOP_INSTANCE_UID] = instance
    command.update(status_items(status))
    return command
