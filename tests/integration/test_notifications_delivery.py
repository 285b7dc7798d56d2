"""Notifications delivered by a real ``vna lifecycle run`` process to an HTTPS receiver whose
certificate a throwaway CA signed (the archive trusts it through ``[[notifications]]
ca_file``).  The receiver verifies the HMAC of every event.  Killing the process (SIGKILL) in
the middle of a delivery and starting it again loses no event (at least once; the one whose
answer was lost comes again with the same CloudEvents id); a receiver that is down for a while
gets the backlog, each study's events in order, once it answers again.  The five-minute
outage runs under ``make soak``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from lifecycle import notifications
from lifecycle.engine import Engine
from lifecycle.worker import run_once
from tests.conftest import free_port
from tests.factory import ct_study
from tests.integration.lifecycle_support import ingest, opened
from tests.integration.test_security_tls import _issue, _write
from vna.config import LifecycleSettings, NotificationSettings, Settings

pytestmark = pytest.mark.asyncio

VNA = Path(sys.executable).parent / "vna"
SECRET = "a long shared secret"
CREATED = "org.vna.instance.created"
STABLE = "org.vna.study.stable"


@dataclasses.dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a server certificate it signed for 127.0.0.1 / localhost."""
    d = tmp_path_factory.mktemp("receiver-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("Receiver test CA", ca_key, None, ca=True)
    ca_path = _write(d / "ca.pem", ca, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _write(d / "receiver.pem", _issue("ai", key, (ca.subject, ca_key), server=True), key)
    return Tls(ca_path, cert, cert.with_suffix(".key"))


class Receiver:
    """An AI service's endpoint: checks the signature, then keeps the event."""

    def __init__(self) -> None:
        #: Every verified delivery, repeats included, in arrival order.
        self.events: list[dict[str, Any]] = []
        self.bodies: dict[str, bytes] = {}
        self.bad_signatures = 0
        self.down = False
        #: Called with the number of deliveries so far; a delivery awaits what it returns.
        self.hold: Callable[[int], Any] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-VNA-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.down:
            return web.Response(status=503)
        event = json.loads(body)
        assert request.content_type == "application/cloudevents+json"
        # A repeated delivery is the same event: same id, same body.
        assert self.bodies.setdefault(event["id"], body) == body
        self.events.append(event)
        if self.hold is not None:
            await self.hold(len(self.events))
        return web.Response(status=204)

    def unique(self, kind: str) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.events if e["type"] == kind}

    def in_order_per_study(self) -> bool:
        """Each study's instance events, first deliveries, in feed (sequence) order."""
        seen: set[str] = set()
        per_study: dict[str, list[int]] = {}
        for e in self.events:
            if e["type"] == CREATED and e["id"] not in seen:
                seen.add(e["id"])
                per_study.setdefault(e["subject"], []).append(e["data"]["Sequence"])
        return all(s == sorted(s) for s in per_study.values())


@pytest.fixture
async def receiver(tls: Tls) -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/events", r.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield r, f"https://127.0.0.1:{port}/events"
    finally:
        await runner.cleanup()


def config_file(tmp_path: Path, database_url: str, url: str, ca: Path, **lifecycle: int) -> Path:
    lc = {
        "workers": 2,
        "poll_seconds": 1,
        "tick_seconds": 1,
        "lease_seconds": 2,
        "retry_base_seconds": 1,
        "retry_max_seconds": 2,
        **lifecycle,
    }
    text = f"""
data_dir = "{tmp_path / "data"}"
database_url = "{database_url}"

[lifecycle]
{chr(10).join(f"{k} = {v}" for k, v in lc.items())}

[[notifications]]
name = "ai"
url = "{url}"
secret = "{SECRET}"
ca_file = "{ca}"
stable_seconds = 2
"""
    path = tmp_path / "vna.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def lifecycle_process(config: Path, log: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """``start()`` runs ``vna lifecycle run`` (again); whatever runs at the end is stopped."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(VNA), "--config", str(config), "lifecycle", "run"], stdout=out, stderr=out
            )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def until(check: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            tail = await asyncio.to_thread(_tail, log)
            raise AssertionError(f"timed out waiting for {what}; lifecycle log:\n{tail}")
        await asyncio.sleep(0.1)


def settings_for(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


async def test_killed_in_the_middle_of_a_delivery_loses_no_event(
    tmp_path, database_url, receiver, tls
):
    r, url = receiver
    studies = [ct_study(patient_id=f"P{i}", series=1, slices=4) for i in range(3)]
    async with opened(settings_for(tmp_path, database_url)) as archive:
        for s in studies:
            await ingest(archive, s)
    expected = {str(ds.SOPInstanceUID) for s in studies for ds in s}

    # The third delivery gets no answer until the process has been killed.
    killed = asyncio.Event()

    async def hold(n: int) -> None:
        if n == 3:
            await killed.wait()

    r.hold = hold
    config = config_file(tmp_path, database_url, url, tls.ca)
    log = tmp_path / "lifecycle.log"
    with lifecycle_process(config, log) as start:
        proc = start()
        await until(lambda: len(r.events) >= 3, 60, "three deliveries", log)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
        killed.set()
        in_doubt = r.events[2]["id"]
        await asyncio.sleep(2.5)  # lease_seconds: the killed worker's job is taken over
        start()
        await until(
            lambda: len(r.unique(CREATED)) == len(expected) and len(r.unique(STABLE)) == 3,
            90,
            "every event",
            log,
        )
    assert r.bad_signatures == 0
    created = r.unique(CREATED)
    assert {e["data"]["SopInstanceUid"] for e in created.values()} == expected
    assert {e["subject"] for e in r.unique(STABLE).values()} == {
        str(s[0].StudyInstanceUID) for s in studies
    }
    # The delivery whose answer the crash lost came again, recognisable by its id.
    assert [e["id"] for e in r.events].count(in_doubt) >= 2
    assert r.in_order_per_study()


async def outage(tmp_path, database_url, receiver, tls, down_seconds: float, **lifecycle):
    """Studies arrive while the receiver is down for ``down_seconds``; once it is up again it
    gets every event, each study's in order."""
    r, url = receiver
    r.down = True
    config = config_file(tmp_path, database_url, url, tls.ca, **lifecycle)
    log = tmp_path / "lifecycle.log"
    stored: set[str] = set()
    with lifecycle_process(config, log) as start:
        start()
        began = time.monotonic()
        async with opened(settings_for(tmp_path, database_url)) as archive:
            i = 0
            while True:
                s = ct_study(patient_id=f"P{i}", series=1, slices=3)
                await ingest(archive, s)
                stored |= {str(ds.SOPInstanceUID) for ds in s}
                i += 1
                left = down_seconds - (time.monotonic() - began)
                if left <= 0:
                    break
                await asyncio.sleep(min(left, max(down_seconds / 10, 0.5)))
            assert r.events == []
            r.down = False
            await until(
                lambda: len(r.unique(CREATED)) == len(stored),
                60 + lifecycle.get("retry_max_seconds", 2) * 2,
                "the backlog",
                log,
            )
            status = await notifications.status(Engine(archive))
    assert r.bad_signatures == 0
    assert {e["data"]["SopInstanceUid"] for e in r.unique(CREATED).values()} == stored
    assert r.in_order_per_study()
    assert status["targets"]["ai"]["dead"] == 0


async def test_a_receiver_down_for_a_while_gets_the_backlog_in_order(
    tmp_path, database_url, receiver, tls
):
    await outage(tmp_path, database_url, receiver, tls, down_seconds=5)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_a_receiver_down_for_five_minutes_gets_the_backlog_in_order(
    tmp_path, database_url, receiver, tls
):
    await outage(
        tmp_path,
        database_url,
        receiver,
        tls,
        down_seconds=300,
        retry_base_seconds=5,
        retry_max_seconds=60,
        tick_seconds=10,
    )


async def test_a_receiver_the_ca_file_does_not_vouch_for_is_not_sent_to(
    tmp_path, database_url, receiver
):
    """Without ca_file the receiver's certificate (of a private CA) is not trusted: nothing
    is delivered and the event waits with the certificate error."""
    r, url = receiver
    settings = dataclasses.replace(
        settings_for(tmp_path, database_url),
        notifications=(NotificationSettings(name="ai", url=url, secret=SECRET),),
        lifecycle=LifecycleSettings(in_serve=False),
    )
    async with opened(settings) as archive:
        await ingest(archive, ct_study(series=1, slices=1))
        await run_once(archive)
        async with archive.db.acquire() as conn:
            rows = await conn.fetch("SELECT state, last_error FROM notifications")
    assert r.events == []
    assert rows and all(row["state"] == "pending" for row in rows)
    assert all("certificate" in row["last_error"].lower() for row in rows), rows
