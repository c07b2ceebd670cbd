"""Certificates made at run time for the TLS tests (with `cryptography`): a CA, and server
and client certificates it signs, written as PEM files. Nothing is committed."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    name: str
    cert: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def issue(self, folder: Path, common_name: str, *, client: bool = False) -> Identity:
        """A certificate for 127.0.0.1 and localhost signed by this CA: a client's
        (`client=True`), or a DICOM node's, which serves and also calls (C-MOVE)."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if not client:
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            _builder(common_name, self.certificate.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = folder / f"{self.name}-{common_name}"
        return Identity(_write_cert(stem, cert), _write_key(stem, key))


def make_authority(folder: Path, name: str) -> Authority:
    """A self-signed CA named `name`, its certificate in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    cert = (
        _builder(f"{name} test CA", subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(name, _write_cert(folder / name, cert), key, cert)


def _builder(
    common_name: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write_cert(stem: Path, cert: x509.Certificate) -> Path:
    path = stem.with_suffix(".crt")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(stem: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = stem.with_suffix(".key")
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Pki:
    """A CA and a server identity it signed (for localhost and 127.0.0.1); the CA issues
    more (`authority.issue`)."""

    authority: Authority
    server: Identity

    @property
    def ca(self) -> Path:
        return self.authority.cert

    @property
    def cert(self) -> Path:
        return self.server.cert

    @property
    def key(self) -> Path:
        return self.server.key

    def client_context(self) -> ssl.SSLContext:
        """A client's context that trusts this CA only."""
        return ssl.create_default_context(cafile=self.ca)


def make_pki(folder: Path, common_name: str = "localhost", *, name: str = "pki") -> Pki:
    """A CA named `name` and a server certificate for `common_name` it signed."""
    authority = make_authority(folder, name)
    return Pki(authority, authority.issue(folder, common_name))
