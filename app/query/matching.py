"""One matching key -> one `Condition`: the rules QIDO-RS and C-FIND share (PS3.4 C.2.2.2).

`qido.py` reads keys from query parameters and `identifier.py` from a C-FIND identifier;
both hand each (attribute, value) pair to `condition_for`, so the two protocols match alike.
Decisions the standard leaves open are listed in `qido.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    Level,
    level_of,
)
from app.dicom.uid import is_valid_uid
from app.digits import INT32, INT64, NumberError, parse_decimal, parse_int
from app.query.columns import Kind, normalize, normalize_time
from app.query.model import Condition, Match

__all__ = [
    "DEPTH",
    "UNIVERSAL_ONLY",
    "QueryError",
    "check_level",
    "check_path",
    "check_uid",
    "condition_for",
    "is_universal",
    "keyword",
    "parse_path",
    "tag_vr",
    "uid_condition",
]


class QueryError(ValueError):
    """An invalid query key or value; the message names the offending key or value.

    `key` is given when the message quotes the caller's value (names, dates: patient
    data), so that logs can say what was wrong without it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @property
    def loggable(self) -> str:
        return f"query key {self.key!r} has an invalid value" if self.key else str(self)


DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.INSTANCE: 3}

# VRs whose values may hold the wildcards '*' and '?' (PS3.4 C.2.2.2.4).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# The values each integer VR can hold (PS3.5 6.2; IS is a signed 32-bit range): a value
# outside can match nothing stored, and beyond 64 bits it would overflow SQL (a 500).
_INT_RANGES = {
    "IS": INT32,
    "SL": INT32,
    "SS": (-(2**15), 2**15 - 1),
    "SV": INT64,
    "UL": (0, 2**32 - 1),
    "US": (0, 2**16 - 1),
    "UV": (0, 2**64 - 1),
}
_INT_VRS = frozenset(_INT_RANGES)
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# Computed attributes the index does not match on: they can only be asked for.
UNIVERSAL_ONLY = frozenset(
    {
        INSTANCE_AVAILABILITY,
        NUMBER_OF_PATIENT_RELATED_STUDIES,
        NUMBER_OF_SERIES_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
        NUMBER_OF_STUDY_RELATED_SERIES,
        RETRIEVE_URL,
    }
)

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]: digits, fraction, offset hours and minutes.
_DT_RE = re.compile(r"([0-9]{4}(?:[0-9]{2}){0,5})(?:\.([0-9]{1,6}))?(?:[+-]([0-9]{2})([0-9]{2}))?")


def is_universal(value: str) -> bool:
    """Universal Matching (C.2.2.2.3): no value, or only '*' (C.2.2.2.4)."""
    return not value or set(value) == {"*"}


def condition_for(
    key: str, path: tuple[int, ...], value: str, level: Level, *, fuzzy: bool = False
) -> Condition | None:
    """The condition of the matching key `path` = `value` (stripped, not universal) in a
    query at `level`; None when the value still means universal matching ("-" for a range).

    `key` names the attribute in error messages. Raises `QueryError`.
    """
    if path[0] in UNIVERSAL_ONLY:
        raise QueryError(f"query key {key!r} supports only universal matching (no value)")
    if "\x00" in value:  # no DICOM text holds NUL, and PostgreSQL text cannot (a 500)
        raise QueryError(f"query key {key!r} has a NUL character in its value", key=key)
    check_level(key, path[0], level)
    vr = tag_vr(path[-1])
    match, values = _match(key, path, vr, value, fuzzy)
    if values in ((), ("", "")):  # "-" or ",": universal matching
        return None
    return Condition(path, vr, match, values)


def uid_condition(tag: int, uid: str) -> Condition:
    """A single value match of the UID attribute `tag`."""
    return Condition((tag,), "UI", Match.SINGLE, (check_uid(keyword(tag), uid),))


def parse_path(text: str, where: str) -> tuple[int, ...]:
    """Tag path of a keyword, 8-hex tag or dotted sequence path; nested parents must be SQ."""
    return check_path(tuple(_tag(part, where) for part in text.split(".")), where)


def check_path(path: tuple[int, ...], where: str) -> tuple[int, ...]:
    """`path` if every tag is a known attribute and each parent is a sequence."""
    for tag in path:
        _known(tag, f"{tag:08X}", where)
    for tag in path[:-1]:
        if tag_vr(tag) != "SQ":
            raise QueryError(f"{keyword(tag)} in {where} is not a sequence")
    return path


def _tag(part: str, where: str) -> int:
    tag = int(part, 16) if _TAG_RE.fullmatch(part) else tag_for_keyword(part)
    if tag is None:
        raise QueryError(f"unknown attribute {part!r} in {where}")
    return _known(tag, part, where)


def _known(tag: int, text: str, where: str) -> int:
    try:
        dictionary_VR(tag)
    except KeyError:
        raise QueryError(f"unknown attribute tag {text!r} in {where}") from None
    return tag


def tag_vr(tag: int) -> str:
    return str(dictionary_VR(tag)).split(" or ")[0]  # "US or SS": either reads as a number


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


def check_level(key: str, tag: int, level: Level) -> None:
    attr_level = level_of(tag)
    if attr_level is not Level.PATIENT and DEPTH[attr_level] > DEPTH[level]:
        raise QueryError(
            f"query key {key!r} belongs to the {attr_level.name.lower()} level,"
            f" below a {level.name.lower()} query"
        )


def _match(
    key: str, path: tuple[int, ...], vr: str, value: str, fuzzy: bool
) -> tuple[Match, tuple[str, ...]]:
    if vr == "SQ":
        raise QueryError(f"query key {key!r} is a sequence: match on one of its attributes")
    if vr in _BINARY_VRS:
        raise QueryError(f"query key {key!r} has VR {vr}, which cannot be matched")
    if vr == "UI":
        uids = tuple(check_uid(key, uid) for uid in re.split(r"[,\\]", value))
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


def check_uid(key: str, uid: str) -> str:
    """`uid` without surrounding spaces, if it is a valid UID: QIDO-RS values and C-FIND,
    C-MOVE and C-GET identifiers use the same validator as URL paths and stored files."""
    uid = uid.strip()
    if not is_valid_uid(uid):
        raise QueryError(f"query key {key!r} has an invalid UID {uid!r}", key=key)
    return uid


def _number(key: str, vr: str, value: str) -> str:
    if vr in _INT_VRS:
        low, high = _INT_RANGES[vr]
        try:
            return str(parse_int(value, low, high, signed=True))
        except NumberError as exc:
            if exc.value is not None:  # IS is 32-bit (PS3.5 6.2): a bigger one matches nothing
                raise QueryError(
                    f"query key {key!r} ({vr}) must be from {low} to {high}, not {value!r}",
                    key=key,
                ) from None
    else:
        try:
            return repr(parse_decimal(value))
        except NumberError:
            pass
    raise QueryError(f"query key {key!r} needs a number ({vr}), not {value!r}", key=key)


def _date_match(key: str, value: str) -> tuple[Match, tuple[str, ...]]:
    if "-" not in value:
        return Match.SINGLE, (_date(key, value, value),)
    lower, _, upper = value.partition("-")
    if "-" in upper:
        raise QueryError(f"query key {key!r} has an invalid date range {value!r}", key=key)
    return Match.RANGE, (_date(key, value, lower), _date(key, value, upper))


def _date(key: str, value: str, part: str) -> str:
    """`part` of `value` as YYYYMMDD; the empty string for the open end of a range."""
    if not part.strip():
        return ""
    normal = normalize(Kind.DATE, part)
    if not isinstance(normal, str) or not _valid_datetime(normal + "000000"):
        raise QueryError(f"query key {key!r} has an invalid date {value!r}", key=key)
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
    raise QueryError(f"query key {key!r} has an invalid value {value!r}", key=key)


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
