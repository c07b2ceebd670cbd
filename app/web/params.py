"""Query parameters shared by several transactions, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping

from app.digits import NumberError, parse_int
from app.services.errors import BadRequest


def query_int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """The integer `name` of `query` within [low, high]; None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_int(raw, low, high, signed=True)  # "-1": the range says what is wrong
    except NumberError as exc:
        shown = raw if exc.value is None else exc.value
        raise BadRequest(f"invalid {name}={shown!r}: {exc}") from None
