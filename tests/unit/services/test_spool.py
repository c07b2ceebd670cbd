"""Spool files: a received data set becomes the archive's PS3.10 file, hashed and synced."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from app.services.spool import Received, spool_received, write_chunks
from tests.support.dicom_factory import make_file
from tests.support.fsync import Synced
from tests.support.ingest import received_file


def test_a_received_data_set_becomes_a_part10_file_with_our_file_meta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part10 = make_file(rows=4, columns=4)
    ds = pydicom.dcmread(io.BytesIO(part10))
    received = received_file(tmp_path / "in.dcm", part10, source_ae="CT01")
    synced = Synced(monkeypatch)
    spool = tmp_path / "spool"
    spool.mkdir()
    spooled = spool_received(received, spool)
    data = spooled.path.read_bytes()
    assert spooled.size == len(data)
    assert spooled.sha256 == hashlib.sha256(data).hexdigest()
    assert spooled.path in synced
    back = pydicom.dcmread(spooled.path)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.SourceApplicationEntityTitle == "CT01"
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData
    # The data set's bytes follow our header unchanged.
    assert data.endswith(received.path.read_bytes())


def test_a_failed_copy_leaves_no_spool_file(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    missing = Received(
        tmp_path / "gone.dcm",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        source_ae="CT01",
    )
    with pytest.raises(FileNotFoundError):
        spool_received(missing, spool)
    assert list(spool.iterdir()) == []


def test_write_chunks_appends_and_hashes_across_calls(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    digest = hashlib.sha256()
    handle = write_chunks(None, path, [b"ab", b"cd"], digest)
    handle = write_chunks(handle, path, [b"ef"], digest)
    handle.close()
    assert path.read_bytes() == b"abcdef"
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
