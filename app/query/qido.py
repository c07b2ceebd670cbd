"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1) parsed into a `Query`.

Matching follows PS3.4 C.2.2.2 by VR. Decisions the standard leaves open:
- `limit=0` means "not given" (the default limit): a page of zero results is useless and
  the ABNF allows 0. Limits above `max_limit` are clamped, not rejected.
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

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from app.dicom.levels import (
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    RETRIEVE_URL,
    SHARED_TAGS,
    Level,
    level_of,
)
from app.query.columns import Kind, normalize, normalize_time
from app.query.model import Condition, Match, Query

__all__ = ["QueryError", "parse_qido"]


class QueryError(ValueError):
    """An invalid query parameter; the message names the offending key or value."""


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}

# VRs whose values may hold the wildcards '*' and '?' (PS3.4 C.2.2.2.4).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# Computed attributes the index does not match on: they can only be asked for.
_UNIVERSAL_ONLY = frozenset(
    {
        INSTANCE_AVAILABILITY,
        NUMBER_OF_PATIENT_RELATED_STUDIES,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_SERIES,
        RETRIEVE_URL,
    }
)

_NEGOTIATION = frozenset({"accept", "charset"})
_UNSUPPORTED = frozenset({"emptyvaluematching", "multiplevaluematching"})

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]: digits, fraction, offset hours and minutes.
_DT_RE = re.compile(r"([0-9]{4}(?:[0-9]{2}){0,5})(?:\.([0-9]{1,6}))?(?:[+-]([0-9]{2})([0-9]{2}))?")


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
        if not key or name in _NEGOTIATION:
            continue  # empty keys come from "?&..." (Weasis)
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
            include.add(_path(item, "includefield")[0])
    return everything


def _flag(reserved: Mapping[str, str], name: str) -> bool:
    value = reserved.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise QueryError(f"{name} must be true or false, not {reserved[name]!r}")
    return value == "true"


def _uint(reserved: Mapping[str, str], name: str) -> int:
    value = reserved.get(name, "0").strip()
    if not (value.isascii() and value.isdigit()):
        raise QueryError(f"{name} must be a non-negative integer, not {reserved[name]!r}")
    return int(value)


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
        path = _path(key, f"query key {key!r}")
        if path in seen:
            raise QueryError(f"query key {key!r} is repeated")
        seen.add(path)
        include.add(path[0])
        vr = _vr(path[-1])
        value = raw.strip()
        if not value or set(value) == {"*"}:
            continue  # Universal Matching: the attribute is only returned
        if path[0] in SHARED_TAGS:
            ignored.append(key)  # qualifies other values, never matched (PS3.4 C.2.2.2)
            continue
        if path[0] in _UNIVERSAL_ONLY:
            raise QueryError(f"query key {key!r} supports only universal matching (no value)")
        _check_level(key, path[0], level)
        condition = _condition(key, path, vr, value, fuzzy)
        if condition.values not in ((), ("", "")):  # "-" or ",": universal matching
            out.append(condition)
    return out


def _scope_conditions(scope: Mapping[int, str], conditions: Sequence[Condition]) -> list[Condition]:
    out: list[Condition] = []
    for tag, uid in scope.items():
        condition = Condition((tag,), "UI", Match.SINGLE, (_uid(_keyword(tag), uid),))
        if condition not in conditions:  # an identical query key is redundant
            out.append(condition)
    return out


def _path(text: str, where: str) -> tuple[int, ...]:
    """Tag path of a keyword, 8-hex tag or dotted sequence path; nested parents must be SQ."""
    path = tuple(_tag(part, where) for part in text.split("."))
    for tag in path[:-1]:
        if _vr(tag) != "SQ":
            raise QueryError(f"{_keyword(tag)} in {where} is not a sequence")
    return path


def _tag(part: str, where: str) -> int:
    tag = int(part, 16) if _TAG_RE.fullmatch(part) else tag_for_keyword(part)
    if tag is None:
        raise QueryError(f"unknown attribute {part!r} in {where}")
    try:
        dictionary_VR(tag)
    except KeyError:
        raise QueryError(f"unknown attribute tag {part!r} in {where}") from None
    return tag


def _vr(tag: int) -> str:
    return str(dictionary_VR(tag)).split(" or ")[0]  # "US or SS": either reads as a number


def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


def _check_level(key: str, tag: int, level: Level) -> None:
    attr_level = level_of(tag)
    if attr_level is not Level.PATIENT and _DEPTH[attr_level] > _DEPTH[level]:
        raise QueryError(
            f"query key {key!r} belongs to the {attr_level.name.lower()} level,"
            f" below a {level.name.lower()} query"
        )


def _condition(key: str, path: tuple[int, ...], vr: str, value: str, fuzzy: bool) -> Condition:
    match, values = _match(key, path, vr, value, fuzzy)
    return Condition(path, vr, match, values)


def _match(
    key: str, path: tuple[int, ...], vr: str, value: str, fuzzy: bool
) -> tuple[Match, tuple[str, ...]]:
    if vr == "SQ":
        raise QueryError(f"query key {key!r} is a sequence: match on one of its attributes")
    if vr in _BINARY_VRS:
        raise QueryError(f"query key {key!r} has VR {vr}, which cannot be matched")
    if vr == "UI":
        uids = tuple(_uid(key, uid) for uid in re.split(r"[,\\]", value))
        return (Match.UID_LIST if len(uids) > 1 else Match.SINGLE), uids
    if vr == "DA":
        return _date_match(key, value)
    if vr == "TM":
        return Match.RANGE, _range(key, value, _time_bounds)
    if vr == "DT":
        return Match.RANGE, _range(key, value, _datetime_bounds)
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return Match.SINGLE, (_number(key, vr, value),)
    if vr in _WILDCARD_VRS and ("*" in value or "?" in value):
        return Match.WILDCARD, (value,)
    if vr == "PN" and fuzzy:
        return Match.FUZZY, (value,)
    if path == (MODALITIES_IN_STUDY,):
        return Match.SINGLE, tuple(v.strip() for v in re.split(r"[,\\]", value) if v.strip())
    return Match.SINGLE, (value,)


def _uid(key: str, uid: str) -> str:
    uid = uid.strip()
    if len(uid) > 64 or not _UID_RE.fullmatch(uid):
        raise QueryError(f"query key {key!r} has an invalid UID {uid!r}")
    return uid


def _number(key: str, vr: str, value: str) -> str:
    if vr in _INT_VRS and _INT_RE.fullmatch(value):
        return str(int(value))
    if vr in _FLOAT_VRS and _FLOAT_RE.fullmatch(value):
        return repr(float(value))
    raise QueryError(f"query key {key!r} needs a number ({vr}), not {value!r}")


def _date_match(key: str, value: str) -> tuple[Match, tuple[str, ...]]:
    if "-" not in value:
        return Match.SINGLE, (_date(key, value, value),)
    lower, _, upper = value.partition("-")
    if "-" in upper:
        raise QueryError(f"query key {key!r} has an invalid date range {value!r}")
    return Match.RANGE, (_date(key, value, lower), _date(key, value, upper))


def _date(key: str, value: str, part: str) -> str:
    """`part` of `value` as YYYYMMDD; the empty string for the open end of a range."""
    if not part.strip():
        return ""
    normal = normalize(Kind.DATE, part)
    if not isinstance(normal, str) or not _valid_datetime(normal + "000000"):
        raise QueryError(f"query key {key!r} has an invalid date {value!r}")
    return normal


_Bounds = tuple[str, str]


def _range(key: str, value: str, bounds_of: Callable[[str], _Bounds | None]) -> _Bounds:
    """(lower, upper) of a TM/DT single value or range; the whole period a value names."""
    single = bounds_of(value)
    if single is not None:
        return single
    # A DT timezone offset may also hold '-': try each split until both sides parse.
    for at in (i for i, char in enumerate(value) if char == "-"):
        lower, upper = value[:at].strip(), value[at + 1 :].strip()
        low = bounds_of(lower) if lower else ("", "")
        high = bounds_of(upper) if upper else ("", "")
        if low is not None and high is not None:
            return low[0], high[1]
    raise QueryError(f"query key {key!r} has an invalid value {value!r}")


def _time_bounds(part: str) -> _Bounds | None:
    lower = normalize_time(part, upper=False)
    upper = normalize_time(part, upper=True)
    if lower is None or upper is None:
        return None
    hh, mm, ss = int(lower[:2]), int(lower[2:4]), int(lower[4:6])
    return (lower, upper) if hh < 24 and mm < 60 and ss < 61 else None


def _datetime_bounds(part: str) -> _Bounds | None:
    match = _DT_RE.fullmatch(part.strip())
    if match is None:
        return None
    digits, fraction, tz_hours, tz_minutes = match.groups()
    if fraction and len(digits) < 14:
        return None  # a fraction belongs to the seconds
    if tz_hours is not None and (int(tz_hours) > 14 or int(tz_minutes) > 59):
        return None
    lower = digits + "00000101000000"[len(digits) :]
    if not _valid_datetime(lower):
        return None
    upper = digits + "00001231235959"[len(digits) :]
    fraction = fraction or ""
    return f"{lower}.{fraction.ljust(6, '0')}", f"{upper}.{fraction.ljust(6, '9')}"


def _valid_datetime(digits: str) -> bool:
    try:
        date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return False
    return int(digits[8:10]) < 24 and int(digits[10:12]) < 60 and int(digits[12:14]) < 61
