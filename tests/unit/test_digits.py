"""app.digits: the one parser of numbers from requests (issue 10: int() read "١" as 1)."""

from __future__ import annotations

import pytest

from app.digits import INT32, INT64, NumberError, parse_decimal, parse_int


@pytest.mark.parametrize(
    ("text", "signed", "value"),
    [
        ("0", False, 0),
        ("7", False, 7),
        (" 42 ", False, 42),
        ("007", False, 7),
        ("0" * 100 + "1", False, 1),  # leading zeros do not count as digits
        ("-5", True, -5),
        ("+5", True, 5),
        (str(2**63 - 1), False, 2**63 - 1),
        (str(-(2**63)), True, -(2**63)),
    ],
)
def test_integers(text: str, signed: bool, value: int) -> None:
    assert parse_int(text, *INT64, signed=signed) == value


@pytest.mark.parametrize(
    "text",
    [
        "\u0661",  # ARABIC-INDIC DIGIT ONE
        "1\u0660",  # 1 and ARABIC-INDIC DIGIT ZERO
        "\uff11",  # FULLWIDTH DIGIT ONE
        "1_000",
        "",
        " ",
        "1.0",
        "1e3",
        "0x10",
        "--1",
        "1 2",
        "9" * 41,  # more digits than any range: refused before int() converts them
        "9" * 5000,  # beyond int()'s own 4300-digit limit, still an NumberError
    ],
)
def test_not_integers(text: str) -> None:
    with pytest.raises(NumberError, match=r"^expected an integer$") as caught:
        parse_int(text, *INT64, signed=True)
    assert caught.value.value is None


@pytest.mark.parametrize("text", ["-1", "+1"])
def test_unsigned_refuses_a_sign(text: str) -> None:
    with pytest.raises(NumberError, match=r"^expected an integer$"):
        parse_int(text, *INT64)


@pytest.mark.parametrize(
    ("text", "value"), [(str(2**31), 2**31), (str(-(2**31) - 1), -(2**31) - 1)]
)
def test_out_of_range_names_the_range_and_keeps_the_value(text: str, value: int) -> None:
    with pytest.raises(NumberError, match=f"^expected {INT32[0]} to {INT32[1]}$") as caught:
        parse_int(text, *INT32, signed=True)
    assert caught.value.value == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1.0), (" -2.5 ", -2.5), (".5", 0.5), ("1.", 1.0), ("1e3", 1000.0), ("+4E-1", 0.4)],
)
def test_decimals(text: str, value: float) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize(
    "text", ["\u0661", "\u0661.5", "1_0", "nan", "inf", "-Infinity", "1e400", "", ".", "1e", "0x1"]
)
def test_not_decimals(text: str) -> None:
    """float() reads all of these but the last four; none is a finite ASCII decimal."""
    with pytest.raises(NumberError, match=r"^expected a number$"):
        parse_decimal(text)
