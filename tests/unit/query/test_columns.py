"""Column values written at ingest: integers the index columns can hold, or NULL."""

from __future__ import annotations

import pytest

from app.query.columns import Kind, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        (" -7 ", -7),
        (str(2**63 - 1), 2**63 - 1),
        # Issue 10: plain int() took these, and the first two overflowed the 64-bit
        # columns of both backends (a 500 at STOW).
        (str(2**63), None),
        ("1" + "0" * 30, None),
        ("١٢", None),  # Arabic-Indic digits
        ("1_0", None),
        ("1.5", None),
    ],
)
def test_integer_columns_hold_64_bit_ascii_integers_or_null(
    text: str, expected: int | None
) -> None:
    assert normalize(Kind.INT, text) == expected
