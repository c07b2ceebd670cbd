"""Numbers read from requests: ASCII digits only, integers within a stated range.

Python's int() also reads other scripts' digits ("١" is 1), underscores ("1_0") and
thousands of digits (slowly, then a ValueError); a URL or a query value that spells a number
so is not a number the standard allows. Every integer the archive parses from a request
goes through `parse_int`, which bounds it too, so that no value reaches SQL or an allocation
outside the range its caller states; every decimal number through `parse_decimal`.
"""

from __future__ import annotations

import math
import re

__all__ = ["INT32", "INT64", "NumberError", "parse_decimal", "parse_int"]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# An optional sign and ASCII digits; leading zeros aside, 40 digits exceed any range asked for.
_INTEGER = re.compile(r"[+-]?0*([0-9]{1,40})")
# A decimal string (DS, PS3.5 6.2) in ASCII: float() also reads "١", "1_0", "nan" and "inf".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class NumberError(ValueError):
    """The text is not a number, or not one in range; the message says which, without
    quoting the text (it may be a query value, which may be patient data). `value` is the
    integer when only its range was wrong."""

    def __init__(self, message: str, value: int | None = None) -> None:
        super().__init__(message)
        self.value = value


def parse_int(text: str, low: int, high: int, *, signed: bool = False) -> int:
    """`text` (surrounding spaces allowed) as an integer from `low` to `high`.

    Without `signed`, a sign is refused, as in frame numbers and `limit`/`offset`
    (PS3.18's 1*DIGIT). Raises NumberError."""
    value = text.strip()
    match = _INTEGER.fullmatch(value)
    if match is None or (not signed and value[0] in "+-"):
        raise NumberError("expected an integer")
    number = int(value)
    if not low <= number <= high:
        raise NumberError(f"expected {low} to {high}", number)
    return number


def parse_decimal(text: str) -> float:
    """`text` (surrounding spaces allowed) as a finite number. Raises NumberError."""
    value = text.strip()
    if _DECIMAL.fullmatch(value) is None or not math.isfinite(number := float(value)):
        raise NumberError("expected a number")
    return number
