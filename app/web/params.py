"""Query parameters shared by several transactions, checked the same way everywhere."""

from __future__ import annotations

from collections.abc import Mapping

from app.services.errors import BadRequest


def query_int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """The integer `name` of `query` within [low, high]; None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid {name}={raw!r}: expected an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"invalid {name}={value}: expected {low} to {high}")
    return value
