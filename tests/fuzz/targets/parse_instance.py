"""atheris target: the DICOM parser STOW-RS and C-STORE run on every received file
(`app.dicom.parse.parse_instance`).

Any exception but `DicomParseError` (the parser's one client-error type, a STOW failure
reason) is a crash; so is a parse that succeeds with metadata the index cannot store as
JSON, or bulk data and frame ranges outside the file (retrieval would read past its end).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["app.dicom"]):
    from app.dicom.parse import DicomParseError, parse_instance

import orjson
from pydicom.uid import UID

_PATH = Path(tempfile.mkdtemp(prefix="fuzz-parse-")) / "instance.dcm"


def _within(offset: int, length: int, size: int, what: str) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise AssertionError(f"{what} ({offset}, {length}) outside the file of {size} bytes")


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        parsed = parse_instance(_PATH)
    except DicomParseError:
        return
    orjson.dumps(parsed.metadata)  # what the index stores
    syntax = UID(parsed.transfer_syntax_uid)
    if syntax.is_transfer_syntax and syntax.is_deflated:
        return  # ranges are in the inflated dataset, not in the file
    for path, bulk in parsed.bulk.items():
        _within(bulk.offset, bulk.length, len(data), f"bulk data {path}")
    for number, frame in enumerate(parsed.frames, 1):
        for offset, length in frame:
            _within(offset, length, len(data), f"frame {number}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
