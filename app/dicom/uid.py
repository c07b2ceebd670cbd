"""Unique Identifier syntax (PS3.5 Section 9.1)."""

from __future__ import annotations

import re

# Components of ASCII digits separated by '.'; a component is '0' or has no leading zero.
# [0-9] rather than \d: \d also matches non-ASCII digits such as '٣'.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

MAX_UID_LENGTH = 64

# This archive as the implementation that writes files (file meta of received, converted and
# DICOMDIR files; the DIMSE association's implementation identity).
IMPLEMENTATION_CLASS_UID = "2.25.215706799285163197399978248799382922872"
IMPLEMENTATION_VERSION_NAME = "PACS_0.1"


def is_valid_uid(value: str) -> bool:
    """Whether `value` is a syntactically valid UID.

    `value` is the UID itself: the trailing NUL padding of the encoded form must already be
    removed (pydicom does so when it decodes a UI value).
    """
    return 0 < len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None
