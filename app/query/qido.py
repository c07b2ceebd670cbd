"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1) parsed into a `Query`.

Matching follows PS3.4 C.2.2.2 by VR. Decisions the standard leaves open:
- `limit=0` means "not given" (the default limit): a page of zero results is useless and
  the ABNF allows 0. Limits above `max_limit` are clamped, not rejected; `limit` and
  `offset` beyond 2^63-1 (the backends' LIMIT/OFFSET) are rejected.
- A parameter without a name (`?=1`) is rejected like an unknown one.
- A path UID (`scope`) and a query key on the same attribute are both kept, so the result
  is their intersection: a different StudyInstanceUID simply matches nothing.
- `emptyvaluematching=true` and `multiplevaluematching=true` are unsupported and listed in
  `Query.ignored` (the web layer answers with a Warning header). `accept` and `charset`
  (PS3.18 8.3.3) are content negotiation, read by the web layer, and skipped here.
- Values keep the caller's case; the SQL compiler folds person names (see `sql.py`).
- TM and DT values match the whole period they name ("1030" is 10:30:00 to 10:30:59.999999),
  so they become RANGE conditions. Timezone offsets of DT values are ignored.
- Wildcards win over fuzzy matching: `PatientName=DOE*` is a wildcard match even with
  `fuzzymatching=true`. A value of only "*" is Universal Matching (C.2.2.2.4).
- ModalitiesInStudy accepts several values ("CT,MR" as OHIF sends it, or "CT\\MR"): a
  SINGLE condition with several values matches any of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.dicom.levels import SHARED_TAGS, Level
from app.digits import INT64, NumberError, parse_int
from app.query.matching import (
    QueryError,
    condition_for,
    is_universal,
    parse_path,
    uid_condition,
)
from app.query.model import Condition, Query

__all__ = ["QueryError", "parse_qido"]

_NEGOTIATION = frozenset({"accept", "charset"})
_UNSUPPORTED = frozenset({"emptyvaluematching", "multiplevaluematching"})


def parse_qido(
    params: Sequence[tuple[str, str]],
    level: Level,
    *,
    scope: Mapping[int, str] | None = None,
    default_limit: int = 100,
    max_limit: int = 1000,
) -> Query:
    """The Query for the raw (percent-decoded) query-string pairs of a QIDO-RS request."""
    reserved: dict[str, str] = {}
    include: set[int] = set()
    include_all = False
    ignored: list[str] = []
    keys: list[tuple[str, str]] = []
    for raw_key, value in params:
        key = raw_key.strip()
        name = key.lower()
        if not key:  # "?&..." (Weasis) gives no pair at all; "?=1" is a malformed one
            raise QueryError("a query parameter has no name (nothing before its '=')")
        if name in _NEGOTIATION:
            continue
        if name == "includefield":
            include_all |= _include_fields(value, include)
        elif name in ("limit", "offset", "fuzzymatching") or name in _UNSUPPORTED:
            if name in reserved:
                raise QueryError(f"query parameter {key!r} is repeated")
            reserved[name] = value
        else:
            keys.append((key, value))
    fuzzy = _flag(reserved, "fuzzymatching")
    ignored.extend(name for name in sorted(_UNSUPPORTED) if _flag(reserved, name))
    conditions = _conditions(keys, level, fuzzy, include, ignored)
    conditions += _scope_conditions(scope or {}, conditions)
    limit = _uint(reserved, "limit") or default_limit
    return Query(
        level=level,
        conditions=tuple(conditions),
        include=frozenset(include),
        include_all=include_all,
        limit=min(limit, max_limit),
        offset=_uint(reserved, "offset"),
        fuzzy=fuzzy,
        ignored=tuple(ignored),
    )


def _include_fields(value: str, include: set[int]) -> bool:
    """Add the includefield attributes to `include`; True for "all"."""
    everything = False
    for item in (part.strip() for part in value.split(",")):
        if item.lower() == "all":
            everything = True
        elif item:
            include.add(parse_path(item, "includefield")[0])
    return everything


def _flag(reserved: Mapping[str, str], name: str) -> bool:
    value = reserved.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise QueryError(f"{name} must be true or false, not {reserved[name]!r}")
    return value == "true"


def _uint(reserved: Mapping[str, str], name: str) -> int:
    """`limit` or `offset`: ASCII digits up to the backends' 64-bit LIMIT and OFFSET."""
    try:
        return parse_int(reserved.get(name, "0"), 0, INT64[1])
    except NumberError as exc:
        must = "a non-negative integer" if exc.value is None else f"at most {INT64[1]}"
        raise QueryError(f"{name} must be {must}, not {reserved[name]!r}") from None


def _conditions(
    keys: Sequence[tuple[str, str]],
    level: Level,
    fuzzy: bool,
    include: set[int],
    ignored: list[str],
) -> list[Condition]:
    seen: set[tuple[int, ...]] = set()
    out: list[Condition] = []
    for key, raw in keys:
        path = parse_path(key, f"query key {key!r}")
        if path in seen:
            raise QueryError(f"query key {key!r} is repeated")
        seen.add(path)
        include.add(path[0])
        value = raw.strip()
        if is_universal(value):
            continue  # Universal Matching: the attribute is only returned
        if path[0] in SHARED_TAGS:
            ignored.append(key)  # qualifies other values, never matched (PS3.4 C.2.2.2)
            continue
        condition = condition_for(key, path, value, level, fuzzy=fuzzy)
        if condition is not None:
            out.append(condition)
    return out


def _scope_conditions(scope: Mapping[int, str], conditions: Sequence[Condition]) -> list[Condition]:
    out: list[Condition] = []
    for tag, uid in scope.items():
        condition = uid_condition(tag, uid)
        if condition not in conditions:  # an identical query key is redundant
            out.append(condition)
    return out
