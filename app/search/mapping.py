"""The index template of the search indices: field types chosen by the VR suffix of each
field's name (app/search/documents.py), so that every attribute, private tags and keys in
sequences included, is searchable the moment a document arrives, with no list of tags to
maintain.

- Strings that are codes or names (AE AS AT CS LO SH UC UI UR and unknown VRs): keyword.
  QIDO's case-insensitive matching needs no normalizer: term, prefix and wildcard queries
  take `case_insensitive` (a normalizer needs the analysis-common module, which the test
  distribution does not ship).
- Texts (LT ST UT): text (standard analyzer) with a keyword sub-field of the first 256
  characters for exact matching.
- PN: an object of its component groups, each a keyword (exact and wildcard matching,
  `case_insensitive` at query time) with a `text` sub-field (standard analyzer: lower-cased
  words, so a family or given name alone matches whatever the case).
- DA: date (yyyyMMdd), ranges as dates. TM: keyword of the fixed-width HHMMSS.FFFFFF the
  documents hold, so a lexical range is a time range without a date (a date type would
  invent one). DT: keyword as stored: its optional parts and UTC offsets have no single
  date format; ranges are lexical (good to the precision both sides give).
- Numbers (DS FD FL IS SL SS SV UL US UV): double or long; UV above 2^63 is dropped
  (unsigned_long is an X-Pack mapper).
- SQ: object arrays, flattened: a key in an item matches whatever item it is in. Not nested:
  the default limit is 50 nested fields per index and each item would be a hidden document
  (a CT series' sequences multiply the document count); PS3.4 sequence matching within one
  item is rare enough to be checked on the few hits.

Malformed values (a date `20230230`, a DS `abc`) are ignored field by field
(`ignore_malformed`): a bad attribute must not keep an instance out of the index.
"""

from __future__ import annotations

from typing import Any

from app.search.documents import LEVEL, SEQUENCE, SERIES_UID, SOP_UID, STUDY_UID, TENANT

# Distinct fields an index may hold (Elasticsearch's default 1,000 is reached by a few
# vendors' private tags), and the nesting of sequence objects (documents.MAX_DEPTH and the
# PN groups below it).
TOTAL_FIELDS = 20_000
DEPTH = 20

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
_LONG = {"type": "long", "ignore_malformed": True}
_DOUBLE = {"type": "double", "ignore_malformed": True}
_DATE = {"type": "date", "format": "yyyyMMdd", "ignore_malformed": True}
_NAME_GROUP = {"type": "keyword", "ignore_above": 1024, "fields": {"text": {"type": "text"}}}

_BY_VR: dict[str, dict[str, Any]] = {
    **dict.fromkeys(("AE", "AS", "AT", "CS", "LO", "SH", "UC", "UI", "UR", "TM", "DT"), _KEYWORD),
    **dict.fromkeys(("LT", "ST", "UT"), _TEXT),
    **dict.fromkeys(("IS", "SL", "SS", "SV", "UL", "US", "UV"), _LONG),
    **dict.fromkeys(("DS", "FD", "FL"), _DOUBLE),
    "DA": _DATE,
}


def _templates() -> list[dict[str, Any]]:
    templates: list[dict[str, Any]] = [
        {"person_names": {"match": "*_PN", "mapping": {"type": "object"}}},
        {"person_name_groups": {"path_match": "*_PN.*", "mapping": _NAME_GROUP}},
        {"sequences": {"match": "*_SQ", "mapping": {"type": "object"}}},
    ]
    templates += [{f"vr_{vr}": {"match": f"*_{vr}", "mapping": m}} for vr, m in _BY_VR.items()]
    # Anything else (a VR this table does not know): a keyword, never a guessed type.
    templates.append({"other": {"match_mapping_type": "string", "mapping": _KEYWORD}})
    return templates


def index_template(patterns: list[str]) -> dict[str, Any]:
    """The composable index template for indices named by `patterns`."""
    return {
        "index_patterns": patterns,
        "priority": 100,
        "template": {
            "settings": {
                "index.mapping.total_fields.limit": TOTAL_FIELDS,
                "index.mapping.depth.limit": DEPTH,
            },
            "mappings": {
                "dynamic": True,
                "date_detection": False,
                "numeric_detection": False,
                "dynamic_templates": _templates(),
                "properties": {
                    TENANT: {"type": "keyword"},
                    LEVEL: {"type": "keyword"},
                    STUDY_UID: {"type": "keyword"},
                    SERIES_UID: {"type": "keyword"},
                    SOP_UID: {"type": "keyword"},
                    SEQUENCE: {"type": "long"},
                },
            },
        },
    }
