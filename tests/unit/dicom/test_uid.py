from __future__ import annotations

import pytest

from app.dicom.uid import is_valid_uid
from app.query.matching import QueryError, check_uid

VALID = [
    "0",
    "1",
    "1.2",
    "1.2.840.10008.1.2.1",
    "2.25.329800735698586629295641978511506172918",
    "1.0.0",
    "1.20.300",
    "1." + "2" * 62,  # 64 characters
]

INVALID = [
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
    ("1.\u0663", "non-ASCII digit"),
    ("1.2\n", "trailing newline ($ would accept it)"),
]


@pytest.mark.parametrize("value", VALID)
def test_valid(value: str) -> None:
    assert is_valid_uid(value)


@pytest.mark.parametrize(("value", "why"), INVALID)
def test_invalid(value: str, why: str) -> None:
    assert not is_valid_uid(value), why


# Query values (QIDO-RS parameters; C-FIND, C-MOVE and C-GET identifiers) lose the spaces
# around them (padding), then go through the same validator as URL paths: issue 11, where a
# leading zero component was a 400 in a URL path and accepted as a query value.
@pytest.mark.parametrize("value", VALID)
def test_query_values_accept_the_valid_uids(value: str) -> None:
    assert check_uid("StudyInstanceUID", f" {value} ") == value


@pytest.mark.parametrize(
    ("value", "why"), [(v, why) for v, why in INVALID if v == v.strip() and "\x00" not in v]
)
def test_query_values_refuse_the_invalid_uids(value: str, why: str) -> None:
    with pytest.raises(QueryError, match="'StudyInstanceUID' has an invalid UID") as caught:
        check_uid("StudyInstanceUID", value)
    assert caught.value.loggable == "query key 'StudyInstanceUID' has an invalid value", why
