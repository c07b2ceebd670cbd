"""Command sets: ours encode as pydicom encodes the same elements, and decode back."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode as pydicom_encode

from app.dimse import message
from app.dimse.message import CommandError, CommandField
from app.dimse.status import Status, with_comment


def _pydicom(command: dict[int, message.Value]) -> bytes:
    ds = Dataset()
    body = Dataset()
    names = {
        message.COMMAND_FIELD: "CommandField",
        message.MESSAGE_ID: "MessageID",
        message.PRIORITY: "Priority",
        message.COMMAND_DATA_SET_TYPE: "CommandDataSetType",
        message.AFFECTED_SOP_CLASS_UID: "AffectedSOPClassUID",
        message.AFFECTED_SOP_INSTANCE_UID: "AffectedSOPInstanceUID",
        message.MOVE_ORIGINATOR_AE_TITLE: "MoveOriginatorApplicationEntityTitle",
        message.MOVE_ORIGINATOR_MESSAGE_ID: "MoveOriginatorMessageID",
    }
    for tag, value in command.items():
        setattr(body, names[tag], value)
    encoded = pydicom_encode(body, True, True)
    assert encoded is not None
    ds.CommandGroupLength = len(encoded)
    whole = pydicom_encode(ds, True, True)
    assert whole is not None
    return whole + encoded


def test_a_c_store_request_is_encoded_as_pydicom_encodes_it() -> None:
    command: dict[int, message.Value] = {
        message.COMMAND_FIELD: CommandField.C_STORE_RQ,
        message.MESSAGE_ID: 7,
        message.PRIORITY: 0,
        message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
        message.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.1.2",
        message.AFFECTED_SOP_INSTANCE_UID: "1.2.3.45",  # odd length: padded with NUL
        message.MOVE_ORIGINATOR_AE_TITLE: "MOVESCU",  # odd length: padded with a space
        message.MOVE_ORIGINATOR_MESSAGE_ID: 3,
    }
    encoded = message.encode(command)
    assert encoded == _pydicom(command)
    assert message.decode(encoded) == command


def test_a_response_carries_the_status_and_its_comment() -> None:
    request = message.decode(
        message.encode(
            {
                message.COMMAND_FIELD: CommandField.C_FIND_RQ,
                message.MESSAGE_ID: 9,
                message.AFFECTED_SOP_CLASS_UID: "1.2.840.10008.5.1.4.1.2.2.1",
                message.COMMAND_DATA_SET_TYPE: message.DATA_SET_PRESENT,
            }
        )
    )
    status = with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "bad key")
    answer = message.decode(
        message.encode(message.response(request, CommandField.C_FIND_RSP, status, False))
    )
    assert answer[message.MESSAGE_ID_BEING_RESPONDED_TO] == 9
    assert answer[message.STATUS] == 0xA900
    assert answer[message.ERROR_COMMENT] == "bad key"
    assert not message.has_data_set(answer)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x00\x04",  # truncated element
        b"\x08\x00\x10\x00\x02\x00\x00\x00ab",  # group 0008
        b"\x00\x00\x00\x01\x10\x00\x00\x00\x20\x00",  # length past the end
        b"\x00\x00\x00\x01\x04\x00\x00\x00\x20\x00\x00\x00",  # US of 4 bytes
        b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00",  # no Command Field
    ],
)
def test_garbage_is_not_a_command_set(data: bytes) -> None:
    with pytest.raises(CommandError):
        message.decode(data)
