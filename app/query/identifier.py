"""C-FIND, C-MOVE and C-GET identifiers (PS3.4 C.4.1.1.3, C.4.2.1.4) parsed into a `Query`.

Every key of the identifier goes through `matching.condition_for`, like the same key in a
QIDO-RS request, so C-FIND and QIDO-RS find the same instances. Decisions:
- The search is relational (PS3.4 C.4.1.2.2.2 without the extended negotiation): keys of
  any level at or above the query level narrow the result, and the unique keys of the
  higher levels are not required. Keys below the query level are refused, as in QIDO-RS.
- An empty value, or "*", is Universal Matching: the key is only returned. Keys the archive
  does not know (private or unknown tags) may be asked for (they come back empty) but not
  matched on.
- A multi-valued key (PS3.4 C.2.2.2.8) matches any of its values: a UID list for UI, and
  for other VRs a list of single values (no wildcards or ranges among several values).
- Person names are matched on their alphabetic group, case-insensitively (as QIDO-RS).
- A sequence key holds at most one item, whose keys match the attributes of the sequence's
  items (C.2.2.2.6); an empty sequence or item is Universal Matching.
- A retrieve identifier (`parse_retrieve_identifier`) must give the unique key of its level
  with one or more exact values, so that a mistaken identifier never sends the archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from app.dicom.levels import (
    LEVELS,
    MODALITIES_IN_STUDY,
    SHARED_TAGS,
    SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    Level,
)
from app.query.matching import (
    QueryError,
    check_path,
    condition_for,
    is_universal,
    keyword,
    tag_vr,
)
from app.query.model import Condition, Match, Query

__all__ = [
    "QUERY_RETRIEVE_LEVEL",
    "UNIQUE_KEYS",
    "IdentifierError",
    "Model",
    "parse_identifier",
    "parse_retrieve_identifier",
    "query_level",
]

Model = Literal["patient", "study"]

QUERY_RETRIEVE_LEVEL = 0x00080052

_MODEL_LEVELS: dict[Model, tuple[Level, ...]] = {
    "patient": LEVELS,
    "study": LEVELS[LEVELS.index(Level.STUDY) :],
}


class IdentifierError(QueryError):
    """The identifier does not fit the information model (C-FIND status A900)."""


def query_level(ds: Dataset, model: Model) -> Level:
    """The QueryRetrieveLevel of `ds`, checked against the information model."""
    elem = ds.get(QUERY_RETRIEVE_LEVEL)
    value = str(elem.value or "").strip() if elem is not None else ""
    if not value:
        raise IdentifierError("the identifier has no QueryRetrieveLevel (0008,0052)")
    levels = _MODEL_LEVELS[model]
    found = next((level for level in levels if level.value == value), None)
    if found is None:
        names = ", ".join(level.value for level in levels)
        raise IdentifierError(
            f"QueryRetrieveLevel {value!r} is not a level of the {model.title()} Root "
            f"information model ({names})"
        )
    return found


def parse_identifier(ds: Dataset, model: Model) -> Query:
    """The Query of a C-FIND identifier; its keys are the attributes to return.

    Raises `IdentifierError` for a missing or wrong level and `QueryError` for a key or
    value that cannot be matched.
    """
    level = query_level(ds, model)
    include: set[int] = set()
    conditions: list[Condition] = []
    for elem in _elements(ds):
        tag = int(elem.tag)
        if tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET):
            continue
        include.add(tag)
        conditions.extend(_conditions(elem, (tag,), level))
    return Query(level=level, conditions=tuple(conditions), include=frozenset(include))


def parse_retrieve_identifier(ds: Dataset, model: Model) -> Query:
    """The Query of a C-MOVE or C-GET identifier: it must name what to send by the unique
    key of its level (several values allowed, no wildcard)."""
    query = parse_identifier(ds, model)
    unique = UNIQUE_KEYS[query.level]
    if not any(
        c.path == (unique,) and c.match in (Match.SINGLE, Match.UID_LIST) for c in query.conditions
    ):
        raise IdentifierError(
            f"a {query.level.value} level retrieve needs {keyword(unique)} "
            f"({unique >> 16:04X},{unique & 0xFFFF:04X}) with one or more exact values"
        )
    return query


def _elements(ds: Dataset) -> Iterator[DataElement]:
    """The elements of `ds` that can be keys: no group lengths, no file meta or commands."""
    for elem in ds:
        if elem.tag.element == 0 or elem.tag.group <= 0x0002:
            continue
        yield elem


def _name(tag: int) -> str:
    return f"{keyword(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _conditions(elem: DataElement, path: tuple[int, ...], level: Level) -> list[Condition]:
    key = ".".join(_name(t) for t in path) if len(path) > 1 else _name(path[0])
    if elem.VR == "SQ":
        return _sequence_conditions(elem, path, level, key)
    values = _texts(elem, key)
    if len(values) == 1 and is_universal(values[0]):
        return []  # Universal Matching: the attribute is only returned
    if path[0] in SHARED_TAGS:
        return []  # qualifies other values, never matched (PS3.4 C.2.2.2), as in QIDO-RS
    check_path(path, f"the identifier key {key}")
    vr = tag_vr(path[-1])
    if len(values) == 1 or vr == "UI" or path == (MODALITIES_IN_STUDY,):
        # A UID list is checked whole: an empty UID among several is an error.
        condition = condition_for(key, path, "\\".join(values), level)
        return [condition] if condition is not None else []
    if any(is_universal(v) for v in values):
        return []  # one of the values matches anything
    return [_any_of(key, path, values, level)]


def _any_of(key: str, path: tuple[int, ...], values: list[str], level: Level) -> Condition:
    """Multiple Value Matching (C.2.2.2.8) of single values: one SINGLE condition."""
    matched: list[str] = []
    for value in values:
        condition = condition_for(key, path, value, level)
        if condition is None or condition.match is not Match.SINGLE:
            raise QueryError(
                f"query key {key!r} has several values: each must be a single value "
                f"(no wildcard, range or empty value), not {value!r}",
                key=key,
            )
        matched.extend(condition.values)
    return Condition(path, tag_vr(path[-1]), Match.SINGLE, tuple(matched))


def _sequence_conditions(
    elem: DataElement, path: tuple[int, ...], level: Level, key: str
) -> list[Condition]:
    items = list(elem.value or [])
    if len(items) > 1:
        raise QueryError(f"query key {key!r} is a sequence with more than one item")
    if not items:
        return []
    conditions: list[Condition] = []
    for inner in _elements(items[0]):
        conditions.extend(_conditions(inner, (*path, int(inner.tag)), level))
    return conditions


def _texts(elem: DataElement, key: str) -> list[str]:
    """The values of `elem` as stripped strings (one empty string for no value)."""
    value: Any = elem.value
    if value is None or value in ("", b""):
        return [""]
    if isinstance(value, bytes):
        raise QueryError(f"query key {key!r} has VR {elem.VR}, which cannot be matched")
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [_text(item, key) for item in items] or [""]


def _text(value: Any, key: str) -> str:
    if isinstance(value, PersonName):
        groups = str(value).split("=")
        if not groups[0].strip() and any(g.strip() for g in groups[1:]):
            raise QueryError(
                f"query key {key!r}: matching on ideographic or phonetic name groups "
                "is not supported; give the alphabetic group"
            )
        return groups[0].strip()
    return str(value).strip()
