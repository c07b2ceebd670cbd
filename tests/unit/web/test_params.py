"""One integer parameter check for every transaction (WADO-URI, the audit API): the same
clear 400 messages wherever an integer is asked for."""

from __future__ import annotations

import pytest

from app.services.errors import BadRequest
from app.web import audit, wado_uri
from app.web.params import query_int


@pytest.mark.parametrize(
    ("query", "found"),
    [({}, None), ({"rows": "7"}, 7), ({"rows": "1"}, 1), ({"rows": "10"}, 10)],
)
def test_integers(query: dict[str, str], found: int | None) -> None:
    assert query_int(query, "rows", 1, 10) == found


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ten", "invalid rows='ten': expected an integer"),
        ("", "invalid rows='': expected an integer"),
        ("0", "invalid rows=0: expected 1 to 10"),
        ("11", "invalid rows=11: expected 1 to 10"),
    ],
)
def test_bad_integers(raw: str, message: str) -> None:
    with pytest.raises(BadRequest, match=f"^{message}$".replace("(", r"\(")):
        query_int({"rows": raw}, "rows", 1, 10)


def test_no_transaction_keeps_a_copy_of_its_own() -> None:
    """Regression: web/audit.py had _integer, a near copy of wado_uri._int."""
    for module in (audit, wado_uri):
        assert not hasattr(module, "_integer") and not hasattr(module, "_int")
        assert module.query_int is query_int  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", ["\u0661", "1_0", "\uff11", "9" * 5000])
def test_integers_are_ascii_digits(raw: str) -> None:
    """Issue 10: int() reads other scripts' digits and underscores; query_int does not."""
    with pytest.raises(BadRequest, match=r"expected an integer$"):
        query_int({"rows": raw}, "rows", 1, 10)
