"""Hypothesis strategies for hostile request pieces: text, integers, UIDs, frame lists,
Accept headers. Each mixes plausible values (which reach deep into the handlers) with
hostile ones (NUL and control characters, digits of other scripts, integers beyond any
column, wildcards, ranges and separators in odd places, very long values)."""

from __future__ import annotations

from hypothesis import strategies as st
from pydicom.datadict import keyword_for_tag

from app.query.columns import columns_of

# Characters that mean something to a parser somewhere on the way.
SPECIAL = "\x00\x01\x1f\x7f*?\\-,.;:=&%+/ \t\r\n'\"()[]{}<>|^~_\u0661\u0966\uff11\u00e9\u4e2d"
NON_ASCII_DIGITS = st.text(st.characters(categories=["Nd"], exclude_characters="0123456789"))

SPECIAL_VALUES = [
    "",
    "*",
    "?",
    "\x00",
    "-",
    "--",
    "\\",
    "\\\\",
    "1e400",
    "nan",
    "inf",
    "-0",
    "0x10",
    "1_0",
    "\u0661",  # ARABIC-INDIC DIGIT ONE
    "\u0662\u0660\u0662\u0660\u0660\u0661\u0660\u0661",  # a date in Arabic-Indic digits
    "20200101-",
    "-20200101",
    "20200101-20191231",
    "235959.999999-000000",
    "20200101120000+0100-",
    "C*R",
    "CT\\MR",
    "CT,MR",
    "*^*^*",
    "=?utf-8?q?x?=",
    str(2**31),
    str(-(2**31) - 1),
    str(2**63),
    str(2**64),
    "9" * 40,
    "1." * 40 + "1",
    "x" * 5000,
]

_integers = st.one_of(
    st.integers(-5, 20),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
)
INTEGER_TEXT = st.one_of(
    _integers.map(str),
    NON_ASCII_DIGITS.filter(bool),
    st.tuples(_integers, st.sampled_from(["", " ", "+", ".", "e5", "\x00", "\u0661"])).map(
        lambda t: f"{t[0]}{t[1]}"
    ),
)

HOSTILE_TEXT = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.text(st.sampled_from(SPECIAL + "abcAZ09"), max_size=30),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    INTEGER_TEXT,
    st.lists(st.sampled_from(["*", "?", "A", "1", "\\", "-", "^", "\x00", "."]), max_size=12).map(
        "".join
    ),
)

# A UID position in a path: usually one that exists, sometimes a hostile segment.
UID_TEXT = st.one_of(
    st.sampled_from(["1.2.3", "1.2.840.10008.1.2", "0.0", "1..2", "1.02", "." * 70, "1" * 65]),
    HOSTILE_TEXT,
)

KNOWN_KEYS = sorted(
    {
        name
        for table in ("patient", "study", "series", "instance")
        for column in columns_of(table)
        for name in (keyword_for_tag(column.path[-1]), f"{column.path[-1]:08X}")
        if name
    }
)
OTHER_KEYS = [
    "includefield",
    "limit",
    "offset",
    "fuzzymatching",
    "emptyvaluematching",
    "multiplevaluematching",
    "accept",
    "charset",
    "PatientName",
    "00100010",
    "0010,0010",
    "(0010,0010)",
    "ReferencedStudySequence.ReferencedSOPInstanceUID",
    "00081110.00081155",
    "7FE00010",
    "PixelData",
    "SOPClassesInStudy",
    "",
    " ",
]
QUERY_KEY = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.sampled_from(OTHER_KEYS),
    st.sampled_from(KNOWN_KEYS).map(str.lower),
    st.text(st.sampled_from(SPECIAL + "abcdefABCDEF0123456789"), max_size=12),
)


def frame_list(frames: int) -> st.SearchStrategy[str]:
    """A `{frames}` path segment for an instance of `frames` frames."""
    number = st.one_of(st.integers(1, frames).map(str), INTEGER_TEXT, st.just(""))
    separator = st.sampled_from([",", ",", ",", ", ", ",,", ";", "%2C", " "])
    listed = st.lists(st.tuples(number, separator), min_size=1, max_size=20).map(
        lambda items: "".join(n + s for n, s in items)[: -len(items[-1][1]) or None]
    )
    return st.one_of(
        listed,
        st.integers(1, frames).map(str),
        st.integers(1, 3000).map(lambda n: ",".join(["1"] * n)),
        HOSTILE_TEXT,
    )


MEDIA_TYPES = [
    "application/dicom",
    "application/octet-stream",
    "application/dicom+json",
    "application/json",
    "application/dicom+xml",
    "multipart/related",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/jp2",
    "image/jls",
    "video/mpeg",
    "text/html",
    "*/*",
    "image/*",
    "application/zip",
]
TRANSFER_SYNTAXES = [
    "*",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4.5",
]


def _media_range(parts: tuple[str, str, str | None, str | None, str]) -> str:
    outer, inner, syntax, q, junk = parts
    text = outer
    if outer == "multipart/related":
        text += f'; type="{inner}"'
    if syntax is not None:
        text += f"; transfer-syntax={syntax}"
    if q is not None:
        text += f"; q={q}"
    return text + junk


MEDIA_RANGE = st.tuples(
    st.sampled_from(MEDIA_TYPES),
    st.sampled_from(MEDIA_TYPES),
    st.none() | st.sampled_from(TRANSFER_SYNTAXES),
    st.none() | st.sampled_from(["0", "1", "0.5", "2", "-1", "x", "0.0001"]),
    st.sampled_from(["", "", ";", '; type="', ";;q", "; charset=utf-8"]),
).map(_media_range)

# Header values must be latin-1 and free of line breaks to be sent at all.
_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
ACCEPT = st.one_of(
    st.lists(MEDIA_RANGE, min_size=1, max_size=4).map(", ".join),
    _HEADER_TEXT,
)
