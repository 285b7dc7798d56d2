"""Closed by default (issue 23, item 4): who may reach the DIMSE port, which AE title it answers
to, and who may read the stored objects.

The non-loopback caller is a network namespace this test makes, joined to the machine by a
veth pair with two private addresses: a real second machine as far as TCP is concerned, with
no traffic leaving this host.  It needs root and iproute2; without them those tests are skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import free_port
from vna.archive import Archive
from vna.config import DimseSettings, Settings, SourceSettings
from vna.errors import ConfigError
from vna.gateway.dimse import DimseListener
from vna.storage.filesystem import FilesystemStore

Start = Callable[..., Awaitable[tuple[Archive, DimseListener]]]
HOSP1 = SourceSettings(name="HOSP1", ae_titles=("HOSP1PACS",), issuer_of_patient_id="H1")


@pytest.fixture
async def start_archive(archive_settings: Settings) -> AsyncIterator[Start]:
    started: list[tuple[Archive, DimseListener]] = []

    async def start(dimse: DimseSettings, **overrides: Any) -> tuple[Archive, DimseListener]:
        settings = dataclasses.replace(archive_settings, dimse=dimse, **overrides)
        archive = await Archive.open(settings)
        listener = DimseListener(archive)
        try:
            await listener.start()
        except BaseException:
            await archive.close()
            raise
        started.append((archive, listener))
        return archive, listener

    yield start
    for archive, listener in reversed(started):
        await listener.stop(grace_seconds=5)
        await archive.close()


def _echo(host: str, port: int, called: str, calling: str = "ECHOSCU") -> str:
    """C-ECHO; "ok", "rejected R/S/D" or "no association" (nothing answered)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called)
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        return f"rejected {rj.result}/{rj.result_source}/{rj.diagnostic}"
    if not assoc.is_established:
        return "no association"
    status = assoc.send_c_echo()
    assoc.release()
    return "ok" if status and status.Status == 0 else "echo failed"


# --- the called AE title -------------------------------------------------------------------


async def test_an_association_for_another_ae_title_is_rejected(start_archive: Start) -> None:
    archive, listener = await start_archive(DimseSettings(port=0, ae_title="VNA"))
    # A sender configured for another archive: rejected-permanent, by the service user,
    # called AE title not recognized (PS3.8 Table 9-21, reason 7).
    assert await asyncio.to_thread(_echo, "127.0.0.1", listener.port, "OTHERPACS") == (
        "rejected 1/1/7"
    )
    assert await asyncio.to_thread(_echo, "127.0.0.1", listener.port, "VNA") == "ok"
    # The rejection is audited (after it is sent: the caller does not wait for the record).
    detail = None
    for _ in range(50):
        async with archive.db.acquire() as conn:
            detail = await conn.fetchval(
                "SELECT detail::text FROM audit WHERE action = 'association-rejected'"
            )
        if detail is not None:
            break
        await asyncio.sleep(0.1)
    assert detail is not None and "called AE title not recognised" in detail


async def test_any_called_ae_title_is_accepted_when_configured(start_archive: Start) -> None:
    _, listener = await start_archive(
        DimseSettings(port=0, ae_title="VNA", accept_any_called_ae=True)
    )
    assert await asyncio.to_thread(_echo, "127.0.0.1", listener.port, "OTHERPACS") == "ok"


@pytest.mark.dcmtk
def test_echoscu_names_the_rejection(archive_settings: Settings) -> None:
    """What an administrator testing with dcmtk sees."""
    if shutil.which("echoscu") is None:
        pytest.skip("dcmtk's echoscu is not installed")

    async def run() -> subprocess.CompletedProcess[str]:
        archive = await Archive.open(
            dataclasses.replace(archive_settings, dimse=DimseSettings(port=0, ae_title="VNA"))
        )
        listener = DimseListener(archive)
        await listener.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                "echoscu", "-aec", "WRONG", "127.0.0.1", str(listener.port),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), "")
        finally:
            await listener.stop(grace_seconds=5)
            await archive.close()

    result = asyncio.run(run())
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout, result.stdout


# --- who may reach the port ----------------------------------------------------------------


class Namespace:
    """A network namespace reached over a veth pair: ``host_address`` is this machine's end,
    ``run`` executes a command from the other end."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.name = f"vnatest{tag}"
        self.host_if, self.ns_if = f"vnh{tag}", f"vnn{tag}"
        # 10.213.N.0/30: private, on links this test creates, different per test process.
        net = f"10.213.{tag % 250}"
        self.host_address, self.ns_address = f"{net}.1", f"{net}.2"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def create(self) -> None:
        self.delete()
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        inside = ("netns", "exec", self.name, "ip")
        self._ip(*inside, "addr", "add", f"{self.ns_address}/30", "dev", self.ns_if)
        self._ip(*inside, "link", "set", self.ns_if, "up")
        self._ip(*inside, "link", "set", "lo", "up")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)

    async def echo(self, port: int, calling: str) -> str:
        """C-ECHO to this machine's address, from inside the namespace."""
        script = textwrap.dedent(
            f"""
            from tests.integration.test_dimse_exposure import _echo
            print(_echo({self.host_address!r}, {port}, "VNA", {calling!r}))
            """
        )
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, sys.executable, "-c", script,
            cwd=str(Path(__file__).parents[2]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        return out.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip) to create a network namespace")
    ns = Namespace()
    try:
        ns.create()
    except subprocess.CalledProcessError as exc:
        ns.delete()
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield ns
    finally:
        ns.delete()


async def test_another_machine_is_refused_while_no_sources_are_declared(
    start_archive: Start, namespace: Namespace
) -> None:
    _, listener = await start_archive(DimseSettings(port=0))
    # Loopback callers are served; the machine next door finds no port open at all.
    assert await asyncio.to_thread(_echo, "127.0.0.1", listener.port, "VNA") == "ok"
    assert await namespace.echo(listener.port, "ANYSCU") == "no association"


async def test_another_machine_is_accepted_once_sources_are_declared(
    start_archive: Start, namespace: Namespace
) -> None:
    _, listener = await start_archive(DimseSettings(port=0), sources=(HOSP1,))
    assert await namespace.echo(listener.port, "HOSP1PACS") == "ok"
    # ... as the declared source only.
    assert await namespace.echo(listener.port, "ANYSCU") == "rejected 1/1/3"


async def test_allow_any_caller_opens_the_port_on_purpose(
    start_archive: Start, namespace: Namespace
) -> None:
    _, listener = await start_archive(DimseSettings(host="0.0.0.0", port=0, allow_any_caller=True))
    assert await namespace.echo(listener.port, "ANYSCU") == "ok"


async def test_a_non_loopback_address_without_sources_is_refused(start_archive: Start) -> None:
    with pytest.raises(ConfigError, match="allow_any_caller"):
        await start_archive(DimseSettings(host="0.0.0.0", port=0))


def test_serve_refuses_to_start_open_to_the_network(tmp_path: Path) -> None:
    """One line, exit 2, before anything (the embedded PostgreSQL) is started."""
    env = dict(os.environ)
    env.update(
        VNA_DATA_DIR=str(tmp_path / "data"),
        VNA_HTTP_PORT=str(free_port()),
        VNA_DIMSE_PORT=str(free_port()),
        VNA_DIMSE_HOST="0.0.0.0",
    )
    for workers in ("1", "2"):  # one process, and under the supervisor
        env["VNA_HTTP_WORKERS"] = workers
        result = subprocess.run(
            [str(Path(sys.executable).parent / "vna"), "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "no sources declared" in lines[0] and "allow_any_caller" in lines[0]
        assert not (tmp_path / "data" / "pg").exists()


# --- who may read the objects --------------------------------------------------------------


async def test_objects_are_readable_by_the_archive_user_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: files 644, directories 755
    try:
        store = FilesystemStore(tmp_path / "objects")

        data = b"patient data"
        digest = hashlib.sha256(data).hexdigest()
        await store.put_bytes(f"sha256/{digest[:2]}/{digest[2:4]}/{digest}", data, sha256=digest)
        upload = tmp_path / "upload.dcm"
        upload.write_bytes(b"another instance")  # created 644, as an upload would be
        other = hashlib.sha256(upload.read_bytes()).hexdigest()
        key = f"sha256/{other[:2]}/{other[2:4]}/{other}"
        await store.put_file(key, upload, sha256=other, consume=True)
        copied = tmp_path / "copied.dcm"
        copied.write_bytes(b"a third instance")
        third = hashlib.sha256(copied.read_bytes()).hexdigest()
        await store.put_file(f"sha256/{third[:2]}/{third[2:4]}/{third}", copied, sha256=third)
        await store.set_tier(key, "warm")
    finally:
        os.umask(previous)
    files, dirs = [], []
    for root_dir in (tmp_path / "objects", tmp_path / "objects-warm"):
        dirs.append(root_dir)
        for path in root_dir.rglob("*"):
            (dirs if path.is_dir() else files).append(path)
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in dirs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


async def test_uploads_being_received_are_private_too(archive_settings: Settings) -> None:
    previous = os.umask(0o022)
    try:
        archive = await Archive.open(archive_settings)
    finally:
        os.umask(previous)
    try:
        for path in (
            archive.incoming,
            archive.incoming.parent,
            archive.settings.data_dir / "objects",
        ):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    finally:
        await archive.close()
