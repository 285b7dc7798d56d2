"""Notifications end to end: a receiver on loopback verifies the HMAC of every CloudEvents
envelope; events arrive in feed order per study, filtered; a study-stable event follows once
no instance has arrived for stable_seconds; a receiver that was failing gets the backlog in
order once it answers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from lifecycle import notifications
from lifecycle.engine import Engine
from lifecycle.worker import run_once
from tests.conftest import free_port
from tests.factory import ct_study, part10
from tests.integration.test_federation_admin import ADMIN_TOKEN, SOURCES, _sha, stow
from vna.config import AdminSettings, LifecycleSettings, NotificationSettings, Settings

pytestmark = pytest.mark.asyncio

SECRET = "s3cret"
PORT = free_port()


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings,
        sources=SOURCES,
        admin=AdminSettings(_sha(ADMIN_TOKEN)),
        notifications=(
            NotificationSettings(
                name="ai",
                url=f"http://127.0.0.1:{PORT}/events",
                secret=SECRET,
                modalities=("CT",),
                stable_seconds=1,
            ),
        ),
        lifecycle=LifecycleSettings(retry_base_seconds=1, retry_max_seconds=1, in_serve=False),
    )


class Receiver:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = False
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-VNA-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.failing:
            return web.Response(status=503)
        assert request.content_type == "application/cloudevents+json"
        self.events.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/events", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    try:
        yield r
    finally:
        await runner.cleanup()


async def test_signed_events_in_order_then_study_stable(archive, dicomweb, receiver):
    ct = ct_study(series=1, slices=3)
    mr = ct_study(series=1, slices=1, modality="MR")
    assert await stow(dicomweb, [part10(ds) for ds in ct + mr], "H1") == 202
    await run_once(archive)
    assert receiver.bad_signatures == 0
    created = [e for e in receiver.events if e["type"] == "org.vna.instance.created"]
    assert {e["data"]["SopInstanceUid"] for e in created} == {str(ds.SOPInstanceUID) for ds in ct}
    sequences = [e["data"]["Sequence"] for e in created]
    assert sequences == sorted(sequences)
    first = created[0]
    assert first["specversion"] == "1.0" and first["subject"] == ct[0].StudyInstanceUID
    assert len({e["id"] for e in created}) == 3

    await asyncio.sleep(1.2)  # stable_seconds
    await run_once(archive)
    stable = [e for e in receiver.events if e["type"] == "org.vna.study.stable"]
    assert [e["subject"] for e in stable] == [ct[0].StudyInstanceUID]
    await run_once(archive)  # once, not again
    assert len([e for e in receiver.events if e["type"] == "org.vna.study.stable"]) == 1


async def test_a_failing_receiver_gets_the_backlog_in_order(archive, dicomweb, receiver):
    receiver.failing = True
    ct = ct_study(series=2, slices=2)
    assert await stow(dicomweb, [part10(ds) for ds in ct], "H1") == 202
    await run_once(archive)
    assert receiver.events == []
    data = await notifications.status(Engine(archive))
    assert data["targets"]["ai"]["pending"] == 4 and data["targets"]["ai"]["delivered"] == 0

    receiver.failing = False
    await asyncio.sleep(1.2)  # the back-off
    await run_once(archive)
    created = [e for e in receiver.events if e["type"] == "org.vna.instance.created"]
    assert len(created) == 4
    sequences = [e["data"]["Sequence"] for e in created]
    assert sequences == sorted(sequences)
    data = await notifications.status(Engine(archive))
    assert data["targets"]["ai"]["delivered"] >= 4 and data["targets"]["ai"]["pending"] == 0


async def test_status_from_the_command_line(
    archive, dicomweb, receiver, archive_settings, tmp_path, capsys
):
    """`vna notifications status` shows what was delivered, from the catalogue."""
    from tests.integration.test_federation_admin import _config_file
    from vna.cli import main

    assert await stow(dicomweb, [part10(ds) for ds in ct_study(series=1, slices=2)], "H1") == 202
    await run_once(archive)
    config = _config_file(archive_settings, tmp_path)
    code = await asyncio.to_thread(main, ["--config", str(config), "notifications", "status"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ai" in out and " 2 " in out


async def test_an_event_undelivered_past_dead_after_is_given_up(archive_settings, receiver):
    from tests.integration.lifecycle_support import ingest, opened

    (sub,) = archive_settings.notifications
    settings = dataclasses.replace(
        archive_settings,
        notifications=(dataclasses.replace(sub, dead_after_seconds=1, events=("create",)),),
    )
    receiver.failing = True
    async with opened(settings) as archive:
        await ingest(archive, ct_study(series=1, slices=1), source=SOURCES[0])
        await run_once(archive)
        await asyncio.sleep(1.2)
        await run_once(archive)
        data = await notifications.status(Engine(archive))
        await archive.refresh_gauges()
        metrics = archive.metrics.render().decode()
        from lifecycle import status as lifecycle_status

        summary = lifecycle_status.render_text(
            await lifecycle_status.collect(archive.db, settings, dt.date.today())
        )
    assert "notifications ai: 0 pending, 0 delivered, 1 dead" in summary
    assert data["targets"]["ai"]["dead"] == 1 and data["targets"]["ai"]["pending"] == 0
    # Label order differs between single and multiprocess exposition: parse it.
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.labels["target"], s.labels["state"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "vna_notification_events"
        for s in family.samples
    }
    assert samples[("ai", "dead")] == 1 and samples[("ai", "pending")] == 0
    assert data["dead"][0]["error"] == "too old to deliver"
    assert receiver.events == []


async def test_a_subscription_to_study_stable_alone(archive_settings, receiver):
    """An AI service asking for study-stable only gets exactly that, once per settling: a
    study that receives more instances afterwards is stable again, under a new id."""
    from tests.integration.lifecycle_support import ingest, opened

    (sub,) = archive_settings.notifications
    settings = dataclasses.replace(
        archive_settings,
        notifications=(dataclasses.replace(sub, events=("study-stable",)),),
    )
    ct = ct_study(series=1, slices=3)
    mr = ct_study(series=1, slices=1, modality="MR")  # filtered out: never stable for "ai"
    async with opened(settings) as archive:
        await ingest(archive, ct[:2] + mr, source=SOURCES[0])
        await run_once(archive)
        assert receiver.events == []  # not yet quiet for stable_seconds
        await asyncio.sleep(1.2)
        await run_once(archive)
        await run_once(archive)
        assert [(e["type"], e["subject"]) for e in receiver.events] == [
            ("org.vna.study.stable", ct[0].StudyInstanceUID)
        ]
        await ingest(archive, ct[2:], source=SOURCES[0])
        await run_once(archive)
        await asyncio.sleep(1.2)
        await run_once(archive)
    assert [e["type"] for e in receiver.events] == ["org.vna.study.stable"] * 2
    first, again = receiver.events
    assert first["id"] != again["id"]
    assert again["data"]["Sequence"] > first["data"]["Sequence"]
    assert receiver.bad_signatures == 0


async def test_delivered_events_are_forgotten_with_the_feed(archive, dicomweb, receiver):
    """Past the change feed's keep_days, delivered events and settled studies are dropped by
    the scheduler; an event still pending stays."""
    from lifecycle import scheduler

    assert await stow(dicomweb, [part10(ds) for ds in ct_study(series=1, slices=2)], "H1") == 202
    await run_once(archive)
    await asyncio.sleep(1.2)  # stable_seconds
    await run_once(archive)
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 3
        await conn.execute(
            "UPDATE notifications SET updated_at = now() - interval '91 days',"
            " created_at = now() - interval '91 days'"
        )
        await conn.execute(
            "UPDATE notification_studies SET last_change = now() - interval '91 days'"
        )
    receiver.failing = True
    assert await stow(dicomweb, [part10(ds) for ds in ct_study(series=1, slices=1)], "H1") == 202
    assert (await scheduler.tick(Engine(archive))).ran
    async with archive.db.acquire() as conn:
        left = await conn.fetch("SELECT state, event_type FROM notifications")
        studies = await conn.fetchval("SELECT count(*) FROM notification_studies")
    assert [(r["state"], r["event_type"]) for r in left] == [("pending", "create")]
    assert studies == 1  # the new study, not yet stable
