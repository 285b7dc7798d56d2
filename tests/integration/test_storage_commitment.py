"""Storage Commitment reports sent by the ``commitment-report`` job (new association):
a report pending when the archive stopped is sent after the restart, once; an unreachable
requester is retried with back-off; a requester with no address is recorded undeliverable."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from lifecycle.engine import Engine
from lifecycle.handlers import commitment_report
from lifecycle.queue import Job
from lifecycle.worker import run_once
from tests.conftest import free_port
from tests.factory import ct_study
from tests.integration.lifecycle_support import fetch, ingest, jobs, opened
from vna.commitment import service
from vna.commitment.model import PUSH_MODEL, Reference, Request
from vna.config import ReplicaSettings, Settings, SourceSettings

pytestmark = pytest.mark.asyncio
PACS_AE = "PACSAE"


class ReportListener:
    """The requester's own SCP, receiving reports on new associations."""

    def __init__(self, port: int) -> None:
        self.reports: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()
        ae = AE(ae_title=PACS_AE)
        ae.add_supported_context(PUSH_MODEL, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((int(event.request.EventTypeID), event.event_information))
        self.arrived.set()
        return 0x0000, None

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()


@pytest.fixture
def pacs_port() -> int:
    return free_port()


@pytest.fixture
def listener(pacs_port: int) -> Iterator[ReportListener]:
    scp = ReportListener(pacs_port)
    try:
        yield scp
    finally:
        scp.stop()


def with_source(settings: Settings, port: int | None) -> Settings:
    source = SourceSettings(
        name="PACS",
        ae_titles=(PACS_AE,),
        issuer_of_patient_id="PACS",
        host="127.0.0.1" if port is not None else None,
        port=port,
    )
    return dataclasses.replace(settings, sources=(source,))


def commitment_request(study: list[Dataset]) -> Request:
    from pydicom.uid import generate_uid

    refs = tuple(Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in study)
    return Request(generate_uid(), refs)


async def test_a_pending_report_survives_a_restart_and_is_sent_once(
    archive_settings: Settings, listener: ReportListener, pacs_port: int
) -> None:
    settings = with_source(archive_settings, pacs_port)
    study = ct_study(series=1, slices=3, size=32)
    request = commitment_request(study)
    async with opened(settings) as archive:
        await ingest(archive, study, settings.sources[0])
        commitment_id = await service.accept(
            archive, request, source="PACS", calling_ae=PACS_AE, origin="127.0.0.1"
        )
        # The process stops here: N-ACTION answered, no report sent yet.
    [row] = await _commitment(settings, commitment_id)
    assert row["state"] == "pending"

    async with opened(settings) as archive:
        [job] = await jobs(archive, "commitment-report")
        assert job["state"] == "queued"
        # The job's safety delay (the time the handler had to report) has passed.
        await fetch(archive, "UPDATE jobs SET run_after = now() WHERE id = $1", job["id"])
        summary = await run_once(archive)
        assert summary.done["commitment-report"] == 1
        assert listener.arrived.wait(10)
        event_type, info = listener.reports[0]
        assert event_type == 1
        assert str(info.TransactionUID) == request.transaction_uid
        assert {str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence} == {
            str(ds.SOPInstanceUID) for ds in study
        }
        [row] = await fetch(archive, "SELECT * FROM commitments WHERE id = $1", commitment_id)
        assert (row["state"], row["committed"], row["failed"], row["reported_via"]) == (
            "reported",
            3,
            0,
            "new-association",
        )
        # A job run twice (its worker died after sending) does not report twice.
        await commitment_report(
            Engine(archive), Job(job["id"], "commitment-report", job["payload"], 2, 8)
        )
        assert len(listener.reports) == 1
        actions = [
            r["action"]
            for r in await fetch(
                archive, "SELECT action FROM audit WHERE action LIKE 'storage-commitment%'"
            )
        ]
        assert sorted(actions) == [service.REPORTED, service.REQUESTED]
        [reported] = await fetch(archive, "SELECT * FROM audit WHERE action = $1", service.REPORTED)
        # The report's row names the study the archive took responsibility for, and its patient.
        assert reported["study_uids"] == [str(study[0].StudyInstanceUID)]
        assert reported["patient_id"] == str(study[0].PatientID)


async def test_unreachable_requester_is_retried_with_back_off(
    archive_settings: Settings, pacs_port: int
) -> None:
    settings = with_source(archive_settings, pacs_port)  # nothing listens there
    study = ct_study(series=1, slices=1, size=32)
    async with opened(settings) as archive:
        await ingest(archive, study, settings.sources[0])
        commitment_id = await service.accept(
            archive,
            commitment_request(study),
            source="PACS",
            calling_ae=PACS_AE,
            origin="127.0.0.1",
        )
        await service.report_now(archive, commitment_id)
        summary = await run_once(archive)
        assert summary.retried["commitment-report"] == 1
        [job] = await jobs(archive, "commitment-report")
        assert job["state"] == "queued" and job["attempts"] == 1
        assert "not established" in job["last_error"]
        [row] = await fetch(archive, "SELECT * FROM commitments WHERE id = $1", commitment_id)
        assert row["state"] == "pending" and row["attempts"] == 1
        await archive.refresh_gauges()
        text = archive.metrics.render().decode()
        assert 'vna_storage_commitments{state="pending"} 1.0' in text

        # The last attempt: the job is dead-lettered and the request recorded undeliverable.
        await fetch(
            archive,
            "UPDATE jobs SET run_after = now(), max_attempts = 2 WHERE id = $1",
            job["id"],
        )
        summary = await run_once(archive)
        assert summary.dead["commitment-report"] == 1
        [row] = await fetch(archive, "SELECT * FROM commitments WHERE id = $1", commitment_id)
        assert row["state"] == "undeliverable"
        await archive.refresh_gauges()
        text = archive.metrics.render().decode()
        assert 'vna_storage_commitments{state="pending"} 0.0' in text
        assert 'vna_storage_commitments{state="failed"} 1.0' in text


async def test_requester_without_address_is_recorded_undeliverable(
    archive_settings: Settings,
) -> None:
    settings = with_source(archive_settings, None)
    study = ct_study(series=1, slices=1, size=32)
    async with opened(settings) as archive:
        await ingest(archive, study, settings.sources[0])
        commitment_id = await service.accept(
            archive,
            commitment_request(study),
            source="PACS",
            calling_ae=PACS_AE,
            origin="127.0.0.1",
        )
        await service.report_now(archive, commitment_id)
        await run_once(archive)
        [row] = await fetch(archive, "SELECT * FROM commitments WHERE id = $1", commitment_id)
        assert row["state"] == "undeliverable"
        assert "no host/port" in row["last_error"]
        await archive.refresh_gauges()
        text = archive.metrics.render().decode()
        assert 'vna_storage_commitments{state="failed"} 1.0' in text


async def _commitment(settings: Settings, commitment_id: int) -> list[dict[str, Any]]:
    async with opened(settings) as archive:
        return await fetch(archive, "SELECT * FROM commitments WHERE id = $1", commitment_id)


async def test_commitment_waits_for_replication_then_commits(
    archive_settings: Settings, tmp_path: Path
) -> None:
    """commit_requires_replicas = 1: before replication every instance is short of a replica
    (0110); a check given time waits while the lifecycle workers replicate, then commits."""
    settings = dataclasses.replace(
        archive_settings,
        replicas=(ReplicaSettings("dr", (tmp_path / "dr-objects").as_uri()),),
        dimse=dataclasses.replace(archive_settings.dimse, commit_requires_replicas=1),
    )
    study = ct_study(series=1, slices=2, size=32)
    refs = [Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in study]
    async with opened(settings) as archive:
        await ingest(archive, study)
        now = await service.evaluate(archive, refs, required_replicas=1, wait_seconds=0)
        assert now.outcome.committed == []
        assert {f.reason for f in now.outcome.failed} == {0x0110}
        assert now.short_of_replicas == refs

        started = time.monotonic()
        waiting = asyncio.create_task(
            service.evaluate(archive, refs, required_replicas=1, wait_seconds=60)
        )
        await run_once(archive)  # replication to "dr", read back and recorded
        later = await waiting
        assert later.outcome.committed == refs
        assert later.outcome.failed == []
        assert time.monotonic() - started < 60

        # Nothing to wait for in a class/instance conflict: answered at once.
        started = time.monotonic()
        conflict = await service.evaluate(
            archive,
            [Reference("1.2.840.10008.5.1.4.1.1.4", refs[0].sop_instance_uid)],
            required_replicas=1,
            wait_seconds=30,
        )
        assert [f.reason for f in conflict.outcome.failed] == [0x0119]
        assert time.monotonic() - started < 10
