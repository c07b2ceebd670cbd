"""Attributes by keyword, through pydicom's data dictionary, so that code names them as the
standard does rather than by hexadecimal tags."""

from __future__ import annotations

from functools import cache

from pydicom.datadict import tag_for_keyword


@cache
def tag(keyword: str) -> int:
    """The tag of a keyword (a KeyError for a misspelt one)."""
    found = tag_for_keyword(keyword)
    if found is None:
        raise KeyError(f"{keyword!r} is not a DICOM keyword")
    return found


def tags(*keywords: str) -> frozenset[int]:
    return frozenset(tag(k) for k in keywords)


@cache
def json_key(keyword: str) -> str:
    """The key of an attribute in DICOM JSON (PS3.18 F.2.1.1): its tag as 8 hex digits."""
    return f"{tag(keyword):08X}"
