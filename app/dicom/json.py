"""DICOM JSON (PS3.18 Annex F) encoding of a pydicom Dataset.

pydicom decodes each value (character sets, ambiguous VRs, private dictionaries); this
module turns the decoded values into the JSON model itself because pydicom's
`DataElement.to_json_dict` gets several cases wrong: it raises on empty values inside a
multi-valued IS, DS or PN and on non-numeric IS/DS, truncates IS "1.5" to 1, writes empty
PN component groups and "" where F.2.5 wants null, and would load deferred values.

Elements are visited in tag order and never loaded when deferred: a `RawDataElement` whose
value is None (pydicom's `defer_size`) must be given a BulkDataURI by the `bulk` callback.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, cast

from pydicom import config as pydicom_config
from pydicom.charset import custom_encoders, default_encoding, handled_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.valuerep import AMBIGUOUS_VR, PersonName

Element = RawDataElement | DataElement
# (path, element) -> BulkDataURI, or None to inline the value. The path names the element
# from the top-level dataset: "7FE00010", or "00880200/0/7FE00010" for the element
# (7FE0,0010) in item 0 of the sequence (0088,0200).
BulkHandler = Callable[[str, Element], str | None]
WarningSink = Callable[[str], None]

# VRs whose value is an octet stream: InlineBinary or BulkDataURI (PS3.18 F.2.7).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# VRs for which PS3.18 F.2.2 allows a BulkDataURI in place of the value.
BULK_VRS = frozenset(
    {"DS", "FL", "FD", "IS", "LT", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "ST"}
    | {"SV", "UC", "UL", "UN", "US", "UT", "UV"}
)

# Path of the element pydicom is decoding, so that a caller collecting pydicom's warnings
# can say which attribute a warning is about.
decoding_path: ContextVar[str] = ContextVar("decoding_path", default="")

_SPECIFIC_CHARACTER_SET = frozenset({0x00080005})  # a set: BaseTag's == is slow
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
# Valid DS and IS values (PS3.5 Table 6.2-1), leading and trailing spaces allowed.
_DS = re.compile(rb" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_IS = re.compile(rb" *[+-]?[0-9]+ *")
# What pydicom accepts as a UID without a warning (its VR_REGEXES["UI"], 64 characters).
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_UID_LENGTH = 64
# Decoded as ISO 8859-1 whatever the character set, and not checked when read (pydicom's
# convert_string, with datetime_conversion off as by default).
_LATIN1_STRINGS = frozenset({"AS", "CS", "DA", "DT", "TM"})
# Text VRs pydicom decodes with the character set, and the length it warns beyond.
_TEXT_LIMITS: dict[str, int | None] = {"SH": 16, "LO": 64, "UC": None}
_TEXT_LIMITS |= {"ST": 1024, "LT": 10240, "UT": None}
_SINGLE_TEXT = frozenset({"ST", "LT", "UT"})  # one value: backslashes are text
_PN_LENGTH = 64  # per component group
# Encodings pydicom re-encodes a name with its own encoders (JIS X 0201/0208/0212), which
# refuse some ASCII with a warning when reading it (pydicom's convert_PN encodes each name
# it decodes): names in these take the general path, which gives that warning.
_NAME_RECODERS = frozenset(custom_encoders) | frozenset(handled_encodings)
# Printable ASCII and the text VRs' control characters (TAB, LF, FF, CR): no escape
# sequence, so any ASCII-compatible character set decodes them as ASCII.
_PLAIN_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\x0c\r"
_PLAIN_TEXT = re.compile(rb"[\x20-\x7e\t\n\x0c\r]*")
_JSON_INTEGERS = (-(2**63), 2**64 - 1)  # what orjson writes
_STRUCT_CODES = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q"}
_STRUCT_CODES |= {"FL": "f", "FD": "d"}
# pydicom adjusts the first value of these (a negative "US or SS" entry count) itself.
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
# Word size of the binary VRs whose values must be swapped when the dataset is big endian:
# JSON carries values in little endian order, like every current transfer syntax.
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def first_value(attrs: Mapping[str, Any], tag: int) -> Any:
    """The first value of `tag` in a DICOM JSON object, or None when absent or empty."""
    values = attrs.get(f"{tag:08X}", {}).get("Value")
    return values[0] if values else None


def encode_dataset(
    ds: Dataset,
    bulk: BulkHandler | None = None,
    *,
    warn: WarningSink | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """The DICOM JSON object of `ds`: keys are upper-case tags in ascending order.

    Binary values go to `bulk` first and are inlined (base64) when it returns None. Values
    pydicom cannot decode are kept as UN octets and reported to `warn`. `prefix` is the
    path of the sequence item `ds` is, ending in "/" (used when recursing).
    """
    encoded: dict[str, Any] = {}
    text = _plain_text_encoding(ds)
    # items() gives the stored elements, undecoded; int keys sort fast (BaseTag's < is Python).
    for tag, stored in sorted(ds.items(), key=lambda item: int(item[0])):
        if not tag & 0xFFFF:  # Group Length is never part of DICOM JSON (PS3.18 F.2.2)
            continue
        key = f"{tag:08X}"
        encoded[key] = _encode_element(ds, stored, prefix + key, bulk, warn, text)
    return encoded


# What `plain_value` returns when pydicom must decode the element.
NOT_PLAIN: Final = object()


def plain_value(ds: Dataset, tag: int) -> Any:
    """The single value of `tag` in `ds` when the fast path reads it (a str, int or float:
    a UID is a str), without decoding it through pydicom or storing anything in `ds`.
    NOT_PLAIN when absent, decoded already, deferred, empty, multi-valued or unusual:
    the caller asks pydicom then (`Dataset.get`), which says what is wrong, if anything."""
    raw = ds.get_item(tag, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is None:
        return NOT_PLAIN
    encoded = _fast_path(raw, _plain_text_encoding(ds))
    values = encoded.get("Value") if encoded is not None else None
    if not values or len(values) != 1 or values[0] is None or isinstance(values[0], dict):
        return NOT_PLAIN
    return values[0]


def element_vr(raw: RawDataElement) -> str:
    """The concrete VR of `raw` without decoding its value (implicit VR: the dictionary's)."""
    vr = raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:  # private or unknown: PS3.5 6.2.2
            return "UN"
    return _concrete_vr(vr, None)


def describe_path(path: str) -> str:
    """'00081140/0/00081150' -> '(0008,1140)[0](0008,1150)', for messages."""
    parts = path.split("/")
    return "".join(
        f"[{part}]" if index % 2 else f"({part[:4]},{part[4:]})" for index, part in enumerate(parts)
    )


def _encode_element(  # noqa: PLR0917 (one call site, in the hot loop)
    ds: Dataset,
    stored: Element,
    path: str,
    bulk: BulkHandler | None,
    warn: WarningSink | None,
    text: str | None,
) -> dict[str, Any]:
    if isinstance(stored, RawDataElement):
        if stored.value is None and stored.length:
            return _deferred(stored, path, bulk)
        fast = _fast_path(stored, text)
        if fast is not None:
            return fast
        elem = _decode(ds, stored, path, warn)
        if elem is None:  # kept as the octets of the file (PS3.5 6.2.2: UN)
            return _binary(stored, "UN", stored.value or b"", path=path, bulk=bulk, little=True)
        little = stored.is_little_endian
    else:
        elem = stored
        little = ds.original_encoding[1] is not False
    return _encode_value(elem, path, bulk, warn, little)


def _deferred(raw: RawDataElement, path: str, bulk: BulkHandler | None) -> dict[str, Any]:
    uri = bulk(path, raw) if bulk is not None else None
    if uri is None:
        raise ValueError(f"{describe_path(path)} was not read (deferred) and has no URI")
    return {"vr": element_vr(raw), "BulkDataURI": uri}


def _fast_path(raw: RawDataElement, text: str | None) -> dict[str, Any] | None:
    """The JSON of the commonest valid values without building pydicom objects: binary
    numbers, well-formed IS/DS, UIDs, code strings, dates and times, and (when `text`, the
    dataset's first encoding, decodes ASCII as ASCII) plain ASCII text and names;
    nearly every element of a typical image. The result equals pydicom's decoding
    (tests/unit/dicom/test_json_fast.py compares them); anything unusual (and so any
    value pydicom would warn about) returns None and takes the general path."""
    vr = raw.VR or _public_vr(int(raw.tag))  # int(): BaseTag's == is slow in the cache
    value = raw.value
    if not value or vr is None or raw.tag in _LUT_DESCRIPTORS:
        return None
    code = _STRUCT_CODES.get(vr)
    if code is not None:
        return _binary_numbers(vr, code, value, raw.is_little_endian)
    if vr == "DS":
        return _number_strings(vr, value, _DS, 16, float)
    if vr == "IS":
        return _number_strings(vr, value, _IS, 12, int)
    if vr == "UI":
        return _uids(value)
    if vr in _LATIN1_STRINGS and not pydicom_config.datetime_conversion:
        return _strings(vr, value.decode("latin-1").rstrip(" \x00").split("\\"))
    if text is None or not _PLAIN_TEXT.fullmatch(value):
        return None
    if vr in _TEXT_LIMITS:
        return _texts(vr, value.decode("ascii"), _TEXT_LIMITS[vr])
    if vr == "PN" and text not in _NAME_RECODERS:
        return _person_names(value.rstrip(b"\x00 ").decode("ascii"))
    return None


def _plain_text_encoding(ds: Dataset) -> str | None:
    """The first encoding of `ds`'s character set, the one pydicom decodes text without
    escape sequences with, if it reads ASCII as ASCII (the default, Latin-1, UTF-8 ...)."""
    charset = ds.original_character_set or ds._character_set
    first = charset if isinstance(charset, str) else charset[0] if charset else default_encoding
    return first if _decodes_ascii(first) else None


@lru_cache(maxsize=64)
def _decodes_ascii(encoding: str) -> bool:
    try:
        return _PLAIN_TEXT_BYTES.decode(encoding) == _PLAIN_TEXT_BYTES.decode("ascii")
    except (LookupError, UnicodeError):  # unknown: pydicom warns, the general path says so
        return False


def _uids(value: bytes) -> dict[str, Any] | None:
    """UI as pydicom's convert_UI: trailing NULs and spaces off, split on backslashes;
    pydicom checks each UID (a warning), so only valid ones are taken here."""
    items = value.decode("latin-1").rstrip("\x00 ").split("\\")
    for item in items:
        if item and (len(item) > _UID_LENGTH or not _UID.fullmatch(item)):
            return None
    return _strings("UI", items)


def _strings(vr: str, items: list[str]) -> dict[str, Any]:
    """The JSON of values already split: one empty value is no value, an empty value
    among several is null (F.2.5)."""
    if len(items) == 1 and not items[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": [item or None for item in items]}


def _texts(vr: str, decoded: str, limit: int | None) -> dict[str, Any] | None:
    """SH, LO, UC (split, then each value's trailing NULs and spaces off) and ST, LT, UT
    (one value), as pydicom's convert_text and convert_single_string; a value over the
    VR's length (which pydicom warns about) takes the general path."""
    items = [decoded] if vr in _SINGLE_TEXT else decoded.split("\\")
    if limit is not None and any(len(item) > limit for item in items):
        return None
    return _strings(vr, [item.rstrip("\x00 ") for item in items])


def _person_names(decoded: str) -> dict[str, Any] | None:
    """PN as pydicom's convert_PN and PersonName read it: at most three component groups
    of at most 64 characters each (otherwise a warning: the general path), trailing empty
    groups dropped; F.2.2 keeps the non-empty groups, an empty name is null (F.2.5)."""
    names: list[dict[str, str] | None] = []
    for item in decoded.split("\\"):
        groups = item.split("=")
        if len(groups) > len(_PN_GROUPS) or any(len(group) > _PN_LENGTH for group in groups):
            return None
        name = {key: group for key, group in zip(_PN_GROUPS, groups, strict=False) if group}
        names.append(name or None)
    if len(names) == 1 and names[0] is None:
        return {"vr": "PN"}
    return {"vr": "PN", "Value": names}


@lru_cache(maxsize=4096)
def _public_vr(tag: int) -> str | None:
    """The dictionary VR of an implicit VR element, if unambiguous (not private)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return None if " or " in vr else vr


def _binary_numbers(vr: str, code: str, value: bytes, little: bool) -> dict[str, Any] | None:
    size = struct.calcsize(f"<{code}")  # standard sizes: native "L" is 8 bytes
    if len(value) % size:
        return None  # let pydicom decide what a broken length means
    order = "<" if little else ">"
    numbers: Iterable[Any] = struct.unpack(f"{order}{len(value) // size}{code}", value)
    if code in "fd":
        numbers = map(_float, numbers)
    return {"vr": vr, "Value": list(numbers)}


def _number_strings(
    vr: str, value: bytes, syntax: re.Pattern[bytes], max_length: int, kind: type[int | float]
) -> dict[str, Any] | None:
    tokens = value.rstrip(b" \x00").split(b"\\")
    if not all(len(token) <= max_length and syntax.fullmatch(token) for token in tokens):
        return None
    numbers = [kind(token) for token in tokens]
    if kind is int and not all(-(2**31) <= number < 2**31 for number in numbers):
        return None
    if kind is float and not all(map(math.isfinite, numbers)):  # "1e400"
        return None
    return {"vr": vr, "Value": numbers}


def _decode(
    ds: Dataset, raw: RawDataElement, path: str, warn: WarningSink | None
) -> DataElement | None:
    """pydicom's decoding, as `Dataset.__getitem__` does it but without storing the
    result back (half the cost); None if pydicom cannot decode the value."""
    token = decoding_path.set(path)
    try:
        # The character set rule of Dataset.__getitem__ (_character_set: the dataset's own
        # Specific Character Set, else the enclosing dataset's).
        charset = ds.original_character_set or ds._character_set
        if raw.tag in _SPECIFIC_CHARACTER_SET:  # decoded before any charset applies
            charset = default_encoding
        elem = convert_raw_data_element(raw, encoding=charset, ds=ds)
        if elem.VR == "SQ":
            ds._set_pixel_representation(elem)  # as __getitem__ does, for 'US or SS' below
        elif elem.VR in AMBIGUOUS_VR:
            elem = cast(DataElement, correct_ambiguous_vr_element(elem, ds, raw.is_little_endian))
        return elem
    except Exception as exc:  # pydicom raises many types on values it cannot decode
        if warn is not None:
            warn(f"{describe_path(path)} cannot be decoded ({exc}); kept as UN")
        return None
    finally:
        decoding_path.reset(token)


def _encode_value(
    elem: DataElement, path: str, bulk: BulkHandler | None, warn: WarningSink | None, little: bool
) -> dict[str, Any]:
    vr = _concrete_vr(elem.VR, elem.value)
    if vr == "SQ":
        if not elem.value:
            return {"vr": vr}
        items = [
            encode_dataset(item, bulk, warn=warn, prefix=f"{path}/{index}/")
            for index, item in enumerate(elem.value)
        ]
        return {"vr": vr, "Value": items}
    if elem.is_empty:
        return {"vr": vr}
    if vr in BINARY_VRS:
        return _binary(elem, vr, bytes(elem.value), path=path, bulk=bulk, little=little)
    convert: Callable[[Any], Any] = _VALUE_CONVERTERS.get(vr, _text)
    return {"vr": vr, "Value": [convert(value) for value in _values(elem.value)]}


def _binary(
    elem: Element, vr: str, data: bytes, *, path: str, bulk: BulkHandler | None, little: bool
) -> dict[str, Any]:
    uri = bulk(path, elem) if bulk is not None else None
    if uri is not None:
        return {"vr": vr, "BulkDataURI": uri}
    if not little and vr in _WORD_SIZE:
        data = _to_little_endian(data, _WORD_SIZE[vr])
    return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}


def _concrete_vr(vr: str, value: Any) -> str:
    """A single VR for the ambiguous ones pydicom could not resolve ('OB or OW', ...)."""
    if " or " not in vr:
        return vr
    if isinstance(value, bytes | bytearray) or (value is None and "O" in vr):
        # Octets (or unknown values of a VR that allows them): OW is what implicit VR
        # little endian, the only encoding that leaves these unresolved, means (PS3.5 A.1).
        return "OW" if "OW" in vr else "OB" if "OB" in vr else "UN"
    numbers = _values(value) if value is not None else ()
    return "SS" if "SS" in vr and any(n is not None and n < 0 for n in numbers) else "US"


def _values(value: Any) -> Iterable[Any]:
    if isinstance(value, MultiValue | list | tuple):
        return value
    return (value,)


def _to_little_endian(data: bytes, width: int) -> bytes:
    usable = len(data) - len(data) % width
    swapped = bytearray(data)
    for index in range(width):
        swapped[index:usable:width] = data[width - 1 - index : usable : width]
    return bytes(swapped)


# -- one value of each VR family (F.2.4, F.2.5: an empty value in a list is null) ----------


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _person_name(value: Any) -> dict[str, str] | None:
    """Non-empty component groups only (F.2.2); an empty name is null (F.2.5)."""
    if value is None:
        return None
    groups = value.components if isinstance(value, PersonName) else str(value).split("=")
    name = {key: group for key, group in zip(_PN_GROUPS, groups, strict=False) if group}
    return name or None


def _attribute_tag(value: Any) -> str | None:
    return None if value is None else f"{int(value):08X}"


def _integer_string(value: Any) -> int | str | None:
    """IS as a JSON number; text that is no integer stays a string (F.2.3 Note), and so
    does an integer beyond 64 bits (far outside IS's range, and a JSON number that neither
    orjson nor the index's integer columns can hold: it made STOW answer 500)."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        number = int(value)
        return number if _JSON_INTEGERS[0] <= number <= _JSON_INTEGERS[1] else str(number)
    return str(value).strip()


def _decimal_string(value: Any) -> float | str | None:
    """DS as a JSON number; text that is no finite number stays a string (F.2.3 Note)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float | Decimal):
        number = float(value)
        if math.isfinite(number):
            return number
    return str(value).strip()


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    """FL/FD; JSON has no NaN or infinity, so those become null."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_VALUE_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "PN": _person_name,
    "AT": _attribute_tag,
    "IS": _integer_string,
    "DS": _decimal_string,
    "US": _integer,
    "SS": _integer,
    "UL": _integer,
    "SL": _integer,
    "UV": _integer,
    "SV": _integer,
    "FL": _float,
    "FD": _float,
}
