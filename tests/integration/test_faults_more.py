"""More injected faults (issue 9): an S3 endpoint answering 500s, hanging or resetting
connections; a full filesystem under the object store; a client vanishing mid-upload; the
PostgreSQL server restarted mid-ingest.

Each time the sender gets a retriable refusal (STOW-RS 503 with FailureReason A700, C-STORE
A700) or success, never a false success; once the fault is gone every acknowledged instance
comes back bit-exact, every catalogue row has its object, and the same server serves again
without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from tests.conftest import free_port
from tests.factory import ct_study, part10, stow_body
from tests.integration.test_dimse import scu, store
from tests.integration.test_faults import A700, count, failure_reasons, gateways
from tests.security_support import ACCEPT_DICOM, call, dicom_parts, read_part, stow
from vna.archive import Archive

pytestmark = pytest.mark.asyncio


# --- checks shared by every fault -----------------------------------------------------------


async def retrieve(root: str, ds: Dataset) -> bytes:
    got = await call(
        "GET",
        f"{root}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}",
        accept=ACCEPT_DICOM,
    )
    assert got.status == 200, ds.SOPInstanceUID
    (part,) = dicom_parts(got)
    return part


async def assert_bit_exact(root: str, sent: Sequence[Dataset]) -> None:
    """Every instance of ``sent`` (by STOW-RS) comes back byte for byte as sent."""
    for ds in sent:
        assert await retrieve(root, ds) == part10(ds), ds.SOPInstanceUID


async def assert_same_data(root: str, sent: Sequence[Dataset]) -> None:
    """Every instance of ``sent`` by C-STORE comes back with its data set's values (the file
    meta header and the encoding are the negotiated ones, not those of ``part10``)."""
    for ds in sent:
        got = read_part(await retrieve(root, ds))
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.PixelData == ds.PixelData


async def assert_every_row_has_its_object(archive: Archive) -> None:
    async with archive.db.acquire() as conn:
        keys = [
            r["object_key"]
            for r in await conn.fetch(
                "SELECT object_key FROM instances UNION SELECT object_key FROM instance_versions"
            )
        ]
    for key in keys:
        assert await archive.store.stat(key) is not None, key


async def catalogued(archive: Archive, ds: Dataset) -> bool:
    async with archive.db.acquire() as conn:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM instances WHERE sop_uid = $1", ds.SOPInstanceUID
            )
        )


async def wait_empty(directory: Path, seconds: float = 5) -> list[Path]:
    """The directory's entries once it is empty, or what is left after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        left = list(directory.iterdir())  # noqa: ASYNC240 - a test
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.05)


# --- 1. an S3 endpoint failing: 500s, hangs, connection resets -------------------------------


class FaultProxy:
    """A TCP proxy in front of an HTTP endpoint whose behaviour the test switches at run time.

    ``pass``: bytes forwarded both ways.  ``error500``: every request answered with
    500 InternalError (S3's own "try again" error).  ``hang``: the request read, never answered.
    ``reset``: the request read, then the connection reset (SO_LINGER 0: an RST, no FIN).
    ``forward_then_reset``: the request reaches the endpoint (the object is written), its answer
    is thrown away and the connection reset: the sender cannot know the write happened.

    Switching the mode aborts every open connection, so no pooled keep-alive connection keeps
    the behaviour of the previous mode.
    """

    MODES = ("pass", "error500", "hang", "reset", "forward_then_reset")

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.port = free_port()
        self.mode = "pass"
        self.requests: dict[str, int] = {mode: 0 for mode in self.MODES}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._abort_all()
            await self._server.wait_closed()
            self._server = None

    def switch(self, mode: str) -> None:
        assert mode in self.MODES, mode
        self.mode = mode
        self._abort_all()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "pass":
                await self._forward(reader, writer)
                return
            while True:
                mode = self.mode
                request = await _read_request(reader, writer, answer_continue=mode != "hang")
                if request is None:
                    return
                self.requests[mode] += 1
                if mode == "error500":
                    body = (
                        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError'
                        b"</Code><Message>We encountered an internal error. Please try again."
                        b"</Message></Error>"
                    )
                    writer.write(
                        b"HTTP/1.1 500 Internal Server Error\r\n"
                        b"Content-Type: application/xml\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    await writer.drain()
                elif mode == "hang":
                    # Wait for the client to give up (or the test to switch modes).
                    while await reader.read(65536):
                        pass
                    return
                elif mode == "forward_then_reset":
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
                    up_writer.write(request)
                    await up_writer.drain()
                    await _read_response_head(up_reader)  # the endpoint has done the work
                    up_writer.transport.abort()
                    _reset(writer)
                    return
                else:  # reset
                    _reset(writer)
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answer_continue: bool
) -> bytes | None:
    """One whole HTTP/1.1 request (head and body) as received, or None at end of stream.

    A client that asks "Expect: 100-continue" sends its body only after a "100 Continue":
    answered unless ``answer_continue`` is false (a hung endpoint), when the head is all."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers = _headers(head)
    if headers.get("expect", "").lower() == "100-continue":
        if not answer_continue:
            return head
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "content-length" in headers:
        return head + await reader.readexactly(int(headers["content-length"]))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                # Trailers (aws-chunked checksums) end with an empty line.
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    body += line
                return head + body + b"\r\n"
            body += await reader.readexactly(size + 2)
    return head


async def _read_response_head(reader: asyncio.StreamReader) -> bytes:
    """The final response's head (after any 1xx interim answers)."""
    while (head := await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 1"):
        pass
    return head


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    out = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


#: Seconds the S3 client waits to connect and for each read of an answer, through the proxy:
#: short, so that a hung endpoint costs the test a few seconds (3 attempts).
S3_TIMEOUT = 0.5


@pytest.mark.parametrize("mode", ["error500", "hang", "reset", "forward_then_reset"])
async def test_s3_endpoint_failing(archive_settings, s3_endpoint, s3_bucket, mode):
    async with fault_proxy(s3_endpoint) as proxy:
        settings = dataclasses.replace(
            archive_settings,
            storage_url=f"s3://{s3_bucket}?endpoint_url=http://127.0.0.1:{proxy.port}"
            f"&region=us-east-1&timeout={S3_TIMEOUT}",
        )
        async with gateways(settings) as (archive, root, dimse_port):
            (before, during, other) = ct_study(series=1, slices=3)
            assert (await stow(root, [part10(before)])).status == 200

            proxy.switch(mode)
            started = time.monotonic()
            reply = await stow(root, [part10(during)])
            elapsed = time.monotonic() - started
            assert reply.status == 503 and reply.headers["Retry-After"]
            assert failure_reasons(reply) == [A700]
            assert "upload failed" in reply.headers["Warning"]
            # botocore retried (3 attempts), and a hung endpoint did not hold the sender long.
            assert proxy.requests[mode] >= 3
            assert elapsed < 15
            assert await scu(store, dimse_port, [other]) == [A700]
            # Nothing refused is catalogued; the server keeps serving meanwhile.
            assert not await catalogued(archive, during)
            assert not await catalogued(archive, other)
            assert await count(archive, "instances") == 1
            assert (await call("GET", f"{root}/healthz")).status == 200
            assert len((await call("GET", f"{root}/dicom-web/studies")).json()) == 1

            proxy.switch("pass")
            assert (await stow(root, [part10(during)])).status == 200
            assert await scu(store, dimse_port, [other]) == [0]
            await assert_bit_exact(root, [before, during])
            await assert_same_data(root, [other])
            await assert_every_row_has_its_object(archive)
            assert await wait_empty(archive.incoming) == []


# --- 2. the object store's filesystem full ---------------------------------------------------


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory``; skips when mounting is not permitted."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a size-limited filesystem needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until the filesystem is full; return it."""
    filler = directory / "filler"
    try:
        with open(filler, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    return filler


async def test_object_store_filesystem_full(archive_settings, tmp_path):
    with small_filesystem(tmp_path / "store") as mounted:
        objects = mounted / "objects"
        settings = dataclasses.replace(archive_settings, storage_url=objects.as_uri())
        async with gateways(settings) as (archive, root, dimse_port):
            (before, during, other) = ct_study(series=1, slices=3)
            assert (await stow(root, [part10(before)])).status == 200

            filler = await asyncio.to_thread(fill, mounted)
            reply = await stow(root, [part10(during)])
            assert reply.status == 503 and reply.headers["Retry-After"]
            assert failure_reasons(reply) == [A700]
            assert "write failed" in reply.headers["Warning"]
            assert await scu(store, dimse_port, [other]) == [A700]
            assert not await catalogued(archive, during)
            assert await count(archive, "instances") == 1
            assert (await call("GET", f"{root}/healthz")).status == 200
            # Nothing half-written is left in the store's scratch directory.
            assert list((objects / ".tmp").iterdir()) == []
            assert await wait_empty(archive.incoming) == []

            filler.unlink()
            assert (await stow(root, [part10(during)])).status == 200
            assert await scu(store, dimse_port, [other]) == [0]
            await assert_bit_exact(root, [before, during])
            await assert_same_data(root, [other])
            await assert_every_row_has_its_object(archive)


# --- 3. a client gone mid-upload -------------------------------------------------------------


async def test_client_disconnecting_mid_upload(archive, dicomweb):
    root = dicomweb.removesuffix("/dicom-web")
    first, second = ct_study(series=1, slices=2)
    body, content_type = stow_body([part10(first), part10(second)])
    # Up to the middle of the second part's data set: the first part is complete.
    second_starts = body.index(part10(second))
    cut = second_starts + len(part10(second)) // 2

    host, port = root.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /dicom-web/studies HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Content-Type: {content_type}\r\n"
            "Accept: application/dicom+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:cut]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # let the server receive what was sent
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()

    # The partial part leaves nothing behind, the server serves on.
    assert await wait_empty(archive.incoming) == []
    assert (await call("GET", f"{root}/healthz")).status == 200
    assert not await catalogued(archive, second)
    await assert_every_row_has_its_object(archive)

    # The client's retry of the whole request succeeds (the first part may have been stored
    # already: its resend is then a duplicate, still a success).
    reply = await stow(root, [part10(first), part10(second)])
    assert reply.status == 200
    assert len(reply.json()["00081199"]["Value"]) == 2
    await assert_bit_exact(root, [first, second])
    await assert_every_row_has_its_object(archive)
    assert await count(archive, "instances") == 2
    assert await wait_empty(archive.incoming) == []


# --- 4. PostgreSQL restarted mid-ingest ------------------------------------------------------


@contextlib.contextmanager
def own_postgres() -> Iterator[Any]:
    """An embedded PostgreSQL server of this test only (the session's server keeps running)."""
    from vna.catalog.database import EmbeddedPostgres

    # Not under pytest's basetemp, as in tests/conftest.py: the server may run as another user.
    directory = Path(tempfile.mkdtemp(prefix="vna-test-pg-restart-"))
    server = EmbeddedPostgres(directory / "data", database="vna")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_postgres_restarted_mid_ingest(archive_settings, monkeypatch):
    with own_postgres() as server:
        url = await asyncio.to_thread(server.start)
        settings = dataclasses.replace(archive_settings, database_url=url)
        async with gateways(settings) as (archive, root, dimse_port):
            study = ct_study(series=1, slices=4)
            assert (await stow(root, [part10(study[0])])).status == 200

            # The server stops between the object write and the catalogue commit.
            put_file = archive.store.put_file

            async def put_then_stop_database(*args: Any, **kwargs: Any) -> None:
                await put_file(*args, **kwargs)
                await asyncio.to_thread(server.stop)

            monkeypatch.setattr(archive.store, "put_file", put_then_stop_database)
            reply = await stow(root, [part10(study[1])])
            monkeypatch.setattr(archive.store, "put_file", put_file)
            assert reply.status == 503 and failure_reasons(reply) == [A700]
            assert "catalogue unavailable" in reply.headers["Warning"]

            # While it is down: retriable refusals, no hang.
            assert await scu(store, dimse_port, [study[2]]) == [A700]
            assert (await call("GET", f"{root}/healthz")).status == 503
            query = await call("GET", f"{root}/dicom-web/studies")
            assert query.status == 503

            # The same server started again (same data directory, same address): the pool
            # reconnects by itself; nothing was catalogued while it was down.
            assert await asyncio.to_thread(server.start) == url
            deadline = time.monotonic() + 10
            while (await call("GET", f"{root}/healthz")).status != 200:
                assert time.monotonic() < deadline, "healthz did not recover"
                await asyncio.sleep(0.2)
            assert await count(archive, "instances") == 1
            assert (await stow(root, [part10(study[1])])).status == 200
            assert await scu(store, dimse_port, [study[2]]) == [0]
            assert (await stow(root, [part10(study[3])])).status == 200
            await assert_bit_exact(root, [study[0], study[1], study[3]])
            await assert_same_data(root, [study[2]])
            await assert_every_row_has_its_object(archive)
            assert await count(archive, "instances") == 4
            assert await wait_empty(archive.incoming) == []
