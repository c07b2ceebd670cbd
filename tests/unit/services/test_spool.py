"""Spool files: a data set received into a sink becomes the archive's PS3.10 file, hashed,
written once; one that fails while being written leaves nothing behind."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from app.services import spool as spool_module
from app.services.spool import Received, ReceivedSink, write_chunks
from tests.support.dicom_factory import make_file
from tests.support.ingest import data_set_offset

RECEIVED = Received(
    sop_class_uid=CTImageStorage,
    sop_instance_uid="1.2.3.4",
    transfer_syntax_uid=ExplicitVRLittleEndian,
    source_ae="CT01",
)


def _received(part10: bytes) -> Received:
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    return Received(str(ds.SOPClassUID), str(ds.SOPInstanceUID), ExplicitVRLittleEndian, "CT01")


def _write(sink: ReceivedSink, data: bytes, fragment: int = 16384) -> None:
    view = memoryview(data)
    for start in range(0, len(data), fragment):
        sink.write(view[start : start + fragment])


def test_a_received_data_set_becomes_a_part10_file_with_our_file_meta(tmp_path: Path) -> None:
    part10 = make_file(rows=4, columns=4)
    sent = part10[data_set_offset(part10) :]
    sink = ReceivedSink(tmp_path / "x.part", _received(part10))
    _write(sink, sent, fragment=100)
    assert not sink.path.exists()  # a small data set is held until finish
    assert sink.held > len(sent)  # with our header
    spooled = sink.finish()
    data = spooled.path.read_bytes()
    assert spooled.size == len(data)
    assert spooled.sha256 == hashlib.sha256(data).hexdigest()
    back = pydicom.dcmread(spooled.path)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.SourceApplicationEntityTitle == "CT01"
    ds = pydicom.dcmread(io.BytesIO(part10))
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData
    assert data.endswith(sent)  # the data set's bytes follow our header unchanged


def test_a_large_data_set_is_written_as_it_arrives_and_hashed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_BATCH", 4096)
    sent = os.urandom(50_000)
    sink = ReceivedSink(tmp_path / "x.part", RECEIVED)
    _write(sink, sent[:20_000], fragment=1000)
    # Written in batches while receiving: at most one batch held in memory.
    assert sink.path.exists() and 0 < sink.held < 4096
    _write(sink, sent[20_000:], fragment=1000)
    spooled = sink.finish()
    data = spooled.path.read_bytes()
    assert data.endswith(sent) and len(data) == spooled.size
    assert spooled.sha256 == hashlib.sha256(data).hexdigest()


def test_a_write_that_fails_while_receiving_is_raised_at_finish_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_BATCH", 4096)
    sink = ReceivedSink(tmp_path / "x.part", RECEIVED)
    sink.path.symlink_to("/dev/full")  # every write: ENOSPC, from the kernel
    _write(sink, os.urandom(20_000), fragment=1000)  # the rest is dropped, not raised
    assert sink.error is not None and sink.error.errno == errno.ENOSPC
    with pytest.raises(OSError) as raised:
        sink.finish()
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_discarded_sink_leaves_no_file_unless_the_store_service_took_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_BATCH", 4096)
    cut_off = ReceivedSink(tmp_path / "a.part", RECEIVED)
    _write(cut_off, os.urandom(10_000))
    assert cut_off.path.exists()
    cut_off.discard()
    assert not cut_off.path.exists()
    taken = ReceivedSink(tmp_path / "b.part", RECEIVED)
    _write(taken, os.urandom(10_000))
    taken.consumed = True
    taken.finish()
    taken.discard()
    assert taken.path.exists()


def test_write_chunks_appends_and_hashes_across_calls(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    digest = hashlib.sha256()
    handle = write_chunks(None, path, [b"ab", b"cd"], digest)
    handle = write_chunks(handle, path, [b"ef"], digest)
    handle.close()
    assert path.read_bytes() == b"abcdef"
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
