"""DIMSE statuses and edge cases, with pynetdicom as the peer: what DCMTK's tools cannot easily
provoke. C-STORE: exact bytes, duplicates, coercion warnings, a corrupt dataset. C-FIND: a bad
identifier, C-CANCEL. C-MOVE: an unknown destination, a refusal by the AE policy,
sub-operation counts when the destination refuses some or all instances. Associations:
unsupported SOP classes and the association limit.

The C-MOVE destination is a pynetdicom storage SCP in this process that keeps what it
receives and refuses the SOP Instance UIDs it is told to.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import StoragePresentationContexts

from tests.e2e.multipart import encode_multipart
from tests.support.dcmtk import split_part10
from tests.support.dicom_factory import make_dataset, make_file, to_bytes
from tests.support.server import free_port, running_server

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MAX_ASSOCIATIONS = 3
NO_MOVE = "NOMOVE"  # an AE whose policy leaves out C-MOVE


@dataclass
class Destination:
    """A storage SCP for C-MOVE: keeps the dataset bytes it receives by SOP Instance UID."""

    ae_title: str
    syntaxes: list[str]  # the transfer syntaxes it accepts
    port: int = field(default_factory=free_port)
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # uid -> (ts, bytes)
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    associations: int = 0  # requested of it so far

    @contextmanager
    def running(self) -> Iterator[Destination]:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, self.syntaxes)
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_REQUESTED, self.count)]
        server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        try:
            yield self
        finally:
            server.shutdown()

    @property
    def option(self) -> tuple[str, str]:
        return "--move-destination", f"{self.ae_title}=127.0.0.1:{self.port}"

    def count(self, event: Event) -> None:
        with self.lock:
            self.associations += 1

    def handle_store(self, event: Event) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        if sop in self.refuse:
            return 0xA700
        with self.lock:
            self.received[sop] = (str(event.context.transfer_syntax), event.encoded_dataset(False))
        return 0x0000


@dataclass(frozen=True)
class Pacs:
    url: str
    port: int
    destination: Destination  # accepts every transfer syntax
    implicit: Destination  # accepts Implicit VR Little Endian only

    def associate(self, *contexts: str, ae_title: str = "TESTSCU") -> Association:
        ae = AE(ae_title=ae_title)
        for uid in contexts:
            ae.add_requested_context(uid, [ExplicitVRLittleEndian])
        return ae.associate("127.0.0.1", self.port, ae_title="PACS")

    def stow(self, files: list[bytes]) -> None:
        content_type, body = encode_multipart(files)
        with httpx.Client(base_url=f"{self.url}/dicomweb", timeout=60) as http:
            response = http.post("/studies", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    port = free_port()
    env = {
        "PACS_DIMSE_MAX_ASSOCIATIONS": str(MAX_ASSOCIATIONS),
        # Other AEs keep every service.
        "PACS_DIMSE_AE_POLICY": f"{NO_MOVE}=echo,find,get",
    }
    with (
        Destination("DEST", list(ALL_TRANSFER_SYNTAXES)).running() as destination,
        Destination("IMPLICIT", [ImplicitVRLittleEndian]).running() as implicit,
    ):
        args = ("--dimse-port", str(port), *destination.option, *implicit.option)
        with running_server(tmp_path_factory.mktemp("dimse-status"), *args, env=env) as url:
            yield Pacs(url, port, destination, implicit)


@pytest.fixture
def chunked_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pynetdicom send a file's dataset bytes as they are (no decoding)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture
def assoc(pacs: Pacs) -> Iterator[Association]:
    assoc = pacs.associate(CTImageStorage, STUDY_ROOT_FIND, STUDY_ROOT_MOVE, PATIENT_ROOT_FIND)
    assert assoc.is_established
    yield assoc
    assoc.release()


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"{generate_uid()}.dcm"
    path.write_bytes(data)
    return path


def query(level: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values tested
        if level is not None:
            ds.QueryRetrieveLevel = level
        for name, value in keys.items():
            setattr(ds, name, value)
    return ds


def pynetdicom_role(sop_class: str) -> SCP_SCU_RoleSelectionNegotiation:
    """The SCP role for `sop_class`, as a C-GET requestor proposes it."""
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = sop_class
    role.scu_role = False
    role.scp_role = True
    return role


def final(responses: Iterator[tuple[Dataset, Dataset | None]]) -> tuple[Dataset, int]:
    """The last status of a C-FIND/C-MOVE/C-GET and how many pending ones came before."""
    pending = 0
    status = Dataset()
    for status, _ in responses:
        if status.Status in (0xFF00, 0xFF01):
            pending += 1
    return status, pending


# -- C-STORE -------------------------------------------------------------------------------


@pytest.mark.usefixtures("chunked_sending")
def test_cstore_keeps_the_dataset_bytes_and_wado_returns_them(
    pacs: Pacs, assoc: Association, tmp_path: Path
) -> None:
    ds = make_dataset()
    data = to_bytes(ds)
    status = assoc.send_c_store(write(tmp_path, data))
    assert status.Status == 0x0000
    with httpx.Client(base_url=f"{pacs.url}/dicomweb") as http:
        found = http.get("/instances", params={"SOPInstanceUID": ds.SOPInstanceUID}).json()
        assert [r["00080018"]["Value"][0] for r in found] == [ds.SOPInstanceUID]
        url = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        url += f"/instances/{ds.SOPInstanceUID}"
        stored = http.get(url, headers={"Accept": "application/dicom"}).content
    assert split_part10(stored)[1] == split_part10(data)[1]
    meta = pydicom.dcmread(io.BytesIO(stored)).file_meta
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.SourceApplicationEntityTitle == "TESTSCU"
    assert meta.ImplementationClassUID != pydicom.uid.PYDICOM_IMPLEMENTATION_UID  # the archive's


@pytest.mark.usefixtures("chunked_sending")
def test_cstore_duplicates(assoc: Association, tmp_path: Path) -> None:
    sop = generate_uid()
    first = write(tmp_path, make_file(sop=sop, seed=1))
    assert assoc.send_c_store(first).Status == 0x0000
    assert assoc.send_c_store(first).Status == 0x0000  # the same bytes again: success
    status = assoc.send_c_store(write(tmp_path, make_file(sop=sop, seed=2)))
    assert status.Status == 0x0111  # Duplicate SOP Instance, as STOW-RS's FailureReason
    assert "SOP Instance UID is stored" in status.ErrorComment


@pytest.mark.usefixtures("chunked_sending")
def test_cstore_corrupt_dataset_cannot_be_understood(assoc: Association, tmp_path: Path) -> None:
    data = make_file()
    header = split_part10(data)[0]
    # SOPClassUID's header, then a length that runs far past the end of the data.
    garbage = b"\x08\x00\x16\x00UI\xff\x7f" + b"1.2.3"
    status = assoc.send_c_store(write(tmp_path, data[:132] + header + garbage))
    assert status.Status == 0xC000
    assert status.ErrorComment
    assert len(status.ErrorComment) <= 64


def test_cstore_in_an_unknown_transfer_syntax_is_refused(pacs: Pacs, tmp_path: Path) -> None:
    # STOW-RS stored such objects (their thumbnail then failed). Over DIMSE the same rule
    # (STORABLE in app/dicom/transfer_syntax.py) refuses the presentation context itself,
    # so no C-STORE can carry such a dataset (pynetdicom would not even encode one).
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.3.4.5"])
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.52"])  # retired JPEG
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    try:
        refused = {str(cx.transfer_syntax[0]): cx.result for cx in assoc.rejected_contexts}
        # 4: transfer syntaxes not supported (PS3.8 9.3.3.2)
        assert refused == {"1.2.3.4.5": 0x04, "1.2.840.10008.1.2.4.52": 0x04}
        [accepted] = assoc.accepted_contexts
        assert accepted.transfer_syntax == [ExplicitVRLittleEndian]
        assert assoc.send_c_store(write(tmp_path, make_file())).Status == 0x0000
    finally:
        assoc.release()


@pytest.mark.usefixtures("chunked_sending")
def test_cstore_of_another_patient_into_a_study_is_refused(
    pacs: Pacs, assoc: Association, tmp_path: Path
) -> None:
    # It was stored with 0000: the study then held two patients' images.
    study, series = generate_uid(), generate_uid()
    owner = make_file(study=study, series=series, PatientID="OWNER-CSTORE")
    assert assoc.send_c_store(write(tmp_path, owner)).Status == 0x0000
    other = make_dataset(study=study, series=series, PatientID="INTRUDER-CSTORE")
    status = assoc.send_c_store(write(tmp_path, to_bytes(other)))
    assert status.Status == 0xC40A  # a Cannot understand (Cxxx) failure: not worth a retry
    assert "another patient" in status.ErrorComment
    assert "OWNER" not in status.ErrorComment
    with httpx.Client(base_url=f"{pacs.url}/dicomweb") as http:
        found = http.get("/instances", params={"StudyInstanceUID": study}).json()
    assert len(found) == 1


@pytest.mark.usefixtures("chunked_sending")
def test_cstore_coerced_values_give_a_warning(assoc: Association, tmp_path: Path) -> None:
    ds = make_dataset()
    # An InstanceNumber (IS) that is not a number.
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 4, b"one ", 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid value, on purpose
        data = to_bytes(ds)
    status = assoc.send_c_store(write(tmp_path, data))
    assert status.Status == 0xB000
    assert status.ErrorComment


# -- C-FIND ---------------------------------------------------------------------------------


def test_find_identifier_errors_have_a_comment(assoc: Association) -> None:
    for identifier, comment in [
        (query(None, PatientName="X"), "no QueryRetrieveLevel"),
        (query("PATIENT", PatientID=""), "not a level of the Study Root"),
        (query("STUDY", StudyDate="yesterday"), "invalid date"),
    ]:
        status, pending = final(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
        assert (status.Status, pending) == (0xA900, 0)
        assert comment in status.ErrorComment


# issue 11: a UID with a leading zero component was a 400 in a URL path but matched as a
# query value; one validator now refuses it alike in a path, a QIDO-RS value and a C-FIND key.
def test_qido_and_find_refuse_the_same_malformed_uids(pacs: Pacs, assoc: Association) -> None:
    with httpx.Client(base_url=f"{pacs.url}/dicomweb", timeout=30) as http:
        path = http.get("/studies/1.02.3/series")
        assert path.status_code == 400, path.text
        assert "StudyInstanceUID" in path.json()["error"]
        for bad in ["1.02.3", "1.2\\01.3", "1..2"]:
            qido = http.get("/studies", params={"StudyInstanceUID": bad})
            assert qido.status_code == 400, (bad, qido.text)
            assert "'StudyInstanceUID' has an invalid UID" in qido.json()["error"]
            identifier = query("STUDY", StudyInstanceUID=bad.split("\\"))
            status, pending = final(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
            assert (status.Status, pending) == (0xA900, 0), bad
            # ErrorComment is an LO: 64 characters, the value cut off
            assert "'StudyInstanceUID (0020,000D)' has an invalid UID" in status.ErrorComment
        good = http.get("/studies", params={"StudyInstanceUID": "1.0.3"})
        assert good.status_code in (200, 204), good.text


def test_find_cancel(pacs: Pacs, assoc: Association) -> None:
    study, series = generate_uid(), generate_uid()
    # Pages of 100: the C-CANCEL, sent when the first match comes back, must arrive while
    # later pages are still being answered, even on a busy machine.
    count = 500
    pacs.stow([make_file(study=study, series=series, rows=2, columns=2) for _ in range(count)])
    identifier = query("IMAGE", StudyInstanceUID=study, SOPInstanceUID="")
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_FIND)
    pending = 0
    statuses = []
    # pynetdicom drops a C-CANCEL that arrives before the C-FIND is being served: cancel
    # once the first match has come back.
    for status, _ in assoc.send_c_find(identifier, STUDY_ROOT_FIND, msg_id=7):
        statuses.append(status.Status)
        if status.Status == 0xFF00 and pending == 0:
            assoc.send_c_cancel(7, context.context_id)
        pending += status.Status == 0xFF00
    assert statuses[-1] == 0xFE00
    assert 1 <= pending < count
    # Not cancelled: all of them, fetched a page at a time.
    status, pending = final(assoc.send_c_find(identifier, STUDY_ROOT_FIND))
    assert (status.Status, pending) == (0x0000, count)


# -- C-MOVE ---------------------------------------------------------------------------------


def test_move_to_an_unknown_destination(assoc: Association) -> None:
    status, _ = final(
        assoc.send_c_move(query("STUDY", StudyInstanceUID="1.2.3"), "NOWHERE", STUDY_ROOT_MOVE)
    )
    assert status.Status == 0xA801


def test_move_identifier_without_its_unique_key(pacs: Pacs, assoc: Association) -> None:
    before = pacs.destination.associations
    status, _ = final(assoc.send_c_move(query("STUDY", PatientID="P"), "DEST", STUDY_ROOT_MOVE))
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment
    assert pacs.destination.associations == before  # an answer alone: DEST is not called


def test_a_refused_move_does_not_tell_which_destinations_exist(pacs: Pacs) -> None:
    """Regression: the destination was looked up before the AE policy was checked, so an AE
    without the move right got A801 for unknown destinations and 0124 for known ones (after
    an association to them)."""
    study = generate_uid()
    pacs.stow([make_file(study=study)])
    before = pacs.destination.associations
    assoc = pacs.associate(STUDY_ROOT_MOVE, ae_title=NO_MOVE)
    assert assoc.is_established
    try:
        for destination in ("DEST", "NOWHERE"):
            identifier = query("STUDY", StudyInstanceUID=study)
            status, _ = final(assoc.send_c_move(identifier, destination, STUDY_ROOT_MOVE))
            assert status.Status == 0x0124, destination
            assert status.ErrorComment == f"AE {NO_MOVE} may not use C-MOVE"
            assert status.NumberOfCompletedSuboperations == 0
    finally:
        assoc.release()
    assert pacs.destination.associations == before


def test_move_nothing_matches(assoc: Association) -> None:
    status, pending = final(
        assoc.send_c_move(query("STUDY", StudyInstanceUID=generate_uid()), "DEST", STUDY_ROOT_MOVE)
    )
    assert (status.Status, pending) == (0x0000, 0)
    assert status.NumberOfCompletedSuboperations == 0


def test_move_counts_and_final_status(pacs: Pacs, assoc: Association) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = [
        make_dataset(study=study, series=series, seed=n, InstanceNumber=n) for n in (1, 2, 3)
    ]
    pacs.stow([to_bytes(ds) for ds in datasets])
    sops = [str(ds.SOPInstanceUID) for ds in datasets]
    identifier = query("STUDY", StudyInstanceUID=study)

    status, pending = final(assoc.send_c_move(identifier, "DEST", STUDY_ROOT_MOVE))
    assert (status.Status, pending) == (0x0000, 3)
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (3, 0)
    for ds in datasets:
        syntax, data = pacs.destination.received[str(ds.SOPInstanceUID)]
        assert syntax == ExplicitVRLittleEndian
        assert data == split_part10(to_bytes(ds))[1]

    pacs.destination.refuse = {sops[1]}  # some fail: Warning
    responses = assoc.send_c_move(identifier, "DEST", STUDY_ROOT_MOVE)
    statuses = [status for status, _ in responses]
    status = statuses[-1]
    assert status.Status == 0xB000
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (2, 1)
    assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == [2, 1, 0]

    pacs.destination.refuse = set(sops)  # all fail
    status, _ = final(assoc.send_c_move(identifier, "DEST", STUDY_ROOT_MOVE))
    assert status.Status == 0xA702
    assert status.NumberOfFailedSuboperations == 3
    pacs.destination.refuse = set()


def test_move_by_uid_list_at_image_level(pacs: Pacs, assoc: Association) -> None:
    study = generate_uid()
    datasets = [make_dataset(study=study, seed=n) for n in (1, 2, 3)]
    pacs.stow([to_bytes(ds) for ds in datasets])
    wanted = [str(ds.SOPInstanceUID) for ds in datasets[:2]]
    identifier = query("IMAGE", SOPInstanceUID=wanted)
    status, pending = final(assoc.send_c_move(identifier, "DEST", STUDY_ROOT_MOVE))
    assert (status.Status, pending, status.NumberOfCompletedSuboperations) == (0x0000, 2, 2)
    assert set(wanted) <= set(pacs.destination.received)
    assert str(datasets[2].SOPInstanceUID) not in pacs.destination.received


def test_move_converts_between_little_endian_syntaxes_when_it_must(
    pacs: Pacs, assoc: Association
) -> None:
    ds = make_dataset(seed=5)
    pacs.stow([to_bytes(ds)])  # stored in Explicit VR Little Endian
    identifier = query("IMAGE", SOPInstanceUID=ds.SOPInstanceUID)
    status, _ = final(assoc.send_c_move(identifier, "IMPLICIT", STUDY_ROOT_MOVE))
    assert (status.Status, status.NumberOfCompletedSuboperations) == (0x0000, 1)
    syntax, data = pacs.implicit.received[str(ds.SOPInstanceUID)]
    assert syntax == ImplicitVRLittleEndian
    received = read_dataset(io.BytesIO(data), is_implicit_VR=True, is_little_endian=True)
    assert received.SOPInstanceUID == ds.SOPInstanceUID
    assert received.PixelData == ds.PixelData


# -- C-GET -------------------------------------------------------------------------------------


def test_get_sends_over_the_same_association(pacs: Pacs) -> None:
    study = generate_uid()
    datasets = [make_dataset(study=study, seed=n) for n in (1, 2)]
    pacs.stow([to_bytes(ds) for ds in datasets])
    received: dict[str, bytes] = {}

    def handle_store(event: Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(False)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    role = pynetdicom_role(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        pacs.port,
        ae_title="PACS",
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, handle_store)],
    )
    try:
        status, _ = final(assoc.send_c_get(query("STUDY", StudyInstanceUID=study), STUDY_ROOT_GET))
    finally:
        assoc.release()
    assert status.Status == 0x0000
    assert status.NumberOfCompletedSuboperations == 2
    for ds in datasets:
        assert received[str(ds.SOPInstanceUID)] == split_part10(to_bytes(ds))[1]


def test_get_cancel_stops_the_sub_operations(pacs: Pacs) -> None:
    """C-CANCEL of a C-GET (read while the sub-operations run on the same association):
    FE00 with the counts so far, and the rest is not sent."""
    study = generate_uid()
    count = 12
    pacs.stow([make_file(study=study, seed=n, rows=64, columns=64) for n in range(count)])
    received: list[str] = []

    def handle_store(event: Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        pacs.port,
        ae_title="PACS",
        ext_neg=[pynetdicom_role(CTImageStorage)],
        evt_handlers=[(evt.EVT_C_STORE, handle_store)],
    )
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_GET)
    statuses = []
    try:
        identifier = query("STUDY", StudyInstanceUID=study)
        for status, _ in assoc.send_c_get(identifier, STUDY_ROOT_GET, msg_id=9):
            statuses.append(status)
            if status.Status == 0xFF00 and len(statuses) == 1:
                assoc.send_c_cancel(9, context.context_id)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert 1 <= final.NumberOfCompletedSuboperations < count
    assert final.NumberOfRemainingSuboperations == count - final.NumberOfCompletedSuboperations
    assert len(received) == final.NumberOfCompletedSuboperations


# -- associations -------------------------------------------------------------------------------


def test_unsupported_sop_classes_are_refused(pacs: Pacs) -> None:
    assoc = pacs.associate(VERIFICATION, WORKLIST_FIND, "1.2.3.4.5.6.7.8.9")
    try:
        assert assoc.is_established
        refused = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
        assert refused == {WORKLIST_FIND: 0x03, "1.2.3.4.5.6.7.8.9": 0x03}  # not supported
        assert assoc.send_c_echo().Status == 0x0000
        with pytest.raises(ValueError, match="No presentation context"):
            next(assoc.send_c_find(query(None), WORKLIST_FIND))
    finally:
        assoc.release()


def test_association_limit(pacs: Pacs) -> None:
    held = [pacs.associate(VERIFICATION) for _ in range(MAX_ASSOCIATIONS)]
    try:
        assert all(a.is_established for a in held)
        extra = pacs.associate(VERIFICATION)
        assert extra.is_rejected
        rejection = extra.acceptor.primitive
        assert rejection is not None
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (
            0x02,
            0x03,
            0x02,
        )
    finally:
        for assoc in held:
            assoc.release()
    again = pacs.associate(VERIFICATION)
    assert again.is_established
    again.release()
