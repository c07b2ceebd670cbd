"""HTTPS and DICOM TLS (PS3.15 Annex B) with real clients: curl, DCMTK's echoscu, storescu,
findscu and movescu, and a storescp with TLS as the C-MOVE destination.

The test makes its own certificate authorities at run time: "site", which signs the
archive's, the storescp's and the client's certificates and which the archive requires
client certificates from, and "other", which signs a stranger's certificate.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from pydicom.uid import generate_uid

from tests.support.certificates import Identity, Pki, make_pki
from tests.support.dcmtk import check, require_dcmtk, run, storescp
from tests.support.dicom_factory import make_file
from tests.support.server import free_port, running_server


@dataclass(frozen=True)
class Certificates:
    site: Pki  # the site CA, and the archive's identity (HTTPS and DICOM TLS)
    other: Pki  # another CA, and the identity of a storescp it signed
    storescp: Identity  # the C-MOVE destination's, signed by the site CA
    scu: Identity  # a calling AE's, signed by the site CA
    stranger: Identity  # a calling AE's, signed by the other CA


def dcmtk_tls(identity: Identity, ca: Path) -> tuple[str, ...]:
    """DCMTK's options for TLS with `identity`, trusting `ca`."""
    return ("+tls", str(identity.key), str(identity.cert), "+cf", str(ca))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("pki")
    site = make_pki(folder, "pacs", name="site")
    other = make_pki(folder, "elsewhere", name="other")
    return Certificates(
        site,
        other,
        site.authority.issue(folder, "storescp"),
        site.authority.issue(folder, "scu", client=True),
        other.authority.issue(folder, "stranger", client=True),
    )


@dataclass(frozen=True)
class Pacs:
    url: str  # https://127.0.0.1:port
    dimse_port: int  # plain DICOM
    tls_port: int  # DICOM TLS
    moved: Path  # where the TLS storescp writes
    log: Path

    def tool(
        self, tool: str, *args: str, tls: tuple[str, ...], files: tuple[Path, ...] = ()
    ) -> str:
        """Run a DCMTK tool over DICOM TLS (`tls`: its TLS options); it must succeed."""
        peer = ("127.0.0.1", str(self.tls_port))
        return check(tool, *tls, "-aet", "TLSSCU", "-aec", "PACS", *args, *peer, *files)


@pytest.fixture(scope="module")
def pacs(pki: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    require_dcmtk()
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    root = tmp_path_factory.mktemp("tls")
    with (
        storescp(root / "moved", tls=dcmtk_tls(pki.storescp, pki.site.ca)) as destination,
        storescp(
            root / "elsewhere", "ELSEWHERE", tls=dcmtk_tls(pki.other.server, pki.other.ca)
        ) as elsewhere,
    ):
        dimse_port, tls_port = free_port(), free_port()
        args = ["--tls-cert", str(pki.site.cert), "--tls-key", str(pki.site.key)]
        args += ["--dimse-port", str(dimse_port), "--dimse-tls-port", str(tls_port)]
        args += ["--dimse-tls-ca", str(pki.site.ca)]
        args += ["--move-destination", f"STORESCP=127.0.0.1:{destination}:tls"]
        args += ["--move-destination", f"ELSEWHERE=127.0.0.1:{elsewhere}:tls"]
        # With sendfile on: over HTTPS it must not be used (test_https_with_curl).
        env = {"PACS_HTTP_SENDFILE": "true"}
        with running_server(root / "data", *args, https=pki.site.client_context(), env=env) as url:
            yield Pacs(url, dimse_port, tls_port, root / "moved", root / "data" / "server.log")


def curl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- HTTPS -----------------------------------------------------------------------------


def test_https_with_curl(pacs: Pacs, pki: Certificates, tmp_path: Path) -> None:
    study, patient = generate_uid(), f"TLS-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "one.dcm"
    path.write_bytes(make_file(study=study, PatientID=patient))
    stored = curl(
        "--cacert", pki.site.ca, "-X", "POST", "-H", "Content-Type: application/dicom",
        "--data-binary", f"@{path}", f"{pacs.url}/dicomweb/studies",
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert f"{pacs.url}/dicomweb/studies/{study}" in stored.stdout  # RetrieveURL is https

    health = curl("--cacert", pki.site.ca, "-w", "%{http_code}", f"{pacs.url}/health")
    assert (health.returncode, health.stdout) == (0, '{"status":"ok"}200'), health.stderr
    found = curl(
        "--cacert", pki.site.ca, "-w", "\n%{http_code}",
        f"{pacs.url}/dicomweb/studies?PatientID={patient}",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    body, status = found.stdout.rsplit("\n", 1)
    assert status == "200"
    assert study in body and f'"{pacs.url}/dicomweb/studies/{study}"' in body
    # Issue 11: stored files go out with sendfile on plain HTTP; over TLS they must not
    # (sendfile would write them past the encryption).
    got = tmp_path / "got.dcm"
    retrieved = curl(
        "--cacert", pki.site.ca, "-o", got, "-H", "Accept: application/dicom",
        f"{pacs.url}/dicomweb/studies/{study}/series/{_series(path)}/instances/{_sop(path)}",
    )  # fmt: skip
    assert retrieved.returncode == 0, retrieved.stderr
    assert got.read_bytes() == path.read_bytes()


def _series(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_https_certificate_is_checked(pacs: Pacs, pki: Certificates) -> None:
    """curl without the site CA does not trust the archive; with another CA neither."""
    assert curl(f"{pacs.url}/health").returncode == 60  # peer certificate cannot be verified
    assert curl("--cacert", pki.other.ca, f"{pacs.url}/health").returncode == 60


def test_plain_http_to_the_https_port_fails(pacs: Pacs) -> None:
    plain = curl("-w", "%{http_code}", pacs.url.replace("https://", "http://") + "/health")
    assert plain.returncode != 0 and "200" not in plain.stdout, plain


def test_announces_https(pacs: Pacs) -> None:
    port = pacs.url.rsplit(":", 1)[1]
    assert f"DICOMweb at https://127.0.0.1:{port}/dicomweb" in pacs.log.read_text()


def handshake(url: str, context: ssl.SSLContext) -> str:
    """The TLS version a connection to `url` agrees on with `context`."""
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return str(tls.version())


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_https_serves_tls_1_2_and_1_3(pacs: Pacs, pki: Certificates, version: str) -> None:
    context = pki.site.client_context()
    context.minimum_version = context.maximum_version = ssl.TLSVersion[version]
    assert handshake(pacs.url, context) == version.replace("_", ".")


def tls_1_1(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context` limited to TLS 1.1, at OpenSSL's security level 0, which allows it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@contextmanager
def tls_1_1_server(identity: Pki) -> Iterator[str]:
    """A bare TLS server that accepts TLS 1.1 (one connection), on a free port."""
    context = tls_1_1(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(identity.cert, identity.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            connection, _ = listener.accept()
            with suppress(OSError), context.wrap_socket(connection, server_side=True):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
        thread.join(timeout=10)


def test_https_refuses_a_tls_1_1_client(pacs: Pacs, pki: Certificates) -> None:
    """PS3.15 B.9 (BCP 195): TLS 1.2 or later, over HTTPS as over DICOM TLS."""
    client = tls_1_1(pki.site.client_context())
    with tls_1_1_server(pki.site) as willing:  # the client does speak TLS 1.1
        assert handshake(willing, client) == "TLSv1.1"
    with pytest.raises(ssl.SSLError) as refused:
        handshake(pacs.url, client)
    # The archive hangs up on the ClientHello (asyncio drops OpenSSL's protocol_version
    # alert).
    assert refused.value.reason in ("UNEXPECTED_EOF_WHILE_READING", "TLSV1_ALERT_PROTOCOL_VERSION")


def test_https_client_certificates(pki: Certificates, tmp_path: Path) -> None:
    """With PACS_TLS_CA, an HTTP client must present a certificate that CA signed."""
    context = pki.site.client_context()
    context.load_cert_chain(pki.scu.cert, pki.scu.key)
    args = ["--tls-cert", str(pki.site.cert), "--tls-key", str(pki.site.key)]
    with running_server(
        tmp_path / "data", *args, env={"PACS_TLS_CA": str(pki.site.ca)}, https=context
    ) as url:
        ca = ("--cacert", pki.site.ca)
        good = curl(*ca, "--cert", pki.scu.cert, "--key", pki.scu.key, f"{url}/health")
        assert (good.returncode, good.stdout) == (0, '{"status":"ok"}'), good.stderr
        assert curl(*ca, f"{url}/health").returncode != 0
        stranger = curl(
            *ca, "--cert", pki.stranger.cert, "--key", pki.stranger.key, f"{url}/health"
        )
        assert stranger.returncode != 0


# -- DICOM TLS -------------------------------------------------------------------------


def test_dcmtk_over_dicom_tls(pacs: Pacs, pki: Certificates, tmp_path: Path) -> None:
    tls = dcmtk_tls(pki.scu, pki.site.ca)
    assert "Received Echo Response (Success)" in pacs.tool("echoscu", "-v", tls=tls)
    patient, study, sop = f"DTLS-{uuid.uuid4().hex[:8]}", generate_uid(), generate_uid()
    path = tmp_path / "sent.dcm"
    path.write_bytes(make_file(study=study, sop=sop, PatientID=patient))
    stored = pacs.tool("storescu", "-v", tls=tls, files=(path,))
    assert "Received Store Response (Success)" in stored
    found = pacs.tool(
        "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient}",
        "-k", "StudyInstanceUID", tls=tls,
    )  # fmt: skip
    assert study in found and "Received Final Find Response (Success)" in found
    log = pacs.log.read_text()
    assert "client certificate 'commonName=scu'" in log
    # The plain DICOM port stays open beside the TLS one.
    check("echoscu", "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port))


def test_dicom_tls_only_without_client_certificates(pki: Certificates, tmp_path: Path) -> None:
    """--dimse-port 0 leaves DICOM TLS alone; without --dimse-tls-ca no client certificate is
    asked for, so DCMTK's anonymous TLS (+tla) is served."""
    require_dcmtk()
    tls_port = free_port()
    args = ["--dimse-tls-port", str(tls_port)]
    env = {
        "PACS_DIMSE_PORT": "0",
        "PACS_DIMSE_TLS_CERT": str(pki.site.cert),
        "PACS_DIMSE_TLS_KEY": str(pki.site.key),
    }
    with running_server(tmp_path / "data", *args, env=env):
        echo = check(
            "echoscu",
            "-v",
            "+tla",
            "+cf",
            pki.site.ca,
            "-aec",
            "PACS",
            "127.0.0.1",
            str(tls_port),
        )
        assert "Received Echo Response (Success)" in echo
        log = (tmp_path / "data" / "server.log").read_text()
        assert f"DICOM TLS AE PACS listening on 127.0.0.1:{tls_port} (no client certificate" in log
        assert "DICOM (DIMSE) AE PACS listening" not in log


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no certificate", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("another CA", "CERTIFICATE_VERIFY_FAILED"),
        ("no TLS", "WRONG_VERSION_NUMBER"),
    ],
)
def test_dicom_tls_refuses_clients_without_a_site_certificate(
    pacs: Pacs, pki: Certificates, case: str, reason: str
) -> None:
    options = {
        "no certificate": ("+tla", "+cf", str(pki.site.ca)),  # anonymous TLS
        "another CA": dcmtk_tls(pki.stranger, pki.site.ca),
        "no TLS": (),
    }[case]
    before = pacs.log.read_text().count(reason)
    audited_before = audited_refusals(pacs, pki, reason)
    done = run("echoscu", *options, "-aec", "PACS", "127.0.0.1", str(pacs.tls_port))
    assert done.returncode != 0, done.stdout
    assert "Received Echo Response" not in done.stdout
    assert "Association Request Failed" in done.stdout
    log = pacs.log.read_text()
    assert log.count(reason) == before + 1, log[-2000:]
    assert "refused: handshake failed" in log
    # And the audit trail has it: a Security Alert (Node Authentication) from the address.
    deadline = time.monotonic() + 10
    while not (refusals := audited_refusals(pacs, pki, reason)) > audited_before:
        assert time.monotonic() < deadline, f"{refusals} audited refusals for {reason}"
        time.sleep(0.1)


def audited_refusals(pacs: Pacs, pki: Certificates, reason: str) -> int:
    """Refused TLS connections in the audit trail whose reason names `reason`."""
    answer = httpx.get(
        f"{pacs.url}/dicomweb/audit", params={"limit": "1000"}, verify=pki.site.client_context()
    )
    assert answer.status_code == 200, answer.text
    return sum(
        1
        for e in answer.json()
        if e["eventType"] == "Node Authentication"
        and e["address"] == "127.0.0.1"
        and reason in (e["reason"] or "")
    )


def test_dcmtk_checks_the_archive_certificate(pacs: Pacs, pki: Certificates) -> None:
    """A client trusting only the other CA refuses the archive (its certificate is the site's)."""
    done = run(
        "echoscu", *dcmtk_tls(pki.scu, pki.other.ca), "-aec", "PACS",
        "127.0.0.1", str(pacs.tls_port),
    )  # fmt: skip
    assert done.returncode != 0 and "Received Echo Response" not in done.stdout


def test_c_move_to_a_tls_destination(pacs: Pacs, pki: Certificates, tmp_path: Path) -> None:
    tls = dcmtk_tls(pki.scu, pki.site.ca)
    study, sops = generate_uid(), [generate_uid(), generate_uid()]
    for number, sop in enumerate(sops, 1):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(make_file(study=study, sop=sop, InstanceNumber=number))
        pacs.tool("storescu", tls=tls, files=(path,))
    # DCMTK's movescu has no TLS options: the request comes in on the plain port, the
    # archive's association to the destination is the TLS one.
    moved = check(
        "movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "PACS", "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(pacs.dimse_port),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" in moved, moved
    arrived = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in pacs.moved.iterdir()}
    assert set(sops) <= set(arrived)
    for number, sop in enumerate(sops, 1):
        sent = pydicom.dcmread(tmp_path / f"{number}.dcm")
        assert pydicom.dcmread(arrived[sop]).PixelData == sent.PixelData
    assert " over TLS): 2 sent, 0 with warnings, 0 failed" in pacs.log.read_text()


def test_c_move_to_a_tls_destination_from_another_ca_fails(pacs: Pacs, tmp_path: Path) -> None:
    """The destination's certificate must chain to PACS_DIMSE_TLS_CA: nothing is sent."""
    study = generate_uid()
    check(
        "storescu", "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port),
        _write(tmp_path / "one.dcm", make_file(study=study)),
    )  # fmt: skip
    done = run(
        "movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "PACS", "-aem", "ELSEWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(pacs.dimse_port),
    )  # fmt: skip
    assert "Received Final Move Response (Success)" not in done.stdout, done.stdout
    # pynetdicom answers A801 when it cannot associate with the destination.
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in done.stdout
    log = pacs.log.read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log and "Traceback" not in log
    assert not any((pacs.moved.parent / "elsewhere").iterdir())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- bad settings stop the server at start ---------------------------------------------


def _serve(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())]
    command += ["--data", str(tmp_path / "data"), "--dimse-port", "0", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing cert", "certificate '{missing}' is not a readable file"),
        ("encrypted key", "the private key is encrypted; give an unencrypted PEM key"),
        ("key of another cert", "the private key '{stranger_key}' does not belong to"),
        ("cert is not PEM", "cannot read '{pacs_key}' and '{pacs_key}' as a PEM certificate"),
        ("cert without key", "PACS_TLS_CERT and PACS_TLS_KEY (--tls-cert, --tls-key) go together"),
        ("missing HTTPS CA", "PACS_TLS_CA: CA certificate '{missing}' is not a readable file"),
        ("DICOM TLS without cert", "PACS_DIMSE_TLS_PORT / --dimse-tls-port needs a certificate"),
        ("bad DICOM TLS CA", "PACS_DIMSE_TLS_CA: cannot read '{pacs_key}' as PEM CA certificates"),
    ],
)
def test_bad_tls_settings_stop_the_server_with_one_line(
    pki: Certificates, tmp_path: Path, case: str, message: str
) -> None:
    missing = tmp_path / "missing.pem"
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.site.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    pacs = ("--tls-cert", pki.site.cert, "--tls-key", pki.site.key)
    args = {
        "missing cert": ("--tls-cert", missing, "--tls-key", pki.site.key),
        "encrypted key": ("--tls-cert", pki.site.cert, "--tls-key", encrypted),
        "key of another cert": ("--tls-cert", pki.site.cert, "--tls-key", pki.stranger.key),
        "cert is not PEM": ("--tls-cert", pki.site.key, "--tls-key", pki.site.key),
        "cert without key": ("--tls-cert", pki.site.cert),
        "missing HTTPS CA": (*pacs, "--tls-ca", missing),
        "DICOM TLS without cert": ("--dimse-tls-port", str(free_port())),
        "bad DICOM TLS CA": (
            *pacs,
            "--dimse-tls-port",
            free_port(),
            "--dimse-tls-ca",
            pki.site.key,
        ),
    }[case]
    done = _serve(tmp_path, *args)
    assert done.returncode in (1, 2), done.stderr
    expected = message.format(missing=missing, stranger_key=pki.stranger.key, pacs_key=pki.site.key)
    # One line, after the INFO lines of the start-up check of the index.
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and errors[0].startswith("pacs: "), done.stderr
    assert expected in errors[0], done.stderr


def test_dicom_tls_contexts(pki: Certificates) -> None:
    """TLS 1.2 or later both ways (PS3.15 B.9, BCP 195); client certificates required only
    with a CA; destinations' certificates always checked."""
    from app.tls import dicom_client_context, dicom_server_context

    cert, key, ca = str(pki.site.cert), str(pki.site.key), str(pki.site.ca)
    for context in (dicom_server_context(cert, key), dicom_client_context(cert, key, ca)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert dicom_server_context(cert, key).verify_mode == ssl.CERT_NONE
    assert dicom_server_context(cert, key, ca).verify_mode == ssl.CERT_REQUIRED
    assert dicom_client_context().verify_mode == ssl.CERT_REQUIRED
