"""Forwarding rules end to end: instances stored over STOW-RS are sent by the lifecycle workers
to a pynetdicom storage SCP standing in for a second PACS.  Exactly the matching instances
arrive, byte for byte as archived; refused ones are shown failed with the destination's
status; a destination that was down gets the backlog once it is up."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import io
import json
import os
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pydicom
import pytest
from aiohttp import web
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES

from lifecycle import forwarding, scheduler
from lifecycle.engine import Engine
from lifecycle.worker import run_once
from tests.conftest import free_port, with_database
from tests.factory import ct_study, part10
from tests.integration.lifecycle_support import fetch, ingest, opened
from tests.integration.test_federation_admin import ADMIN_TOKEN, SOURCES, _sha, stow
from tests.orthanc import MISSING, ORTHANC, Orthanc
from vna.archive import Archive
from vna.cli.forward import render
from vna.config import (
    AdminSettings,
    DestinationSettings,
    ForwardRuleSettings,
    LifecycleSettings,
    Settings,
    SourceSettings,
)
from vna.gateway.web import create_app

pytestmark = pytest.mark.asyncio

PORT = free_port()
#: A Store Instances Response's ReferencedSOPSequence and FailedSOPSequence.
_STOW_SEQS = ("00081199", "00081198")
#: Instances with this Instance Number are refused by the destination (out of resources).
REFUSED_NUMBER = 2


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings,
        sources=SOURCES,
        admin=AdminSettings(_sha(ADMIN_TOKEN)),
        destinations=(DestinationSettings("pacs2", "PACS2", "127.0.0.1", PORT),),
        forward=(
            ForwardRuleSettings(
                name="h1-ct", destination="pacs2", sources=("H1",), modalities=("CT",)
            ),
        ),
        lifecycle=LifecycleSettings(retry_base_seconds=1, retry_max_seconds=1, in_serve=False),
    )


class StorageScp:
    """A storage SCP recording the data set bytes it receives, as sent on the wire."""

    def __init__(self, refuse_number: int | None = None) -> None:
        self.received: dict[str, bytes] = {}
        #: When each instance arrived (time.monotonic) and on which association.
        self.arrived: dict[str, float] = {}
        self.associations: set[int] = set()
        self.refuse_number = refuse_number
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS2")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", PORT),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )

    def _store(self, event: Any) -> int:
        ds = event.dataset
        with self._lock:
            self.arrived[str(ds.SOPInstanceUID)] = time.monotonic()
            self.associations.add(id(event.assoc))
        if self.refuse_number is not None and int(ds.InstanceNumber) == self.refuse_number:
            return 0xA700
        try:
            # The archive's DIMSE listener, started by earlier tests in this process, turns on
            # pynetdicom's chunked receive (a global): the data set is then in a Part 10 file.
            received = data_set_bytes(event.dataset_path.read_bytes())
        except AttributeError:
            received = event.encoded_dataset(include_meta=False)
        with self._lock:
            self.received[str(ds.SOPInstanceUID)] = received
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def data_set_bytes(part10_bytes: bytes) -> bytes:
    """The data set of a Part 10 file: after the preamble, 'DICM' and the File Meta group
    (whose first element, 12 bytes, gives the group's length)."""
    meta = pydicom.dcmread(io.BytesIO(part10_bytes), stop_before_pixels=True).file_meta
    return part10_bytes[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


async def archived(archive, sop_uid: str) -> bytes:
    (instance,) = await archive.retriever.find_by_uids([sop_uid])
    return await archive.retriever.read(instance)


async def test_exactly_the_matching_instances_arrive_bit_exact_refusals_are_failed(
    archive, dicomweb, archive_settings, tmp_path, capsys
):
    ct = ct_study(patient_id="P1", series=1, slices=3)
    mr = ct_study(patient_id="P1", series=1, slices=1, modality="MR")
    other = ct_study(patient_id="P9", series=1, slices=1)
    scp = StorageScp(refuse_number=REFUSED_NUMBER)
    try:
        assert await stow(dicomweb, [part10(ds) for ds in ct + mr], "H1") == 202
        assert await stow(dicomweb, [part10(ds) for ds in other], "H2") == 202
        await run_once(archive)
    finally:
        scp.stop()

    refused = [ds for ds in ct if int(ds.InstanceNumber) == REFUSED_NUMBER]
    sent = [ds for ds in ct if int(ds.InstanceNumber) != REFUSED_NUMBER]
    assert refused and sent
    # Exactly the H1 CT instances the destination accepted, byte for byte as archived.
    assert set(scp.received) == {str(ds.SOPInstanceUID) for ds in sent}
    for ds in sent:
        stored = await archived(archive, str(ds.SOPInstanceUID))
        assert scp.received[str(ds.SOPInstanceUID)] == data_set_bytes(stored)

    data = await forwarding.status(Engine(archive))
    assert data["destinations"]["pacs2"]["sent"] == len(sent)
    assert data["destinations"]["pacs2"]["failed"] == len(refused)
    assert data["destinations"]["pacs2"]["queued"] == 0
    assert [(f["sop_uid"], f["status"]) for f in data["failures"]] == [
        (str(ds.SOPInstanceUID), "0xA700") for ds in refused
    ]
    assert "0xA700" in render(data)
    # `vna forward status` says so, and exits 1 while a destination has refused instances.
    from tests.integration.test_federation_admin import _config_file
    from vna.cli import main

    config = _config_file(archive_settings, tmp_path)
    code = await asyncio.to_thread(main, ["--config", str(config), "forward", "status"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"pacs2: {refused[0].SOPInstanceUID} status 0xA700" in out
    # Each one audited: a disclosure for those sent, a failed attempt for those refused.
    rows = await fetch(archive, "SELECT sop_uid, outcome FROM audit WHERE action = 'forward'")
    assert sorted((r["sop_uid"], r["outcome"]) for r in rows) == sorted(
        [(str(ds.SOPInstanceUID), "success") for ds in sent]
        + [(str(ds.SOPInstanceUID), "failure") for ds in refused]
    )
    # A second pass forwards nothing again.
    await run_once(archive)
    again = await forwarding.status(Engine(archive))
    assert again["destinations"] == data["destinations"]
    # /metrics shows them per destination and state.
    await archive.refresh_gauges()
    text = archive.metrics.render().decode()
    assert 'vna_forward_instances{destination="pacs2",state="failed"} 1.0' in text
    # Past the change feed's keep_days, what was sent is forgotten (the audit keeps it); the
    # refusals stay for the operator.
    async with archive.db.acquire() as conn:
        await conn.execute("UPDATE forwards SET updated_at = now() - interval '91 days'")
    assert (await scheduler.tick(Engine(archive))).ran
    rows = await fetch(archive, "SELECT state FROM forwards")
    assert [r["state"] for r in rows] == ["failed"] * len(refused)


async def test_a_destination_down_then_up_catches_up(archive, dicomweb):
    ct = ct_study(patient_id="P1", series=1, slices=2)
    assert await stow(dicomweb, [part10(ds) for ds in ct], "H1") == 202
    await run_once(archive)  # nobody listening: kept, not failed
    data = await forwarding.status(Engine(archive))
    assert data["destinations"]["pacs2"] == {
        **data["destinations"]["pacs2"],
        "queued": 2,
        "sent": 0,
        "failed": 0,
    }
    jobs = await fetch(archive, "SELECT state, last_error FROM jobs WHERE kind = 'forward'")
    assert [j["state"] for j in jobs] == ["queued", "queued"]

    scp = StorageScp()
    try:
        await asyncio.sleep(1.2)  # the back-off (retry_base_seconds = 1)
        await run_once(archive)
    finally:
        scp.stop()
    assert set(scp.received) == {str(ds.SOPInstanceUID) for ds in ct}
    data = await forwarding.status(Engine(archive))
    assert data["destinations"]["pacs2"]["sent"] == 2
    assert data["destinations"]["pacs2"]["queued"] == 0


@contextlib.contextmanager
def orthanc(tmp_path: Path, dicom_port: int) -> Iterator[str]:
    """Orthanc as a second PACS on ``dicom_port``; yields its REST URL."""
    pacs = Orthanc(
        tmp_path,
        name="PACS2",
        ae_title="PACS2",
        dicom_port=dicom_port,
        DicomCheckCalledAet=False,
        DicomAlwaysAllowStore=True,
    )
    try:
        yield pacs.url
    finally:
        pacs.stop()


def orthanc_files(url: str) -> dict[str, bytes]:
    """Every instance Orthanc holds, as the Part 10 file it stored, by SOP Instance UID."""
    out = {}
    with urllib.request.urlopen(f"{url}/instances") as resp:
        ids = json.load(resp)
    for i in ids:
        with urllib.request.urlopen(f"{url}/instances/{i}/file") as resp:
            data = resp.read()
        out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return out


@pytest.mark.skipif(not ORTHANC.exists(), reason=MISSING)
async def test_orthanc_as_the_destination_receives_the_matching_instances_bit_exact(
    archive, dicomweb, tmp_path
):
    ct = ct_study(patient_id="P1", series=1, slices=2)
    mr = ct_study(patient_id="P1", series=1, slices=1, modality="MR")
    other = ct_study(patient_id="P9", series=1, slices=1)  # another hospital's CT
    assert await stow(dicomweb, [part10(ds) for ds in ct + mr], "H1") == 202
    assert await stow(dicomweb, [part10(ds) for ds in other], "H2") == 202
    with orthanc(tmp_path, PORT) as url:
        await run_once(archive)
        received = await asyncio.to_thread(orthanc_files, url)
    assert set(received) == {str(ds.SOPInstanceUID) for ds in ct}
    for uid, data in received.items():
        assert data_set_bytes(data) == data_set_bytes(await archived(archive, uid))
    data = await forwarding.status(Engine(archive))
    assert data["destinations"]["pacs2"]["sent"] == 2


@contextlib.asynccontextmanager
async def serving(archive: Archive, posts: list[int] | None = None) -> AsyncIterator[str]:
    """The DICOMweb gateway of ``archive`` on a free loopback port; yields its base URL.
    ``posts``: given, gets the number of parts of each STOW-RS request the gateway answers."""
    app = create_app(archive)
    if posts is not None:

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            response = await handler(request)
            if request.method == "POST" and request.path.endswith("/studies"):
                answer = json.loads(response.body)  # type: ignore[attr-defined]
                posts.append(sum(len(answer.get(t, {}).get("Value", [])) for t in _STOW_SEQS))
            return response

        app.middlewares.append(count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def second_archive(
    pg_admin_url: str, pg_template: str, tmp_path: Path, clash_of: Any, posts: list[int] | None
) -> AsyncIterator[tuple[Archive, str]]:
    """A second archive on its own database, serving STOW-RS (token ``t-second``); yields it
    and its ``/studies`` URL.  It already holds other content under ``clash_of``'s SOP
    Instance UID, so it refuses that instance when it is forwarded."""
    name = f"vna_test_second_{os.getpid()}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    settings = Settings(
        data_dir=tmp_path / "second",
        database_url=with_database(pg_admin_url, name),
        sources=(SourceSettings(name="VNA1", token_sha256=_sha("t-second")),),
    )
    try:
        async with opened(settings) as second, serving(second, posts) as url:
            clash = copy.deepcopy(clash_of)
            clash.SeriesDescription = "SOMETHING ELSE"
            clash.IssuerOfPatientID = "HOSP1"  # the patient the forwarded ones name
            await ingest(second, [clash], source=settings.sources[0])
            yield second, f"{url}/studies"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def stow_rule(archive_settings: Settings, target: str, delay_seconds: int = 0) -> Settings:
    """``archive_settings`` forwarding H1's CT to the STOW-RS endpoint ``target``."""
    rule = ForwardRuleSettings(
        name="h1-ct-stow",
        stow_url=target,
        stow_token="t-second",
        sources=("H1",),
        modalities=("CT",),
        delay_seconds=delay_seconds,
    )
    return dataclasses.replace(archive_settings, destinations=(), forward=(rule,))


async def test_a_second_archive_as_a_stow_rs_destination(
    archive_settings, pg_admin_url, pg_template, tmp_path
):
    """Exactly the matching instances reach the second archive over STOW-RS, byte for byte;
    one it refuses (it holds other content under that SOP Instance UID) is failed with the
    FailureReason it answered."""
    ct = ct_study(patient_id="P1", series=1, slices=3)
    mr = ct_study(patient_id="P1", series=1, slices=1, modality="MR")
    async with second_archive(pg_admin_url, pg_template, tmp_path, ct[1], None) as (
        second,
        target,
    ):
        settings = stow_rule(archive_settings, target)
        async with opened(settings) as first, serving(first) as first_url:
            assert await stow(first_url, [part10(ds) for ds in ct + mr], "H1") == 202
            other = ct_study(patient_id="P9", series=1, slices=1)  # another hospital's CT
            assert await stow(first_url, [part10(ds) for ds in other], "H2") == 202
            await run_once(first)
            data = await forwarding.status(Engine(first))
            assert data["destinations"][target]["sent"] == 2
            assert data["destinations"][target]["failed"] == 1
            (failure,) = data["failures"]
            assert failure["sop_uid"] == str(ct[1].SOPInstanceUID)
            assert failure["status"] is not None and "409" in failure["error"]
            for ds in (ct[0], ct[2]):
                uid = str(ds.SOPInstanceUID)
                assert await archived(second, uid) == await archived(first, uid)
            for ds in (mr[0], other[0]):
                assert await second.retriever.find_by_uids([str(ds.SOPInstanceUID)]) == []


async def test_a_delayed_stow_rs_rule_sends_a_quiet_study_in_one_request(
    archive_settings, pg_admin_url, pg_template, tmp_path
):
    """With delay_seconds and a STOW-RS destination, a quiet study goes in one request, as a
    PACS sends a study; the second archive's answer gives each instance its outcome: the one
    it refuses is failed with its FailureReason, the others stored byte for byte."""
    ct = ct_study(patient_id="P1", series=2, slices=2)
    posts: list[int] = []
    async with second_archive(pg_admin_url, pg_template, tmp_path, ct[1], posts) as (
        second,
        target,
    ):
        settings = stow_rule(archive_settings, target, delay_seconds=1)
        async with opened(settings) as first, serving(first) as first_url:
            for ds in ct:  # one request each: the study arrives over a while
                assert await stow(first_url, [part10(ds)], "H1") == 202
            await run_once(first)
            assert posts == []  # held until the study is quiet
            deadline = time.monotonic() + 30
            data = await forwarding.status(Engine(first))
            done = data["destinations"][target]
            while done["sent"] + done["failed"] < len(ct) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await run_once(first)
                data = await forwarding.status(Engine(first))
                done = data["destinations"][target]
            assert posts == [len(ct)]
            assert done["sent"] == len(ct) - 1
            assert done["failed"] == 1
            (failure,) = data["failures"]
            assert failure["sop_uid"] == str(ct[1].SOPInstanceUID)
            assert failure["status"] is not None and failure["error"] == "HTTP 202"
            for ds in ct[:1] + ct[2:]:
                uid = str(ds.SOPInstanceUID)
                assert await archived(second, uid) == await archived(first, uid)


async def test_a_delayed_rule_sends_a_quiet_study_on_one_association(archive_settings):
    """With delay_seconds, a study's instances are held while more keep arriving and go
    together once none has come for the delay: one association, in one go; one the
    destination refuses is failed with its status like any other."""
    delay = 3
    (rule,) = archive_settings.forward
    settings = dataclasses.replace(
        archive_settings, forward=(dataclasses.replace(rule, delay_seconds=delay),)
    )
    ct = ct_study(patient_id="P1", series=2, slices=2)
    scp = StorageScp(refuse_number=REFUSED_NUMBER)
    try:
        async with opened(settings) as archive, serving(archive) as url:
            assert await stow(url, [part10(ds) for ds in ct[:2]], "H1") == 202
            await run_once(archive)
            await asyncio.sleep(1)
            assert await stow(url, [part10(ds) for ds in ct[2:]], "H1") == 202
            last_stored = time.monotonic()
            await run_once(archive)
            assert scp.arrived == {}  # held: the study is not quiet yet
            deadline = time.monotonic() + 30
            while len(scp.arrived) < len(ct) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await run_once(archive)
            data = await forwarding.status(Engine(archive))
    finally:
        scp.stop()
    assert set(scp.arrived) == {str(ds.SOPInstanceUID) for ds in ct}
    # Nothing left before the study had been quiet for the delay (a little slack for clocks).
    assert min(scp.arrived.values()) >= last_stored + delay - 0.5
    assert len(scp.associations) == 1
    refused = [str(ds.SOPInstanceUID) for ds in ct if int(ds.InstanceNumber) == REFUSED_NUMBER]
    assert data["destinations"]["pacs2"]["sent"] == len(ct) - len(refused)
    assert data["destinations"]["pacs2"]["failed"] == len(refused)
    assert sorted((f["sop_uid"], f["status"]) for f in data["failures"]) == sorted(
        (uid, "0xA700") for uid in refused
    )


async def test_a_destination_declared_with_a_syntax_receives_it_transcoded(
    archive_settings: Settings,
) -> None:
    """``[[destinations]] transfer_syntax``: forwarding sends that syntax (here JPEG-LS, made
    from native instances in the worker's thread), the pixels unchanged."""
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    settings = dataclasses.replace(
        archive_settings,
        sources=(),
        destinations=(DestinationSettings("pacs2", "PACS2", "127.0.0.1", PORT, jpeg_ls),),
        forward=(ForwardRuleSettings(name="all", destination="pacs2"),),
    )
    study = ct_study(patient_id="P1", series=1, slices=2, size=32)
    received: dict[str, tuple[str, Any]] = {}

    def store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (
            str(event.context.transfer_syntax),
            event.dataset,
        )
        return 0x0000

    ae = AE(ae_title="PACS2")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", PORT), block=False, evt_handlers=[(evt.EVT_C_STORE, store)]
    )
    try:
        async with opened(settings) as archive:
            await ingest(archive, study)
            await run_once(archive)
    finally:
        server.shutdown()
    assert {uid: ts for uid, (ts, _) in received.items()} == {
        str(ds.SOPInstanceUID): jpeg_ls for ds in study
    }
    for ds in study:
        syntax, got = received[str(ds.SOPInstanceUID)]
        got.file_meta = pydicom.dataset.FileMetaDataset()
        got.file_meta.TransferSyntaxUID = syntax
        assert (got.pixel_array == ds.pixel_array).all()


async def test_a_stow_rs_endpoint_that_finds_a_batch_too_large_gets_it_in_halves():
    """A 413 (Payload Too Large) to a study's batch: sent again in halves until the endpoint
    takes them, every instance delivered once."""
    received: list[int] = []
    stored: list[bytes] = []

    async def endpoint(request: web.Request) -> web.Response:
        reader = await request.multipart()
        parts = []
        while (part := await reader.next()) is not None:
            parts.append(await part.read())  # type: ignore[union-attr]
        received.append(len(parts))
        if len(parts) > 2:
            return web.Response(status=413, reason="Payload Too Large")
        stored.extend(parts)
        return web.Response(body=b"{}", content_type="application/dicom+json")

    app = web.Application()
    app.router.add_post("/studies", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    instances = [(f"1.2.3.{n}", f"instance {n}".encode()) for n in range(5)]
    try:
        outcomes = await forwarding._post_stow(f"http://127.0.0.1:{port}/studies", "", instances)
    finally:
        await runner.cleanup()
    assert [o.sop_uid for o in outcomes] == [uid for uid, _ in instances]
    assert all(o.status == 0 for o in outcomes)
    assert received == [5, 2, 3, 1, 2]
    assert stored == [data for _, data in instances]
