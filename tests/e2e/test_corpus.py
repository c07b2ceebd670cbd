"""Acceptance test: every file of the pydicom and pydicom-data corpora through STOW, WADO, QIDO.

Each corpus file is sent in its own STOW-RS request (multipart/related; type="application/dicom",
one part). pydicom, not the archive, decides what should happen to it (see `corpus.py`):

- a file that is not a PS3.10 file with a TransferSyntaxUID and valid SOP Instance, Study and
  Series Instance UIDs, or that is truncated, must be refused: 409 with a FailedSOPSequence item,
  FailureReason C000 and an ErrorComment that says what is wrong. `KNOWN_REJECTED` lists them by
  name so that any change in the corpus or in pydicom's verdict shows up in review;
- every other file must be stored: 200, and then come back byte for byte from WADO-RS, with
  metadata equal to pydicom's reading of it and every frame of its pixel data.

Duplicate SOP Instance UIDs. Many corpus files are the same instance in several encodings
(MR_small.dcm, MR_small_RLE.dcm, MR_small_bigendian.dcm, ... share one SOPInstanceUID). The
files are stored in label order into one archive ("main", default settings), so the expected
outcome of each is known in advance from (SOPInstanceUID, sha256): the first valid file of a UID
is stored; a later file with the same bytes is accepted again (200, nothing changes); a later
file with different bytes is refused with FailureReason 0111. That checks the duplicate rule
on real data, but would leave those later variants (big endian, RLE, JPEG-LS ... of the same
image) unverified. So each of them is then sent, in the same order, to a second archive started
with `--overwrite` and checked right after it is stored, before the next variant of the same UID
replaces it. Every valid file is thus verified exactly once, and "main" holds a known set of
instances for the QIDO check.

All HTTP traffic happens in the module fixture, which records what came back; the tests then
compare those records with pydicom, one test per file and aspect, so a failure names the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from tests.e2e.corpus import (
    PYDICOM_DATA_ROOT,
    CorpusFile,
    Problem,
    corpus,
    encapsulated_frames,
    image_info,
    native_frame,
    native_frame_length,
    quiet,
)
from tests.e2e.multipart import encode_multipart, media_type_params, parse_multipart
from tests.support.server import running_server

# --- what must be refused, and why (pydicom's verdict, checked by test_known_rejected) -------

_PART10 = r"part ?10|DICM|preamble|file meta"
_TRUNCATED = r"truncat|end of (the )?file|ends (early|inside|before)"

# label -> (problem, pattern the ErrorComment must match, case-insensitive)
KNOWN_REJECTED: dict[str, tuple[Problem, str]] = {
    # not DICOM at all, or a dataset without the PS3.10 header
    "pydicom-data/OT-PAL-8-face.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/ExplVR_BigEndNoMeta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/ExplVR_LitEndNoMeta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/no_meta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/rtstruct.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/README.txt": (Problem.NOT_PART10, _PART10),
    "pydicom/crayons.icc": (Problem.NOT_PART10, _PART10),
    "pydicom/dicomdirtests/README.txt": (Problem.NOT_PART10, _PART10),
    "pydicom/dicomdirtests/TINY_ALPHA/README": (Problem.NOT_PART10, _PART10),
    "pydicom/rtplan.dump": (Problem.NOT_PART10, _PART10),
    "pydicom/rtstruct.dump": (Problem.NOT_PART10, _PART10),
    "pydicom/test1.json": (Problem.NOT_PART10, _PART10),
    "pydicom/test_PN.json": (Problem.NOT_PART10, _PART10),
    "pydicom/zipMR.gz": (Problem.NOT_PART10, _PART10),
    # file meta without (0002,0010)
    "pydicom/meta_missing_tsyntax.dcm": (Problem.NO_TRANSFER_SYNTAX, r"TransferSyntaxUID"),
    # the data ends inside an element
    "pydicom/MR_truncated.dcm": (Problem.TRUNCATED, _TRUNCATED),
    "pydicom/rtplan_truncated.dcm": (Problem.TRUNCATED, _TRUNCATED),
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": (Problem.TRUNCATED, _TRUNCATED),
    # valid PS3.10 files that are no storable instance: the comment names a missing UID
    "pydicom/JPEGLSNearLossless_08.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/JPEGLSNearLossless_16.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/SC_rgb_jls_lossy_line.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/SC_rgb_jls_lossy_sample.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/UN_sequence.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/empty_charset_LEI.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/nested_priv_SQ.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/no_meta_group_length.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/priv_SQ.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    # media storage directories (DICOMDIR) are PS3.10 files but not instances
    "pydicom/dicomdirtests/DICOMDIR": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/dicomdirtests/DICOMDIR-bigEnd": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-empty.dcm": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-implicit": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    # Its last Directory Record item declares 248 bytes where 224 are left (the offsets were
    # removed without fixing the item lengths): pydicom reads on, a strict parser may call it
    # truncated first. Either reason is right.
    "pydicom/dicomdirtests/DICOMDIR-nooffset": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID|" + _TRUNCATED,
    ),
    "pydicom/dicomdirtests/DICOMDIR-nopatient": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-reordered": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/TINY_ALPHA/DICOMDIR": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    # UIDs that are 64 hex digits, not digits and dots
    "pydicom-data/bad_sequence.dcm": (Problem.INVALID_UID, r"(SOP|Study|Series)InstanceUID"),
}

# Images whose frames the archive cannot index; /frames must then answer 501 with a reason.
# label -> why
FRAMES_NOT_INDEXED: dict[str, str] = {
    "pydicom/image_dfl.dcm": "deflated transfer syntax: no byte offsets into the inflated data",
}

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
BULK_ACCEPT = "multipart/related; type=application/octet-stream"
C000, DUPLICATE = 0xC000, 0x0111
LITTLE_ENDIAN_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
BIG_ENDIAN_SYNTAX = "1.2.840.10008.1.2.2"
_PIXEL_DATA = "7FE00010"


# --- the expected outcome of each STOW on "main" ---------------------------------------------


class Outcome(Enum):
    STORED = "stored"  # first valid file with its SOPInstanceUID
    IDENTICAL = "identical"  # same bytes as a file stored before: accepted, nothing changes
    DUPLICATE = "duplicate"  # different bytes, SOPInstanceUID already stored: 0111
    REJECTED = "rejected"  # not a storable PS3.10 file: C000


def expected_outcomes() -> dict[str, Outcome]:
    first: dict[str, str] = {}  # SOPInstanceUID -> sha256 of the file stored for it
    outcomes: dict[str, Outcome] = {}
    for f in corpus():
        if not f.valid:
            outcomes[f.label] = Outcome.REJECTED
            continue
        assert f.sop_instance_uid
        if f.sop_instance_uid not in first:
            first[f.sop_instance_uid] = f.sha256
            outcomes[f.label] = Outcome.STORED
        elif first[f.sop_instance_uid] == f.sha256:
            outcomes[f.label] = Outcome.IDENTICAL
        else:
            outcomes[f.label] = Outcome.DUPLICATE
    return outcomes


OUTCOMES = expected_outcomes()
FILES = {f.label: f for f in corpus()}
# Verified on "main" (STORED) or on the overwrite archive (DUPLICATE): every distinct valid file.
VERIFIED = [label for label, o in OUTCOMES.items() if o in (Outcome.STORED, Outcome.DUPLICATE)]


# --- what came back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartDigest:
    content_type: str
    length: int
    sha256: str


@dataclass(frozen=True)
class Fetched:
    """A GET: status, Content-Type, the parts of a multipart answer, or the error text."""

    url: str
    status: int
    content_type: str
    parts: tuple[PartDigest, ...] = ()
    single: PartDigest | None = None  # a 200 that is not multipart
    text: str = ""

    def describe(self) -> str:
        return f"GET {self.url} -> {self.status} {self.content_type!r} {self.text[:300]!r}"


@dataclass
class Observation:
    label: str
    archive: str  # "main" or "overwrite"
    base: str  # the archive's DICOMweb root
    stow_status: int = 0
    stow_body: Any = None
    instance: Fetched | None = None
    metadata: Any = None
    metadata_fetch: Fetched | None = None
    frames: dict[int, Fetched] = field(default_factory=dict)
    frame_after_last: Fetched | None = None
    bulk: dict[str, Fetched] = field(default_factory=dict)  # BulkDataURI -> answer


def _digest(content_type: str, data: bytes) -> PartDigest:
    return PartDigest(content_type, len(data), hashlib.sha256(data).hexdigest())


def fetch(client: httpx.Client, url: str, accept: str) -> Fetched:
    response = client.get(url, headers={"Accept": accept})
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200:
        return Fetched(url, response.status_code, content_type, text=response.text)
    if not content_type.lower().startswith("multipart/"):
        return Fetched(url, 200, content_type, single=_digest(content_type, response.content))
    try:
        parts = parse_multipart(content_type, response.content)
    except ValueError as exc:
        return Fetched(url, 200, content_type, text=f"malformed multipart body: {exc}")
    return Fetched(
        url, 200, content_type, parts=tuple(_digest(p.content_type, p.body) for p in parts)
    )


def instance_path(f: CorpusFile) -> str:
    return (
        f"/studies/{f.study_instance_uid}/series/{f.series_instance_uid}"
        f"/instances/{f.sop_instance_uid}"
    )


def stow(client: httpx.Client, f: CorpusFile, obs: Observation) -> None:
    content_type, body = encode_multipart([f.path.read_bytes()])
    response = client.post("/studies", content=body, headers={"Content-Type": content_type})
    obs.stow_status = response.status_code
    try:
        obs.stow_body = response.json()
    except json.JSONDecodeError:
        obs.stow_body = response.text


def _bulk_uris(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "BulkDataURI":
                yield item
            else:
                yield from _bulk_uris(item)
    elif isinstance(value, list):
        for item in value:
            yield from _bulk_uris(item)


def observe(client: httpx.Client, f: CorpusFile, obs: Observation) -> None:
    """Everything WADO-RS says about a stored file."""
    path = instance_path(f)
    obs.instance = fetch(client, path, 'multipart/related; type="application/dicom"')
    response = client.get(path + "/metadata", headers={"Accept": "application/dicom+json"})
    obs.metadata_fetch = Fetched(
        response.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        text="" if response.status_code == 200 else response.text,
    )
    if response.status_code == 200:
        obs.metadata = response.json()
        for uri in _bulk_uris(obs.metadata):
            if not uri.endswith("/bulkdata/" + _PIXEL_DATA):  # pixel data: see frames
                obs.bulk[uri] = fetch(client, uri, BULK_ACCEPT)
    ds = f.read()
    image = image_info(ds)
    if image is None:
        return
    count = 1 if f.label in FRAMES_NOT_INDEXED else image.frames
    for number in range(1, count + 1):
        obs.frames[number] = fetch(client, f"{path}/frames/{number}", FRAME_ACCEPT)
    if f.label not in FRAMES_NOT_INDEXED:
        obs.frame_after_last = fetch(client, f"{path}/frames/{count + 1}", FRAME_ACCEPT)


@dataclass
class Run:
    main: dict[str, Observation]  # every corpus file, stored in label order
    overwrite: dict[str, Observation]  # the DUPLICATE files, on the --overwrite archive
    studies_status: int  # QIDO /studies on "main"
    studies: Any


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    main: dict[str, Observation] = {}
    with running_server(tmp_path_factory.mktemp("corpus-main")) as url:
        base = f"{url}/dicomweb"
        with httpx.Client(base_url=base, timeout=60) as client:
            for f in corpus():
                stow(client, f, main.setdefault(f.label, Observation(f.label, "main", base)))
            for label, outcome in OUTCOMES.items():
                if outcome is Outcome.STORED:
                    observe(client, FILES[label], main[label])
            response = client.get("/studies", params={"limit": "1000"})
            studies = response.json() if response.status_code == 200 else response.text
            studies_status = response.status_code
    overwrite: dict[str, Observation] = {}
    with running_server(tmp_path_factory.mktemp("corpus-overwrite"), "--overwrite") as url:
        base = f"{url}/dicomweb"
        with httpx.Client(base_url=base, timeout=60) as client:
            for label, outcome in OUTCOMES.items():
                if outcome is Outcome.DUPLICATE:
                    # stored and checked before the next variant of its UID replaces it
                    obs = overwrite[label] = Observation(label, "overwrite", base)
                    stow(client, FILES[label], obs)
                    if obs.stow_status == 200:
                        observe(client, FILES[label], obs)
    return Run(main, overwrite, studies_status, studies)


def verified(run: Run, label: str) -> Observation:
    """The record of the archive a valid file was checked on; it must have been stored."""
    obs = run.overwrite[label] if OUTCOMES[label] is Outcome.DUPLICATE else run.main[label]
    assert obs.stow_status == 200, (
        f"{label} was not stored on the {obs.archive} archive ({obs.stow_status}): {obs.stow_body}"
    )
    return obs


# --- pydicom's verdict ---------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    labels = set(FILES)
    data = {f"pydicom-data/{p.name}" for p in PYDICOM_DATA_ROOT.glob("*.dcm")}
    assert len(data) >= 60 and data <= labels
    assert len(labels - data) >= 170  # pydicom's own files (176 with pydicom 3.0)
    assert "pydicom/dicomdirtests/DICOMDIR" in labels  # names without .dcm are included


def test_known_rejected() -> None:
    """The explicit table above is exactly what pydicom says cannot be stored."""
    computed = {f.label: f.problem for f in corpus() if f.problem is not None}
    assert computed == {label: problem for label, (problem, _) in KNOWN_REJECTED.items()}


def test_duplicate_groups_are_known() -> None:
    """The corpus really has same-UID variants; the expectation depends on them."""
    outcomes = Counter(OUTCOMES.values())
    assert outcomes[Outcome.DUPLICATE] > 40
    assert outcomes[Outcome.IDENTICAL] >= 2  # e.g. US1_J2KR.dcm == examples_jpeg2k.dcm
    assert OUTCOMES["pydicom/MR_small.dcm"] is Outcome.STORED
    assert OUTCOMES["pydicom/MR_small_bigendian.dcm"] is Outcome.DUPLICATE


# --- STOW ------------------------------------------------------------------------------------


def _items(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return list(body.get(tag, {}).get("Value", []))


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


@pytest.mark.parametrize("label", list(OUTCOMES))
def test_stow(run: Run, label: str) -> None:
    f = FILES[label]
    outcome = OUTCOMES[label]
    obs = run.main[label]
    failed = _items(obs.stow_body, "00081198")
    stored = _items(obs.stow_body, "00081199")
    if outcome in (Outcome.STORED, Outcome.IDENTICAL):
        assert (obs.stow_status, failed) == (200, []), obs.stow_body
        assert [_value(i, "00081155") for i in stored] == [f.sop_instance_uid]
        assert _value(stored[0], "00081150"), "ReferencedSOPClassUID missing"
        return
    assert obs.stow_status == 409, obs.stow_body
    assert stored == []
    assert len(failed) == 1, obs.stow_body
    reason = _value(failed[0], "00081197")
    comment = _value(failed[0], "00000902")
    assert isinstance(comment, str) and comment.strip(), f"no ErrorComment: {failed[0]}"
    if outcome is Outcome.DUPLICATE:
        assert reason == DUPLICATE, failed[0]
        assert _value(failed[0], "00081155") == f.sop_instance_uid
        assert f.sop_instance_uid in comment
    else:
        assert reason == C000, failed[0]
        _, pattern = KNOWN_REJECTED[label]
        assert re.search(pattern, comment, re.IGNORECASE), (
            f"ErrorComment {comment!r} does not say why {label} is refused "
            f"({f.problem.value if f.problem else ''}: {f.detail}); expected /{pattern}/"
        )


@pytest.mark.parametrize("label", VERIFIED)
def test_stow_retrieve_url(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    (item,) = _items(obs.stow_body, "00081199")
    assert _value(item, "00081190") == obs.base + instance_path(f)
    assert _value(obs.stow_body, "00081190") == f"{obs.base}/studies/{f.study_instance_uid}"


@pytest.mark.parametrize("label", [k for k, o in OUTCOMES.items() if o is Outcome.DUPLICATE])
def test_overwrite_archive_stores_variant(run: Run, label: str) -> None:
    obs = run.overwrite[label]
    assert obs.stow_status == 200, obs.stow_body
    assert [_value(i, "00081155") for i in _items(obs.stow_body, "00081199")] == [
        FILES[label].sop_instance_uid
    ]


# --- WADO-RS instance -------------------------------------------------------------------------


@pytest.mark.parametrize("label", VERIFIED)
def test_instance_is_byte_identical(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    fetched = obs.instance
    assert fetched is not None and fetched.status == 200, fetched and fetched.describe()
    assert media_type_params(fetched.content_type)[1].get("type") == "application/dicom"
    assert len(fetched.parts) == 1, fetched.describe()
    (part,) = fetched.parts
    assert media_type_params(part.content_type)[0] == "application/dicom"
    assert (part.length, part.sha256) == (f.path.stat().st_size, f.sha256)


# --- WADO-RS metadata ---------------------------------------------------------------------------

# Differences from pydicom's `to_json_dict` that are deliberate, applied to pydicom's side:
# - Group Length elements (gggg,0000) are left out: they describe the file's encoding, not
#   the dataset (they are retired, and wrong once a sequence is re-encoded).
# - Binary values of big-endian files are given in little-endian order (JSON carries values,
#   not a byte stream; PS3.18 F.2.7 via the default Explicit VR Little Endian).
# - PS3.18 F.2.5 for empty values, which pydicom writes as "" and [] (see `_normalised`).
# - Values larger than the archive's bulk threshold may be a BulkDataURI instead of the
#   InlineBinary/Value pydicom writes; the URI must resolve to exactly the value's bytes
#   (checked in test_bulkdata).
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


def _swap(data: bytes, width: int) -> bytes:
    usable = len(data) - len(data) % width
    out = bytearray(data)
    for k in range(width):
        out[k:usable:width] = data[width - 1 - k : usable : width]
    return bytes(out)


def _normalised(value: dict[str, Any]) -> dict[str, Any]:
    """PS3.18 F.2.5 where pydicom's to_json_dict differs: an attribute without a value has no
    "Value" (pydicom writes [] for an empty sequence), and an empty value inside a
    multi-valued attribute is null (pydicom writes "")."""
    if value.get("Value") == []:
        del value["Value"]
    if value.get("vr") != "SQ" and "Value" in value:
        value["Value"] = [None if v in ("", {}) else v for v in value["Value"]]
    return value


def _undecodable(elem: DataElement) -> dict[str, Any]:
    """What an element pydicom cannot write as JSON must look like: badVR.dcm's IS '1A' is no
    number, so it stays text (F.2.3 allows no other lossless form)."""
    values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
    return {"vr": elem.VR, "Value": [str(v).strip() or None for v in values]}


def pydicom_json(ds: Dataset, big_endian: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with quiet():
        for elem in ds:
            if elem.tag.element == 0:
                continue
            try:
                value = elem.to_json_dict(None, 1 << 40)
            except ValueError:
                value = _undecodable(elem)
            if big_endian and "InlineBinary" in value and elem.VR in _WORD:
                raw = base64.b64decode(value["InlineBinary"])
                value["InlineBinary"] = base64.b64encode(_swap(raw, _WORD[elem.VR])).decode()
            if elem.VR == "SQ" and value.get("Value"):
                value["Value"] = [pydicom_json(item, big_endian) for item in elem.value]
            out[f"{elem.tag:08X}"] = _normalised(value)
    return out


def compare_json(
    actual: Any, expected: Any, where: str, problems: list[str], bulk: set[str]
) -> None:
    if isinstance(actual, dict) and "BulkDataURI" in actual:
        if not isinstance(expected, dict) or actual.get("vr") != expected.get("vr"):
            problems.append(f"{where}: {actual} but pydicom has {str(expected)[:200]}")
        bulk.add(actual["BulkDataURI"])
        return
    if isinstance(actual, dict) and isinstance(expected, dict):
        for key in sorted(set(actual) | set(expected)):
            if key not in actual:
                problems.append(f"{where}/{key}: missing (pydicom: {str(expected[key])[:200]})")
            elif key not in expected:
                problems.append(f"{where}/{key}: unexpected {str(actual[key])[:200]}")
            else:
                compare_json(actual[key], expected[key], f"{where}/{key}", problems, bulk)
        return
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            compare_json(a, e, f"{where}[{index}]", problems, bulk)
        return
    if actual != expected:
        problems.append(f"{where}: {str(actual)[:200]} != pydicom {str(expected)[:200]}")


@pytest.mark.parametrize("label", VERIFIED)
def test_metadata_matches_pydicom(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    assert obs.metadata_fetch is not None and obs.metadata_fetch.status == 200, (
        obs.metadata_fetch and obs.metadata_fetch.describe()
    )
    assert isinstance(obs.metadata, list) and len(obs.metadata) == 1
    ds = f.read()
    expected = pydicom_json(ds, big_endian=not UID(f.transfer_syntax_uid).is_little_endian)
    if UID(f.transfer_syntax_uid).is_deflated:
        # Deflated objects have no byte offsets to serve pixel data from, so the archive
        # leaves Pixel Data out of their metadata rather than give a URI it cannot serve
        # (README, limitations).
        assert _PIXEL_DATA not in obs.metadata[0]
        expected.pop(_PIXEL_DATA, None)
    problems: list[str] = []
    bulk: set[str] = set()
    compare_json(obs.metadata[0], expected, "", problems, bulk)
    assert not problems, "\n".join(problems)
    prefix = obs.base + instance_path(f) + "/bulkdata/"
    assert all(uri.startswith(prefix) for uri in bulk), sorted(bulk)


def _element_at(ds: Dataset, path: str) -> RawDataElement | Any:
    """The element a bulkdata path names: '00880200/0/7FE00010' -> ds[0x00880200][0][...]."""
    parts = path.split("/")
    current: Any = ds
    for index, part in enumerate(parts):
        if index % 2:
            current = current[int(part)]
        else:
            with quiet():
                current = current[int(part, 16)]
            if index < len(parts) - 1:
                current = current.value
    return current


@pytest.mark.parametrize("label", VERIFIED)
def test_bulkdata(run: Run, label: str) -> None:
    """Every BulkDataURI (pixel data aside) serves exactly the element's value."""
    obs = verified(run, label)
    f = FILES[label]
    ds = f.read()
    prefix = obs.base + instance_path(f) + "/bulkdata/"
    problems = []
    for uri, fetched in sorted(obs.bulk.items()):
        if fetched.status != 200 or len(fetched.parts) != 1:
            problems.append(fetched.describe())
            continue
        elem = _element_at(ds, uri.removeprefix(prefix))
        with quiet():
            raw = bytes(elem.value) if isinstance(elem.value, bytes | bytearray) else None
        if raw is None:
            continue  # a non-binary VR (long text, numbers): the encoded value is compared above
        (part,) = fetched.parts
        syntax = media_type_params(part.content_type)[1].get("transfer-syntax")
        if syntax in LITTLE_ENDIAN_SYNTAXES and not UID(f.transfer_syntax_uid).is_little_endian:
            raw = _swap(raw, _WORD.get(elem.VR, 1))
        if (part.length, part.sha256) != (len(raw), hashlib.sha256(raw).hexdigest()):
            problems.append(
                f"{uri}: {part.length} bytes ({part.content_type}) differ from the "
                f"{len(raw)}-byte value of {elem.tag} {elem.VR}"
            )
    assert not problems, "\n".join(problems)


# --- WADO-RS frames --------------------------------------------------------------------------


@pytest.mark.parametrize("label", VERIFIED)
def test_frames(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    ds = f.read()
    image = image_info(ds)
    if image is None:
        assert obs.frames == {}
        return
    if label in FRAMES_NOT_INDEXED:
        fetched = obs.frames[1]
        assert fetched.status == 501, fetched.describe()
        assert "frame" in fetched.text.lower(), fetched.describe()
        return
    expected_parts: list[bytes] | None = None
    if image.encapsulated:
        expected_parts = encapsulated_frames(ds, image.frames)
        assert len(expected_parts) == image.frames
    problems = []
    for number, fetched in sorted(obs.frames.items()):
        if fetched.status != 200 or len(fetched.parts) != 1:
            problems.append(fetched.describe() + f" ({len(fetched.parts)} parts)")
            continue
        (part,) = fetched.parts
        media_type, params = media_type_params(part.content_type)
        syntax = params.get("transfer-syntax")
        if expected_parts is not None:
            expected = expected_parts[number - 1]
            if syntax != f.transfer_syntax_uid:
                problems.append(
                    f"frame {number}: part {part.content_type!r} is not labelled "
                    f"with the stored syntax {f.transfer_syntax_uid}"
                )
        else:
            if media_type != "application/octet-stream":
                problems.append(f"frame {number}: native frame sent as {part.content_type!r}")
            if syntax not in LITTLE_ENDIAN_SYNTAXES | {BIG_ENDIAN_SYNTAX}:
                problems.append(
                    f"frame {number}: part {part.content_type!r} names no native syntax"
                )
            little = syntax != BIG_ENDIAN_SYNTAX
            expected = native_frame(ds, number - 1, little_endian=little)
            assert len(expected) == native_frame_length(ds)
        if (part.length, part.sha256) != (len(expected), hashlib.sha256(expected).hexdigest()):
            problems.append(
                f"frame {number}: {part.length} bytes labelled {part.content_type!r}, "
                f"expected {len(expected)} bytes"
                + (" (same length, different content)" if part.length == len(expected) else "")
            )
    after = obs.frame_after_last
    if after is None or after.status != 404:
        problems.append(f"frame {image.frames + 1} should be 404: {after and after.describe()}")
    assert not problems, "\n".join(problems)


# --- QIDO-RS ---------------------------------------------------------------------------------


def test_qido_studies_counts(run: Run) -> None:
    """/studies on "main" lists each stored study once with its exact instance count."""
    expected: Counter[str] = Counter()
    for label, outcome in OUTCOMES.items():
        if outcome is Outcome.STORED:
            expected[str(FILES[label].study_instance_uid)] += 1
    assert run.studies_status == 200, run.studies
    found = [_value(s, "0020000D") for s in run.studies]
    assert sorted(found) == sorted(expected), "each stored study exactly once"
    counts = {_value(s, "0020000D"): _value(s, "00201208") for s in run.studies}
    assert counts == dict(expected)
