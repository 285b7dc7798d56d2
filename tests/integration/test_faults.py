"""Injected faults: the object store failing mid-write, the S3 endpoint stopped, the database
lost mid-request.  Each time the instance is refused with a retriable status (STOW-RS 503 with
FailureReason A700, C-STORE A700), nothing is acknowledged or catalogued, the server keeps
serving, and once the backing service is back everything works without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import asyncpg
import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.conftest import free_port
from tests.factory import ct_study, part10
from tests.integration.test_dimse import find, scu, store, study_keys
from tests.security_support import ACCEPT_DICOM, call, dicom_parts, serving, stow
from vna.archive import Archive
from vna.config import DimseSettings, Settings
from vna.gateway.dimse import DimseListener

pytestmark = pytest.mark.asyncio

A700 = 0xA700


def failure_reasons(reply: Any) -> list[int]:
    return [f["00081197"]["Value"][0] for f in reply.json()["00081198"]["Value"]]


async def count(archive: Archive, table: str) -> int:
    async with archive.db.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


def stored_objects(archive: Archive) -> list[Path]:
    root = archive.settings.data_dir / "objects" / "sha256"
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json")]


@contextlib.asynccontextmanager
async def gateways(settings: Settings) -> AsyncIterator[tuple[Archive, str, int]]:
    """The archive with DICOMweb and DIMSE on free loopback ports."""
    settings = dataclasses.replace(
        settings, dimse=DimseSettings(host="127.0.0.1", port=0, network_timeout=30)
    )
    archive = await Archive.open(settings)
    listener = DimseListener(archive)
    await listener.start()
    try:
        async with serving(archive) as root:
            yield archive, root, listener.port
    finally:
        await listener.stop(grace_seconds=5)
        await archive.close()


async def test_object_store_failing_mid_write(archive_settings, monkeypatch):
    from vna.storage import filesystem

    async with gateways(archive_settings) as (archive, root, port):
        (first, second) = ct_study(series=1, slices=2)
        real_fsync = filesystem._fsync_file

        def failing_disk(path: Path) -> None:
            # The bytes are written, making them durable fails: an I/O error mid-write.
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(filesystem, "_fsync_file", failing_disk)
        reply = await stow(root, [part10(first)])
        assert reply.status == 503 and reply.headers["Retry-After"]
        assert failure_reasons(reply) == [A700]
        assert "write failed" in reply.headers["Warning"]
        assert await scu(store, port, [second]) == [A700]
        # Nothing acknowledged is missing, nothing unacknowledged is catalogued.
        assert await count(archive, "instances") == 0
        assert stored_objects(archive) == []
        # The server keeps serving meanwhile.
        assert (await call("GET", f"{root}/healthz")).status == 200
        assert (await call("GET", f"{root}/dicom-web/studies")).json() == []

        monkeypatch.setattr(filesystem, "_fsync_file", real_fsync)
        assert (await stow(root, [part10(first)])).status == 200
        assert await scu(store, port, [second]) == [0]
        got = await call(
            "GET", f"{root}/dicom-web/studies/{first.StudyInstanceUID}", accept=ACCEPT_DICOM
        )
        assert got.status == 200 and len(dicom_parts(got)) == 2
        assert list(archive.incoming.iterdir()) == []


async def test_s3_endpoint_stopped_and_back(archive_settings, monkeypatch):
    """The S3 endpoint goes away (a real server stopped, not a mock raising), then returns."""
    import boto3
    from moto.server import ThreadedMotoServer

    from vna.storage import s3

    # botocore's own retries (with back-off) only delay the answer; one attempt keeps the
    # test short and the outcome is the same.
    boto_config = s3.BotoConfig

    def one_attempt(**options: Any) -> Any:
        return boto_config(**{**options, "retries": {"max_attempts": 1, "mode": "standard"}})

    monkeypatch.setattr(s3, "BotoConfig", one_attempt)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="faults"
    )
    settings = dataclasses.replace(
        archive_settings, storage_url=f"s3://faults?endpoint_url={endpoint}&region=us-east-1"
    )
    try:
        async with gateways(settings) as (archive, root, dimse_port):
            (before, during, other) = ct_study(series=1, slices=3)
            assert (await stow(root, [part10(before)])).status == 200

            server.stop()
            reply = await stow(root, [part10(during)])
            assert reply.status == 503 and failure_reasons(reply) == [A700]
            assert await scu(store, dimse_port, [other]) == [A700]
            assert await count(archive, "instances") == 1
            assert (await call("GET", f"{root}/healthz")).status == 200

            # Back on the same address, with the bucket it had (moto keeps its state).
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            assert (await stow(root, [part10(during)])).status == 200
            assert await scu(store, dimse_port, [other]) == [0]
            got = await call(
                "GET", f"{root}/dicom-web/studies/{before.StudyInstanceUID}", accept=ACCEPT_DICOM
            )
            assert got.status == 200 and len(dicom_parts(got)) == 3
    finally:
        server.stop()


class CuttableProxy:
    """A TCP proxy in front of PostgreSQL that the test can cut (every connection dropped, new
    ones refused: a stopped or unreachable server) and restore on the same port."""

    def __init__(self, database_url: str) -> None:
        url = urlparse(database_url)
        socket_dir = parse_qs(url.query).get("host", [None])[0]
        port = url.port or 5432
        # The embedded server listens on a Unix socket (PostgreSQL's .s.PGSQL.<port> file).
        self.unix = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self.target = (url.hostname or "127.0.0.1", port)
        self.port = free_port()
        # The same database, user and password through the proxy's TCP port.
        user = url.username or ""
        auth = f"{user}:{url.password or ''}@" if user else ""
        self.url = urlunparse(url._replace(netloc=f"{auth}127.0.0.1:{self.port}", query=""))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_database_lost_mid_request_and_back(archive_settings, monkeypatch):
    proxy = CuttableProxy(archive_settings.database_url)
    await proxy.start()
    settings = dataclasses.replace(archive_settings, database_url=proxy.url)
    try:
        async with gateways(settings) as (archive, root, port):
            study = ct_study(series=1, slices=3)
            assert (await stow(root, [part10(study[0])])).status == 200

            # The database goes away between the object write and the catalogue commit.
            put_file = archive.store.put_file

            async def put_then_lose_database(*args: Any, **kwargs: Any) -> None:
                await put_file(*args, **kwargs)
                await proxy.cut()

            monkeypatch.setattr(archive.store, "put_file", put_then_lose_database)
            reply = await stow(root, [part10(study[1])])
            monkeypatch.setattr(archive.store, "put_file", put_file)
            assert reply.status == 503 and failure_reasons(reply) == [A700]
            assert "catalogue unavailable" in reply.headers["Warning"]

            # While it is away: clear, retriable refusals everywhere, no hang.
            assert await scu(store, port, [study[2]]) == [A700]
            found, status = await scu(
                find,
                port,
                StudyRootQueryRetrieveInformationModelFind,
                study_keys("STUDY", StudyInstanceUID=""),
            )
            assert (found, status) == ([], A700)
            query = await call("GET", f"{root}/dicom-web/studies")
            assert query.status == 503 and b"catalogue unavailable" in query.body
            assert (await call("GET", f"{root}/healthz")).status == 503

            # Back: the pool reconnects by itself; nothing was catalogued while away.
            await proxy.start()
            assert (await call("GET", f"{root}/healthz")).status == 200
            assert await count(archive, "instances") == 1
            assert (await stow(root, [part10(study[1])])).status == 200
            assert await scu(store, port, [study[2]]) == [0]
            found, status = await scu(
                find,
                port,
                StudyRootQueryRetrieveInformationModelFind,
                study_keys("STUDY", StudyInstanceUID=""),
            )
            assert status == 0 and len(found) == 1

            # Connections killed on the server side (pg_terminate_backend): at worst one
            # retriable refusal, then service as before.
            admin = await asyncpg.connect(archive_settings.database_url)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            first = await call("GET", f"{root}/dicom-web/studies")
            assert first.status in (200, 503)
            again = await call("GET", f"{root}/dicom-web/studies")
            assert again.status == 200 and len(again.json()) == 1
    finally:
        await proxy.cut()


async def test_a_dimse_association_survives_a_refused_instance(archive_settings, monkeypatch):
    """A700 for one instance does not end the association: the sender's next C-STORE on it
    succeeds once the store is back (PACS retry within one association)."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from tests.integration.test_dimse import association
    from vna.storage import filesystem

    calls = {"n": 0}
    real_fsync = filesystem._fsync_file

    def fail_once(path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(path)

    monkeypatch.setattr(filesystem, "_fsync_file", fail_once)
    async with gateways(archive_settings) as (archive, _, port):
        (ds,) = ct_study(series=1, slices=1)

        def twice() -> list[int]:
            contexts = [(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
            with association(port, contexts) as assoc:
                return [int(assoc.send_c_store(ds).Status) for _ in range(2)]

        assert await scu(twice) == [A700, 0]
        assert await count(archive, "instances") == 1
