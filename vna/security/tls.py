"""TLS server contexts for HTTPS (DICOMweb) and DICOM TLS (DIMSE); the client context of
the archive's outgoing HTTPS (notifications, STOW-RS forwarding).

DICOM TLS follows PS3.15 B.12 (BCP 195 RFC 8996, 9325 TLS Secure Transport Connection
Profile): TLS 1.2 at least, 1.3 preferred when the client offers it, Python's default cipher
selection (which excludes the suites BCP 195 forbids).  With a CA configured the archive
requires a client certificate that CA signed (mutual TLS: the node authentication of
PS3.15 B.12).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from vna.config import Settings
from vna.errors import ConfigError


def server_context(section: str, cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """A server context from PEM files; ConfigError naming the key when a file is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"'{section}.{name}': no such file: {path}")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"'{section}.tls_cert' and '{section}.tls_key' are not a PEM certificate chain and"
            f" its private key: {exc.reason or exc}"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"'{section}.tls_cert': cannot read: {exc.strerror}") from exc
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"'{section}.tls_ca' is not PEM CA certificates: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(key: str, ca: Path | None) -> ssl.SSLContext:
    """A client context verifying the server's certificate and host name: against the PEM CA
    certificates at ``ca`` (the config ``key`` naming it) or, without one, the system's."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"'{key}' is not PEM CA certificates: {exc}") from exc
    return context


def http_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS for DICOMweb when ``[http] tls_cert`` and ``tls_key`` are set."""
    http = settings.http
    if http.tls_cert is None or http.tls_key is None:
        return None
    return server_context("http", http.tls_cert, http.tls_key)


def dimse_context(settings: Settings) -> ssl.SSLContext | None:
    """DICOM TLS when ``[dimse] tls_cert`` and ``tls_key`` are set (``tls_ca``: mutual)."""
    dimse = settings.dimse
    if dimse.tls_cert is None or dimse.tls_key is None:
        return None
    return server_context("dimse", dimse.tls_cert, dimse.tls_key, dimse.tls_ca)


def hl7_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the HL7 MLLP listener when ``[hl7] tls_cert`` and ``tls_key`` are set
    (``tls_ca``: mutual), as for DIMSE."""
    hl7 = settings.hl7
    if hl7.tls_cert is None or hl7.tls_key is None:
        return None
    return server_context("hl7", hl7.tls_cert, hl7.tls_key, hl7.tls_ca)
