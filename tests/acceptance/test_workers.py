"""HTTP connections and DIMSE associations under ``vna serve``'s supervisor: dealt evenly to
the worker processes (vna.handoff), in the clear and over TLS."""

from __future__ import annotations

import http.client
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.acceptance.conftest import WORKERS, ArchiveProcess
from tests.integration.test_security_tls import Pki, client_context, echo_and_find, pki

__all__ = ["pki"]  # the module-scoped fixture, shared with the in-process TLS tests

pytestmark = pytest.mark.skipif(WORKERS < 2, reason="one core: `vna serve` runs one worker")


def _associate(port: int) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification, [ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="VNA")
    assert assoc.is_established
    return assoc


def _connections_per_worker(server: ArchiveProcess, port: int) -> list[int]:
    assert server.proc is not None
    workers = [
        p for p in psutil.Process(server.proc.pid).children() if not p.name().startswith("postgres")
    ]
    return sorted(
        sum(
            1
            for c in w.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )
        for w in workers
    )


def _associations_per_worker(server: ArchiveProcess) -> list[int]:
    return _connections_per_worker(server, server.dimse_port)


def _wait_all_closed(server: ArchiveProcess, port: int) -> None:
    deadline = time.monotonic() + 10
    while any(_connections_per_worker(server, port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.6)  # the reports travel beside the closing, not before it


def _keep_alive(port: int, context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection that has had its answer and stays open, as a DICOMweb client's pool."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    return conn


def test_http_connections_are_dealt_evenly_to_the_workers(
    archive_process: ArchiveProcess,
) -> None:
    # A DICOMweb client with 2 keep-alive connections per worker gets every core.
    port = archive_process.http_port
    held = [_keep_alive(port) for _ in range(2 * WORKERS)]
    try:
        assert _connections_per_worker(archive_process, port) == [2] * WORKERS
    finally:
        for conn in held:
            conn.close()
    # Workers report closed connections: the next ones are dealt evenly again.
    _wait_all_closed(archive_process, port)
    again = [_keep_alive(port) for _ in range(WORKERS)]
    try:
        assert _connections_per_worker(archive_process, port) == [1] * WORKERS
    finally:
        for conn in again:
            conn.close()


def test_associations_are_dealt_evenly_to_the_workers(archive_process: ArchiveProcess) -> None:
    # A PACS sending over 2 associations per worker gets every core, not the luck of a hash.
    count = 2 * WORKERS
    held = [_associate(archive_process.dimse_port) for _ in range(count)]
    try:
        assert _associations_per_worker(archive_process) == [2] * WORKERS
        assert all(int(a.send_c_echo().Status) == 0 for a in held)
    finally:
        for assoc in held:
            assoc.release()
    # Workers report closed associations: once they are closed, the next ones are dealt
    # evenly again.
    _wait_all_closed(archive_process, archive_process.dimse_port)
    again = [_associate(archive_process.dimse_port) for _ in range(WORKERS)]
    try:
        assert _associations_per_worker(archive_process) == [1] * WORKERS
    finally:
        for assoc in again:
            assoc.release()


@pytest.fixture
def tls_archive(pki: Pki) -> Iterator[ArchiveProcess]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-tls-"))
    server = ArchiveProcess(root / "data")
    base_env = server.env

    def env() -> dict[str, str]:
        return {
            **base_env(),
            "VNA_DIMSE_TLS_CERT": str(pki.server_cert),
            "VNA_DIMSE_TLS_KEY": str(pki.server_key),
            "VNA_HTTP_TLS_CERT": str(pki.server_cert),
            "VNA_HTTP_TLS_KEY": str(pki.server_key),
        }

    server.env = env  # type: ignore[method-assign]
    server.https_ca = pki.ca
    try:
        server.start()
        yield server
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def test_dicom_tls_through_the_supervisor(tls_archive: ArchiveProcess, pki: Pki) -> None:
    # Every worker gets a TLS association (the supervisor deals them in turn) and answers.
    for _ in range(WORKERS):
        assert echo_and_find(tls_archive.dimse_port, client_context(pki)) == (True, 0, 0)
    # Plain DIMSE on the TLS port never gets an association.
    assert echo_and_find(tls_archive.dimse_port, None)[0] is False
    # The server keeps serving after that failed handshake.
    assert echo_and_find(tls_archive.dimse_port, client_context(pki)) == (True, 0, 0)


def test_https_through_the_supervisor(tls_archive: ArchiveProcess, pki: Pki) -> None:
    port = tls_archive.http_port
    # Plain HTTP on the HTTPS port gets no answer.
    with pytest.raises((OSError, http.client.HTTPException)):
        _keep_alive(port)
    # Its worker reports it closed a moment after the client saw it closed; until then the
    # supervisor counts it (seen once in CI: 1 and 3 connections instead of 2 and 2).
    _wait_all_closed(tls_archive, port)
    # Every worker gets HTTPS connections and answers them, after that failed handshake.
    held = [_keep_alive(port, client_context(pki)) for _ in range(2 * WORKERS)]
    try:
        assert _connections_per_worker(tls_archive, port) == [2] * WORKERS
    finally:
        for conn in held:
            conn.close()
