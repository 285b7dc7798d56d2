"""Shared fixtures: a real PostgreSQL (embedded, or VNA_TEST_DATABASE_URL), a real S3 endpoint
(moto in server mode on a free loopback port) and pydicom's bundled test files.

A template database is migrated once per session; each test gets a fresh copy of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg
import pytest

from vna.archive import Archive
from vna.catalog.database import Database, EmbeddedPostgres
from vna.catalog.migrate import migrate
from vna.config import Settings

# moto and boto3 need credentials to sign requests; these never leave the machine.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

TEMPLATE = "vna_test_template"
_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a database on a real PostgreSQL server that tests may create databases from."""
    external = os.environ.get("VNA_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: run as root, the server runs as another user that must
    # traverse the path, and pytest resets its own directories to mode 0700.
    root = Path(tempfile.mkdtemp(prefix="vna-test-pg-"))
    server = EmbeddedPostgres(root / "data", database="vna")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str:
    async def build() -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(pg_admin_url, TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return TEMPLATE


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated catalogue database for this test."""
    name = f"vna_test_{os.getpid()}_{next(_counter)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    try:
        yield with_database(pg_admin_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=8)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port (a real HTTP endpoint, not an in-process mock)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket for this test."""
    import boto3

    name = f"vna-test-{os.getpid()}-{next(_counter)}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_url(s3_endpoint: str, s3_bucket: str) -> str:
    return f"s3://{s3_bucket}?endpoint_url={s3_endpoint}&region=us-east-1"


@pytest.fixture(scope="session")
def pydicom_test_dir() -> Path:
    """The folder of DICOM files pydicom ships with its tests."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return Path(path).parent


#: The object stores the core ingest-to-retrieve tests run on: ``@pytest.mark.parametrize(
#: "store_kind", STORE_KINDS)`` on a test overrides the ``store_kind`` fixture below.
STORE_KINDS = ("file", "s3")


@pytest.fixture
def store_kind() -> str:
    """The object store of this test's archive: ``file`` (the filesystem store under the data
    directory, the default) or ``s3`` (a fresh bucket on the moto S3 server)."""
    return "file"


def storage_url_for(store_kind: str, request: pytest.FixtureRequest) -> str:
    """The ``storage_url`` of a store kind ("" is the filesystem store under data_dir)."""
    if store_kind == "file":
        return ""
    if store_kind == "s3":
        return str(request.getfixturevalue("s3_url"))
    raise ValueError(f"unknown store kind {store_kind!r}")


@pytest.fixture
def archive_settings(
    tmp_path: Path, database_url: str, store_kind: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings of an archive on this test's database and its store: the filesystem under
    tmp_path, or an S3 bucket when the test is parametrised with ``store_kind``."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage_url=storage_url_for(store_kind, request),
    )


@pytest.fixture
async def archive(archive_settings: Settings) -> AsyncIterator[Archive]:
    """A real archive (catalogue, filesystem store, pipeline) opened in this process."""
    opened = await Archive.open(archive_settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def dicomweb(archive: Archive) -> AsyncIterator[str]:
    """The DICOMweb gateway of ``archive`` on a free loopback port; yields its base URL."""
    from aiohttp import web

    from vna.gateway.web import create_app

    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        await runner.cleanup()
