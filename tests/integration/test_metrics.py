"""What ``GET /metrics`` shows an operator (issue 23, item 8): the lifecycle queue depth by job
type and state, DIMSE associations and operations by type and status, and retrieve bytes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from lifecycle import queue
from tests.factory import ct_study, part10, stow_body
from vna.archive import Archive
from vna.config import DimseSettings
from vna.gateway.dimse import DimseListener


async def scrape(dicomweb: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    base = dicomweb.removesuffix("/dicom-web")
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def jobs(figures: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        f"{dict(labels)['kind']} {dict(labels)['state']}": value
        for (name, labels), value in figures.items()
        if name == "vna_lifecycle_jobs" and value
    }


async def test_lifecycle_queue_depth_by_type_and_state(archive: Archive, dicomweb: str) -> None:
    async with archive.db.acquire() as conn:
        await queue.enqueue(conn, "compress", {"n": 1})
        (running,) = await queue.claim(conn, "w1")
        await queue.enqueue(conn, "replicate", {"n": 2})
        (dying,) = await queue.claim(conn, "w1")
        await queue.bury(conn, dying.id, "w1", "replica unreachable")
        await queue.enqueue(conn, "compress", {"n": 3})
        await queue.enqueue(conn, "tier", {"n": 4}, delay_seconds=3600)  # a retry's back-off
    assert jobs(await scrape(dicomweb)) == {
        "compress ready": 1,
        "compress running": 1,
        "replicate dead": 1,
        "tier waiting": 1,
    }
    async with archive.db.acquire() as conn:
        await queue.complete(conn, running.id, "w1")
        await conn.execute("DELETE FROM jobs WHERE kind = 'tier'")
    figures = await scrape(dicomweb)
    assert jobs(figures) == {"compress ready": 1, "replicate dead": 1}
    # Drained states read 0, not their last value.
    key = ("vna_lifecycle_jobs", (("kind", "tier"), ("state", "waiting")))
    assert figures[key] == 0


@pytest.fixture
async def dimse_port(archive: Archive) -> AsyncIterator[int]:
    archive.settings = dataclasses.replace(
        archive.settings, dimse=DimseSettings(port=0, ae_title="VNA")
    )
    listener = DimseListener(archive)
    await listener.start()
    try:
        yield listener.port
    finally:
        await listener.stop(grace_seconds=5)


def _dimse_session(port: int) -> None:
    """An echo, a store and a query over one association; one association to another AE."""
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="VNA")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    (ds,) = ct_study(series=1, slices=1)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert assoc.send_c_store(ds).Status == 0
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    statuses = [
        int(s.Status)
        for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    ]
    assert statuses == [0xFF00, 0x0000]  # one match (pending), then success
    assoc.release()
    assert ae.associate("127.0.0.1", port, ae_title="ELSEWHERE").is_rejected


async def test_dimse_associations_and_operations(
    archive: Archive, dicomweb: str, dimse_port: int
) -> None:
    await asyncio.to_thread(_dimse_session, dimse_port)
    figures = await scrape(dicomweb)

    def value(name: str, **labels: str) -> float:
        return figures.get((name, tuple(sorted(labels.items()))), 0)

    assert value("vna_dimse_associations_total", result="accepted") == 1
    assert value("vna_dimse_associations_total", result="rejected-called-ae") == 1
    assert value("vna_dimse_associations_total", result="rejected-other") == 0  # counted once
    assert value("vna_dimse_operations_total", operation="C-ECHO", status="0000") == 1
    assert value("vna_dimse_operations_total", operation="C-STORE", status="0000") == 1
    # The final answer only: the pending match is not an operation.
    assert value("vna_dimse_operations_total", operation="C-FIND", status="0000") == 1
    assert value("vna_dimse_operations_total", operation="C-FIND", status="FF00") == 0


async def test_retrieve_bytes(archive: Archive, dicomweb: str) -> None:
    (ds,) = ct_study(series=1, slices=1)
    data = part10(ds)
    body, content_type = stow_body([data])
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{dicomweb}/studies", data=body, headers={"Content-Type": content_type}
        ) as resp:
            assert resp.status == 200
        before = (await scrape(dicomweb)).get(("vna_retrieve_bytes_total", ()), 0)
        async with http.get(
            f"{dicomweb}/studies/{ds.StudyInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        ) as resp:
            assert resp.status == 200
            await resp.read()
    after = (await scrape(dicomweb))[("vna_retrieve_bytes_total", ())]
    assert after - before == len(data)
