"""TLS: HTTPS for DICOMweb and DICOM TLS for DIMSE (PS3.15 B.12), with a throwaway CA made by
the test, through ``vna.server.serve`` as ``vna serve`` runs it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from tests.conftest import free_port
from tests.factory import ct_study
from tests.integration.test_dimse import scu, study_keys
from tests.security_support import call
from vna.config import DimseSettings, HttpSettings, Settings, load_settings
from vna.errors import ConfigError
from vna.security.tls import http_context

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate it signed,
    and a client certificate of another (untrusted) CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("VNA test CA", ca_key, None, ca=True)
    ca_path = _write(d / "ca.pem", ca, ca_key)
    issuer = (ca.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _write(d / "server.pem", _issue("vna", server_key, issuer, server=True), server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _write(d / "client.pem", _issue("MODALITY", client_key, issuer), client_key)
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _issue("Rogue CA", rogue_ca_key, None, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _write(
        d / "rogue.pem", _issue("MODALITY", rogue_key, (rogue_ca.subject, rogue_ca_key)), rogue_key
    )
    return Pki(
        ca=ca_path,
        server_cert=server,
        server_key=server.with_suffix(".key"),
        client_cert=client,
        client_key=client.with_suffix(".key"),
        rogue_cert=rogue,
        rogue_key=rogue.with_suffix(".key"),
    )


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def echo_and_find(port: int, context: ssl.SSLContext | None) -> tuple[bool, int, int]:
    """Associate (over TLS when given a context): established, C-ECHO and C-FIND statuses."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification, [ImplicitVRLittleEndian])
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage)
    tls = (context, "localhost") if context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title="VNA", tls_args=tls)
    if not assoc.is_established:
        return False, -1, -1
    try:
        (ds,) = ct_study(series=1, slices=1)
        assert int(assoc.send_c_store(ds).Status) == 0
        echo = int(assoc.send_c_echo().Status)
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_find(
                study_keys("STUDY", StudyInstanceUID=""), StudyRootQueryRetrieveInformationModelFind
            )
        ]
        return True, echo, statuses[-1]
    finally:
        assoc.release()


async def test_https_and_dicom_tls(archive_settings: Settings, pki: Pki) -> None:
    from vna.server import serve

    settings = dataclasses.replace(
        archive_settings,
        http=HttpSettings(
            host="127.0.0.1", port=free_port(), tls_cert=pki.server_cert, tls_key=pki.server_key
        ),
        dimse=DimseSettings(
            host="127.0.0.1",
            port=free_port(),
            network_timeout=10,
            tls_cert=pki.server_cert,
            tls_key=pki.server_key,
            tls_ca=pki.ca,  # callers must present a certificate this CA signed
        ),
    )
    server = asyncio.create_task(serve(settings))
    root = f"https://127.0.0.1:{settings.http.port}"
    trusted = client_context(pki)
    try:
        for _ in range(100):
            assert not server.done(), server.exception()
            with_error: Any = None
            try:
                if (await call("GET", f"{root}/healthz", ssl_context=trusted)).status == 200:
                    break
            except aiohttp.ClientError as exc:
                with_error = exc
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the server did not answer over HTTPS: {with_error}")

        assert (await call("GET", f"{root}/dicom-web/studies", ssl_context=trusted)).status == 200
        # Plain HTTP on the HTTPS port gets no answer; a client that does not trust the CA
        # refuses the server.
        with pytest.raises(aiohttp.ClientError):
            await call("GET", f"http://127.0.0.1:{settings.http.port}/healthz", time_limit=5)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await call("GET", f"{root}/healthz", ssl_context=ssl.create_default_context())

        port = settings.dimse.port
        mutual = client_context(pki, pki.client_cert, pki.client_key)
        assert await scu(echo_and_find, port, mutual) == (True, 0, 0)
        # Without a client certificate, with one from another CA, or without TLS: refused.
        assert (await scu(echo_and_find, port, client_context(pki)))[0] is False
        rogue = client_context(pki, pki.rogue_cert, pki.rogue_key)
        assert (await scu(echo_and_find, port, rogue))[0] is False
        assert (await scu(echo_and_find, port, None))[0] is False
        # The service is unharmed by the refused attempts.
        assert (await scu(echo_and_find, port, mutual))[0] is True
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


async def test_tls_configuration_errors_name_the_key(pki: Pki, tmp_path: Path) -> None:
    def settings(**http: Any) -> Settings:
        return Settings(http=HttpSettings(**http))

    with pytest.raises(ConfigError, match=r"'http.tls_cert': no such file"):
        http_context(settings(tls_cert=tmp_path / "missing.pem", tls_key=pki.server_key))
    with pytest.raises(ConfigError, match="not a PEM certificate chain and its private key"):
        http_context(settings(tls_cert=pki.server_cert, tls_key=pki.client_key))
    assert http_context(settings()) is None
    assert http_context(settings(tls_cert=pki.server_cert, tls_key=pki.server_key)) is not None

    config = tmp_path / "vna.toml"
    config.write_text(f'[http]\ntls_cert = "{pki.server_cert}"\n')
    with pytest.raises(ConfigError, match=r"'http\.tls_cert' and 'http\.tls_key' go together"):
        load_settings(config, environ={})
    config.write_text(f'[dimse]\ntls_ca = "{pki.ca}"\n')
    with pytest.raises(ConfigError, match=r"'dimse\.tls_ca' needs"):
        load_settings(config, environ={})
    # From the environment like every key.
    env = {"VNA_DIMSE_TLS_CERT": str(pki.server_cert), "VNA_DIMSE_TLS_KEY": str(pki.server_key)}
    loaded = load_settings(None, environ=env)
    assert loaded.dimse.tls_cert == pki.server_cert
