"""Seeded, damaged DICOM files for the "stored but not servable" regression suite (issue 10).

Each mutant starts from a valid file of the pydicom test corpora (small ones: the suite sends
hundreds), given fresh UIDs of a fixed length so that every mutant is its own study, and then
suffers one to three kinds of damage, at random but reproducibly from the seed:

- bytes flipped, mostly in the header (before the pixel data) where they change meaning;
- a VR replaced by two random letters, or a value length overwritten;
- the file cut short;
- bytes inserted or removed (everything after shifts);
- random bytes over part of the pixel data (codec-level damage only a full decode finds).

Whatever the damage hits, the UIDs may survive it (and the file be stored) or not (refused).
"""

from __future__ import annotations

import io
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from pydicom.uid import UID

from tests.e2e.corpus import corpus, quiet

MAX_BASE_SIZE = 256 * 1024
_UID_LENGTH = 60  # even: the value then needs no padding, so replacing it keeps the length
_PIXEL_TAG = b"\xe0\x7f\x10\x00"


@dataclass(frozen=True)
class Mutant:
    index: int
    base: str  # corpus label
    damage: tuple[str, ...]  # what was done, for messages
    data: bytes


@dataclass(frozen=True)
class _Base:
    label: str
    data: bytes
    uids: tuple[bytes, bytes, bytes]  # placeholder study, series, instance UIDs


def _placeholder(kind: int, index: int) -> str:
    prefix = f"1.2.826.0.1.3680043.10.1000.{kind}.{index}."
    return prefix + "9" * (_UID_LENGTH - len(prefix))


@cache
def bases() -> tuple[_Base, ...]:
    """The corpus's valid small files, rewritten with placeholder UIDs."""
    found: list[_Base] = []
    for index, item in enumerate(f for f in corpus() if f.valid):
        if item.path.stat().st_size > MAX_BASE_SIZE:
            continue
        with quiet():
            try:
                ds = item.read()
                uids = tuple(_placeholder(kind, index) for kind in range(3))
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = uids
                ds.file_meta.MediaStorageSOPInstanceUID = uids[2]
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
            except Exception:  # some corpus files cannot be written back
                continue
        encoded = tuple(uid.encode() for uid in uids)
        found.append(_Base(item.label, buffer.getvalue(), encoded))  # type: ignore[arg-type]
    return tuple(found)


def _fresh_uid(rng: random.Random) -> bytes:
    prefix = "2.25."
    digits = str(rng.randrange(1, 10**50))
    uid = (prefix + digits)[:_UID_LENGTH].ljust(_UID_LENGTH, "1")
    assert UID(uid).is_valid
    return uid.encode()


def _header_end(data: bytes) -> int:
    at = data.rfind(_PIXEL_TAG)
    return at if at > 132 else len(data)


def _flip_bytes(rng: random.Random, data: bytearray) -> str:
    end = _header_end(bytes(data))
    count = rng.randint(1, 8)
    for _ in range(count):
        at = rng.randrange(132, end) if rng.random() < 0.8 else rng.randrange(132, len(data))
        data[at] = rng.randrange(256)
    return f"flipped {count} byte(s)"


def _element_damage(rng: random.Random, data: bytearray) -> str:
    end = _header_end(bytes(data))
    # Element headers begin at even offsets; an explicit VR sits 4 bytes into one.
    at = rng.randrange(132, max(end - 8, 133)) & ~1
    if rng.random() < 0.5:
        data[at + 4 : at + 6] = "".join(rng.choices(string.ascii_uppercase, k=2)).encode()
        return f"VR at {at + 4} replaced"
    width = rng.choice((2, 4))
    data[at + 6 : at + 6 + width] = rng.randbytes(width)
    return f"length at {at + 6} overwritten"


def _truncate(rng: random.Random, data: bytearray) -> str:
    at = rng.randrange(132, len(data))
    del data[at:]
    return f"cut at {at}"


def _shift(rng: random.Random, data: bytearray) -> str:
    at = rng.randrange(132, len(data))
    if rng.random() < 0.5:
        count = rng.randint(1, 4)
        data[at:at] = rng.randbytes(count)
        return f"{count} byte(s) inserted at {at}"
    count = rng.randint(1, 4)
    del data[at : at + count]
    return f"{count} byte(s) removed at {at}"


def _pixel_damage(rng: random.Random, data: bytearray) -> str:
    start = _header_end(bytes(data))
    if start >= len(data) - 16:
        return _flip_bytes(rng, data)
    at = rng.randrange(start + 12, len(data) - 4)
    count = min(rng.randint(4, 256), len(data) - at)
    data[at : at + count] = rng.randbytes(count)
    return f"{count} pixel byte(s) randomised at {at}"


_DAMAGE: tuple[Callable[[random.Random, bytearray], str], ...] = (
    _flip_bytes,
    _flip_bytes,
    _element_damage,
    _element_damage,
    _truncate,
    _shift,
    _pixel_damage,
    _pixel_damage,
)


def mutants(seed: int, count: int, per_series: int = 3) -> Iterator[Mutant]:
    """`count` damaged files, the same ones for the same seed; each run of `per_series`
    shares a study and series (so that series retrieval streams several instances: the
    sender must accept their differing patients, PACS_PATIENT_MISMATCH=warn)."""
    rng = random.Random(seed)
    pool = bases()
    study = series = b""
    for index in range(count):
        if index % per_series == 0:
            study, series = _fresh_uid(rng), _fresh_uid(rng)
        base = rng.choice(pool)
        data = base.data
        for old, new in zip(base.uids, (study, series, _fresh_uid(rng)), strict=True):
            data = data.replace(old, new)
        damaged = bytearray(data)
        damage = tuple(rng.choice(_DAMAGE)(rng, damaged) for _ in range(rng.randint(1, 3)))
        yield Mutant(index, base.label, damage, bytes(damaged))
