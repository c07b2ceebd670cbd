"""An attribute filter on an instance's DICOM JSON (PS3.18 F.2): keyword -> value, every one
of which must match exactly (e.g. Modality=CT and BodyPartExamined=CHEST), as webhook
subscriptions use it. A multi-valued attribute matches when one of its values does; a
person name by its alphabetic form; a number by its value (so "5" matches 5.0). An
attribute that is absent or empty matches nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

# Value representations whose values are not plain strings or numbers: not filterable.
_UNFILTERABLE = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def check_filter_keyword(keyword: str) -> str:
    """The JSON key (8 hex digits) of a keyword a filter may name; ValueError naming it."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    if any(vr in _UNFILTERABLE for vr in dictionary_VR(tag).split(" or ")):  # "OB or OW"
        raise ValueError(f"{keyword!r} is a sequence or binary attribute, which cannot be matched")
    return f"{tag:08X}"


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


def matches(metadata: Mapping[str, Any], conditions: Iterable[tuple[str, str]]) -> bool:
    """Whether the instance (its DICOM JSON) has each keyword with the wanted value."""
    for keyword, wanted in conditions:
        element = metadata.get(check_filter_keyword(keyword))
        values = element.get("Value") if isinstance(element, dict) else None
        if not isinstance(values, list) or not any(_same(v, wanted) for v in values):
            return False
    return True
