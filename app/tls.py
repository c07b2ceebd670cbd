"""TLS contexts for HTTPS and DICOM TLS (PS3.15 Annex B), built once at start so that a
missing file, a certificate that is not one or a key that does not match it stops the
server with one line naming the setting, not a traceback at the first connection."""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigurationError(ValueError):
    """A TLS setting that cannot be used; the message names the setting and the reason."""


def _no_password() -> str:
    # Called by OpenSSL only for an encrypted key: without it, OpenSSL would prompt on stdin.
    raise TlsConfigurationError("the private key is encrypted; give an unencrypted PEM key")


def _load_identity(context: ssl.SSLContext, cert: str, key: str, where: str) -> None:
    for path, name in ((cert, "certificate"), (key, "private key")):
        if not Path(path).is_file():
            raise TlsConfigurationError(f"{where}: {name} {path!r} is not a readable file")
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except TlsConfigurationError as exc:
        raise TlsConfigurationError(f"{where}: {key!r}: {exc}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            reason = f"the private key {key!r} does not belong to the certificate {cert!r}"
        else:
            detail = f" ({exc.reason})" if exc.reason else ""
            reason = f"cannot read {cert!r} and {key!r} as a PEM certificate and key{detail}"
        raise TlsConfigurationError(f"{where}: {reason}") from None
    except OSError as exc:
        raise TlsConfigurationError(f"{where}: {exc.strerror or exc}") from None


def _load_ca(context: ssl.SSLContext, ca: str, where: str) -> None:
    if not Path(ca).is_file():
        raise TlsConfigurationError(f"{where}: CA certificate {ca!r} is not a readable file")
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TlsConfigurationError(
            f"{where}: cannot read {ca!r} as PEM CA certificates ({reason})"
        ) from None


def https_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The one context uvicorn serves HTTPS with (`ssl_context_factory`): TLS 1.2 or later,
    as DICOM TLS, whatever the defaults of uvicorn, Python and OpenSSL; with `ca`, a client
    must present a certificate that CA signed (that CA only: not the system's CAs, which
    `ssl.create_default_context` would add), or the handshake fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, cert, key, "PACS_TLS_CERT / PACS_TLS_KEY")
    if ca:
        _load_ca(context, ca, "PACS_TLS_CA")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def dicom_server_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """The DICOM TLS listener: TLS 1.2 or later (the BCP 195 profiles of PS3.15 B.9); with
    `ca`, a client must present a certificate it signed, or the handshake fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, cert, key, "PACS_DIMSE_TLS_CERT / PACS_DIMSE_TLS_KEY")
    if ca:
        _load_ca(context, ca, "PACS_DIMSE_TLS_CA")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def dicom_client_context(cert: str = "", key: str = "", ca: str = "") -> ssl.SSLContext:
    """Associations we open (C-MOVE to a TLS destination): the peer's certificate must chain
    to `ca` (or, without one, to the system's trusted CAs); ours is presented when set. DICOM
    peers are named by AE title and address, often an IP address, so the host name in
    their certificate is not checked (as DCMTK does not)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if ca:
        _load_ca(context, ca, "PACS_DIMSE_TLS_CA")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert and key:
        _load_identity(context, cert, key, "PACS_DIMSE_TLS_CERT / PACS_DIMSE_TLS_KEY")
    return context
