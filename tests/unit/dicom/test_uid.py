from __future__ import annotations

import pytest

from app.dicom.uid import is_valid_uid


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "1",
        "1.2",
        "1.2.840.10008.1.2.1",
        "2.25.329800735698586629295641978511506172918",
        "1.0.0",
        "1.20.300",
        "1." + "2" * 62,  # 64 characters
    ],
)
def test_valid(value: str) -> None:
    assert is_valid_uid(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("1." + "2" * 63, "65 characters"),
        ("1.02", "leading zero"),
        ("01.2", "leading zero in the first component"),
        ("00", "leading zero"),
        ("1..2", "empty component"),
        (".1", "empty first component"),
        ("1.", "empty last component"),
        ("1.2.x", "not a digit"),
        ("1.2 ", "trailing space"),
        ("1.2\x00", "trailing NUL padding (must be removed before)"),
        (" 1.2", "leading space"),
        ("1.-2", "sign"),
        ("1.2e3", "exponent"),
        ("1.٣", "non-ASCII digit"),
        ("1.2\n", "trailing newline ($ would accept it)"),
    ],
)
def test_invalid(value: str, why: str) -> None:
    assert not is_valid_uid(value), why
