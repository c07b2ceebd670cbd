"""Search documents from an instance's DICOM JSON (PS3.18 Annex F): what the search index
(app/search/) stores for each instance, series and study.

A field is named by tag and VR, `00100010_PN`, `00091001_LO`: by tag because private tags
have no keyword, with the VR because the index template (app/search/mapping.py) chooses the
field's type by it, and because the same tag may arrive under two VRs (a private tag as LO
from one modality and UN from another; an attribute sent as UN by a bridge): each gets a
field of its own instead of a mapping conflict that would reject the document.

Values: an attribute's Value array as is (Elasticsearch indexes arrays as multi-valued
fields); person names as an object of their component groups (Alphabetic, Ideographic,
Phonetic); times as fixed-width HHMMSS.FFFFFF so that a lexical range is a time range;
sequences as an array of item objects, each built like an instance. Bulk data (BulkDataURI,
InlineBinary) and attributes without a value are left out: nothing to search in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.dicom.levels import Level, level_of

# Sequences deeper than this are cut (a structured report's content tree can nest far; the
# index template allows this depth of objects).
MAX_DEPTH = 8
# The top-level fields beside the attributes (no attribute field name starts with a letter
# other than a-f of a hex digit, and these contain no underscore-VR suffix).
TENANT = "tenant"
LEVEL = "level"
STUDY_UID = "study"
SERIES_UID = "series"
SOP_UID = "instance"
SEQUENCE = "sequence"  # the change-log sequence this document was written for

_STUDY_UID_TAG = "0020000D"
_SERIES_UID_TAG = "0020000E"
_SOP_UID_TAG = "00080018"


def attributes(dataset: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """The search fields of a DICOM JSON dataset (an instance or a sequence item)."""
    fields: dict[str, Any] = {}
    for tag, element in dataset.items():
        if not isinstance(element, Mapping):
            continue
        vr = str(element.get("vr", "UN"))
        values = element.get("Value")
        if not values or not isinstance(values, list):
            continue  # no value, or bulk data
        name = f"{tag.upper()}_{vr}"
        if vr == "SQ":
            if depth + 1 >= MAX_DEPTH:
                continue
            items = [attributes(item, depth + 1) for item in values if isinstance(item, Mapping)]
            items = [item for item in items if item]
            if items:
                fields[name] = items
        elif vr == "PN":
            names = [_person_name(value) for value in values if isinstance(value, Mapping)]
            names = [name for name in names if name]
            if names:
                fields[name] = names
        elif vr == "TM":
            fields[name] = [_time(value) for value in values if isinstance(value, str)]
        else:
            kept = [value for value in values if value is not None]
            if kept:
                fields[name] = kept
    return fields


def _person_name(value: Mapping[str, Any]) -> dict[str, str]:
    return {
        group: text
        for group in ("Alphabetic", "Ideographic", "Phonetic")
        if isinstance(text := value.get(group), str) and text
    }


def _time(value: str) -> str:
    """HHMMSS.FFFFFF, missing parts as zeros: `1530` -> `153000.000000`."""
    whole, _, fraction = value.strip().partition(".")
    return f"{whole.ljust(6, '0')}.{fraction.ljust(6, '0')}"


def _uid(dataset: Mapping[str, Any], tag: str) -> str:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, Mapping) else None
    return str(values[0]) if values else ""


def _up_to(dataset: Mapping[str, Any], level: Level) -> dict[str, Any]:
    """The attributes of `dataset` that belong to `level` or above."""
    above = {
        Level.STUDY: (Level.PATIENT, Level.STUDY),
        Level.SERIES: (Level.PATIENT, Level.STUDY, Level.SERIES),
    }[level]
    kept: dict[str, Any] = {}
    for tag, element in dataset.items():
        try:
            number = int(tag, 16)
        except ValueError:
            continue
        if level_of(number) in above:
            kept[tag] = element
    return kept


def documents(
    tenant: str, dataset: Mapping[str, Any], sequence: int
) -> dict[Level, dict[str, Any]]:
    """The study, series and instance documents of a stored instance: the instance's with
    every attribute, the series' with the patient, study and series attributes, the
    study's with the patient and study attributes."""
    uids = {
        STUDY_UID: _uid(dataset, _STUDY_UID_TAG),
        SERIES_UID: _uid(dataset, _SERIES_UID_TAG),
        SOP_UID: _uid(dataset, _SOP_UID_TAG),
    }
    common = {TENANT: tenant, SEQUENCE: sequence}
    return {
        Level.STUDY: {
            **common,
            LEVEL: "study",
            STUDY_UID: uids[STUDY_UID],
            **attributes(_up_to(dataset, Level.STUDY)),
        },
        Level.SERIES: {
            **common,
            LEVEL: "series",
            STUDY_UID: uids[STUDY_UID],
            SERIES_UID: uids[SERIES_UID],
            **attributes(_up_to(dataset, Level.SERIES)),
        },
        Level.INSTANCE: {**common, LEVEL: "instance", **uids, **attributes(dataset)},
    }


def document_id(tenant: str, uid: str) -> str:
    """A document's id: its tenant and its level's unique UID. UIDs hold only digits and
    dots, so the last `/` separates them whatever the tenant's name."""
    return f"{tenant}/{uid}"
