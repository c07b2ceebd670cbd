"""An attribute filter on DICOM JSON (PS3.18 F.2), the one webhook subscriptions and
forwarding rules share: DICOM keyword -> value, every one of which must match exactly
(e.g. Modality=CT and BodyPartExamined=CHEST).

Parsing checks each keyword against pydicom's dictionary: unknown keywords, sequences and
binary attributes, and the study/series attributes the index computes (no instance holds
them) are refused with a message naming the keyword. Matching: a multi-valued attribute
matches when one of its values does; a person name by its alphabetic form; a number by its
value (so "5" and "5.0" match 5). An attribute that is absent or empty matches nothing.
Which datasets an entry is matched on is app/services/entry_attributes.py's job."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

# Value representations whose values are not plain strings or numbers: not filterable.
_UNFILTERABLE = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Study and series attributes the index computes: no instance has them to match.
_COMPUTED = {
    "ModalitiesInStudy": "use Modality",
    "SOPClassesInStudy": "use SOPClassUID",
    "NumberOfStudyRelatedSeries": "counts cannot be matched",
    "NumberOfStudyRelatedInstances": "counts cannot be matched",
    "NumberOfSeriesRelatedInstances": "counts cannot be matched",
}

# A filter as parsed: (DICOM keyword, wanted value as text), in the order given.
Conditions = tuple[tuple[str, str], ...]


def check_filter_keyword(keyword: str) -> str:
    """The JSON key (8 hex digits) of a keyword a filter may name; ValueError naming it."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    if keyword in _COMPUTED:
        raise ValueError(
            f"{keyword} is computed by the archive, not stored in an instance; {_COMPUTED[keyword]}"
        )
    vr = dictionary_VR(tag)  # "OB or OW" for some
    if any(v in _UNFILTERABLE for v in vr.split(" or ")):
        raise ValueError(
            f"{keyword} ({vr}) is a sequence or binary attribute, which cannot be matched"
        )
    return f"{tag:08X}"


def check_filter_value(keyword: str, value: Any) -> str:
    """The text a condition wants: a non-empty text or a number; ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{keyword}: expected a text or number value")
    text = value if isinstance(value, str) else str(value)
    if not text:
        raise ValueError(f"{keyword}: expected a non-empty value")
    return text


def parse_filter(given: Any) -> Conditions:
    """The conditions of a JSON object of keyword: value; ValueError naming what is wrong."""
    if not isinstance(given, dict):
        raise ValueError('expected an object of DICOM keyword: value, e.g. {"Modality": "CT"}')
    conditions = []
    for keyword, value in given.items():
        check_filter_keyword(keyword)
        conditions.append((keyword, check_filter_value(keyword, value)))
    return tuple(conditions)


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # a person name's components
        found = value.get("Alphabetic")
        return found if isinstance(found, str) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return None


def _same(found: Any, wanted: str) -> bool:
    text = _text(found)
    if text is None:
        return False
    if text == wanted:
        return True
    if isinstance(found, int | float):
        try:
            return float(wanted) == float(found)
        except ValueError:
            return False
    return False


def matches(dataset: Mapping[str, Any], conditions: Iterable[tuple[str, str]]) -> bool:
    """Whether the dataset (DICOM JSON) has each keyword with the wanted value."""
    for keyword, wanted in conditions:
        # Not checked again here: a filter stored before a check was added (a computed
        # attribute, say) matches nothing rather than failing every delivery.
        tag = tag_for_keyword(keyword)
        element = dataset.get(f"{tag:08X}") if tag is not None else None
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list) or not any(_same(v, wanted) for v in values):
            return False
    return True


def matches_any(
    datasets: Iterable[Mapping[str, Any]], conditions: Sequence[tuple[str, str]]
) -> bool:
    """Whether one of the datasets has every value; an empty filter matches even none
    (an entry with no attributes: a deleted series or study)."""
    return not conditions or any(matches(d, conditions) for d in datasets)
