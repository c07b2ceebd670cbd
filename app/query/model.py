"""The query model shared by QIDO-RS and C-FIND.

A `Query` is pure data: which level is searched, which conditions rows must meet, which
attributes the caller wants back and which page. Parsers (`qido.py`, later `identifier.py`)
build it; `sql.py` compiles it for a database dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from app.dicom.levels import Level

__all__ = ["Condition", "Level", "Match", "Query"]


class Match(StrEnum):
    """Kinds of attribute matching (PS3.4 C.2.2.2)."""

    SINGLE = "single"  # exact value; case-insensitive for PN
    UID_LIST = "uid_list"  # any of several UIDs
    WILDCARD = "wildcard"  # '*' and '?' anywhere in the value
    RANGE = "range"  # DA, TM, DT (and numbers): lower and/or upper bound, inclusive
    FUZZY = "fuzzy"  # person name, any name component starts with the value


@dataclass(frozen=True)
class Condition:
    """One matching key.

    `path` is the tag path: one tag for top-level attributes, several for a sequence
    attribute such as RequestAttributesSequence > ScheduledProcedureStepID.
    `values` holds one value for SINGLE, WILDCARD and FUZZY, the UIDs for UID_LIST, and
    (lower, upper) for RANGE where an open end is the empty string. Range bounds and DA/TM/DT
    single values are already normalized to the stored form (see `query/columns.py`).
    """

    path: tuple[int, ...]
    vr: str
    match: Match
    values: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    level: Level
    conditions: tuple[Condition, ...] = ()
    # Attributes requested with includefield, on top of the level's defaults.
    include: frozenset[int] = field(default_factory=frozenset)
    include_all: bool = False
    limit: int = 100
    offset: int = 0
    fuzzy: bool = False
    # Query keys the caller sent that we accept but do not match on (reported as a warning).
    ignored: tuple[str, ...] = ()
