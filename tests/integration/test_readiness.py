"""``/readyz`` tells the truth (issue 23, item 5): 503 naming what is down while the object
store or the catalogue cannot be reached, 200 once they are back; ``/healthz`` stays a cheap
liveness answer.

The store is a moto S3 server of this test's own (stopped and started again on its port); the
catalogue is made unreachable by refusing connections to its database and ending the open ones.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.conftest import free_port
from vna.archive import Archive
from vna.config import Settings
from vna.gateway import readiness
from vna.gateway.web import create_app


class MotoServer:
    """A moto S3 server on a fixed loopback port that can go away and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def ensure_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Served:
    base: str
    archive: Archive


@pytest.fixture
async def served(tmp_path: Any, database_url: str, moto: MotoServer) -> AsyncIterator[Served]:
    bucket = f"vna-ready-{os.getpid()}"
    moto.ensure_bucket(bucket)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage_url=f"s3://{bucket}?endpoint_url={moto.endpoint}&region=us-east-1&timeout=2",
    )
    archive = await Archive.open(settings)
    app = create_app(archive)
    app[readiness.PROBE].cache_seconds = 0  # each request checks again
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Served(f"http://127.0.0.1:{port}", archive)
    finally:
        await runner.cleanup()
        await archive.close()


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            return resp.status, await resp.json()


async def wait_for_status(url: str, status: int, seconds: float = 20) -> dict[str, Any]:
    """The answer once it has ``status``; the last answer in the failure otherwise."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got, body = await get(url)
        if got == status or asyncio.get_running_loop().time() > deadline:
            assert got == status, body
            return body
        await asyncio.sleep(0.3)


async def set_database_reachable(admin_url: str, database_url: str, reachable: bool) -> None:
    name = urlparse(database_url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(
            f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if reachable else "false"}'
        )
        if not reachable:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await conn.close()


async def test_ready_while_everything_answers(served: Served) -> None:
    status, body = await get(f"{served.base}/readyz")
    assert status == 200, body
    assert body == {"status": "ready", "checks": {"catalogue": "ok", "store": "ok"}}


async def test_not_ready_while_the_store_is_down_and_ready_once_back(
    served: Served, moto: MotoServer
) -> None:
    bucket = urlparse(served.archive.settings.storage_url).netloc
    moto.stop()
    body = await wait_for_status(f"{served.base}/readyz", 503)
    assert body["status"] == "not ready" and body["down"] == ["store"]
    assert body["checks"]["catalogue"] == "ok"
    # Liveness stays cheap: the process answers, whatever the store does.
    assert (await get(f"{served.base}/healthz"))[0] == 200

    moto.start()
    moto.ensure_bucket(bucket)
    await wait_for_status(f"{served.base}/readyz", 200)


async def test_not_ready_without_the_bucket(served: Served, moto: MotoServer) -> None:
    import boto3

    bucket = urlparse(served.archive.settings.storage_url).netloc
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
    body = await wait_for_status(f"{served.base}/readyz", 503)
    assert body["down"] == ["store"] and "NoSuchBucket" in body["checks"]["store"]
    moto.ensure_bucket(bucket)
    await wait_for_status(f"{served.base}/readyz", 200)


async def test_not_ready_while_the_catalogue_is_down_and_ready_once_back(
    served: Served, pg_admin_url: str, database_url: str
) -> None:
    await set_database_reachable(pg_admin_url, database_url, False)
    try:
        body = await wait_for_status(f"{served.base}/readyz", 503)
        assert body["down"] == ["catalogue"]
        assert body["checks"]["store"] == "ok"
    finally:
        await set_database_reachable(pg_admin_url, database_url, True)
    await wait_for_status(f"{served.base}/readyz", 200)


async def test_both_down_are_both_named(
    served: Served, moto: MotoServer, pg_admin_url: str, database_url: str
) -> None:
    moto.stop()
    await set_database_reachable(pg_admin_url, database_url, False)
    try:
        body = await wait_for_status(f"{served.base}/readyz", 503)
        assert sorted(body["down"]) == ["catalogue", "store"]
    finally:
        await set_database_reachable(pg_admin_url, database_url, True)


async def test_the_answer_is_remembered_for_a_few_seconds(served: Served) -> None:
    writes = 0
    store = served.archive.store
    original = store.put_bytes

    async def counting(*args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        await original(*args, **kwargs)

    store.put_bytes = counting  # type: ignore[method-assign]
    app_probe = readiness.ReadinessProbe(served.archive, cache_seconds=60)
    for _ in range(5):
        assert (await app_probe.check()).ready
    assert writes == 1
    # No probe object is left behind where the store allows deleting it.
    assert [k async for k in store.iter_keys("health/")] == []
