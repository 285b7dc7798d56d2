"""Helpers of the security tests: an archive's DICOMweb gateway on a free port, HTTP calls with
a bearer token, the command line run against the test's catalogue."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.factory import stow_body
from vna.archive import Archive
from vna.config import Settings

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_JSON = "application/dicom+json"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Any

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@contextlib.asynccontextmanager
async def serving(
    archive: Archive, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """The archive's DICOMweb gateway on a free loopback port; yields its root URL."""
    from vna.gateway.web import create_app

    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    accept: str = ACCEPT_JSON,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    time_limit: float = 30,
) -> Reply:
    sent = {"Accept": accept, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=time_limit)
        ) as http,
        http.request(method, url, data=data, headers=sent) as resp,
    ):
        return Reply(resp.status, await resp.read(), resp.headers)


async def stow(root: str, parts: Sequence[bytes], token: str | None = None) -> Reply:
    body, content_type = stow_body(parts)
    return await call(
        "POST",
        f"{root}/dicom-web/studies",
        token=token,
        data=body,
        headers={"Content-Type": content_type},
    )


def config_file(settings: Settings, path: Path, extra: str = "") -> Path:
    """A TOML file for the command line naming the test's catalogue and sources."""
    lines = [
        f'data_dir = "{settings.data_dir}"',
        f'database_url = "{settings.database_url}"',
    ]
    for src in settings.sources:
        lines += ["[[sources]]", f'name = "{src.name}"']
        if src.issuer_of_patient_id:
            lines.append(f'issuer_of_patient_id = "{src.issuer_of_patient_id}"')
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


async def vna(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    """Run the command line in a thread (it runs its own event loop); exit code, out, err."""
    from vna.cli import main

    code = await asyncio.to_thread(main, ["--config", str(config), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def audit_rows(archive: Archive, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
    async with archive.db.acquire() as conn:
        rows = await conn.fetch(f"SELECT * FROM audit WHERE {where} ORDER BY id", *args)
    return [dict(r) for r in rows]


def dicom_parts(reply: Reply) -> list[bytes]:
    from tests.factory import split_multipart

    return split_multipart(reply.body, reply.headers["Content-Type"])


def read_part(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data))
