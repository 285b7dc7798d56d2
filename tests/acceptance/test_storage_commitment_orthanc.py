"""Orthanc (the Debian package) as a hospital PACS asking the archive for Storage Commitment
through its own REST API, as a PACS administrator would set it up: the archive declares
Orthanc as a source (AE title, host, port) and Orthanc declares the archive as a modality.
Orthanc sends a study over DIMSE (C-STORE), asks for commitment and reads the report it
received (on a new association to its DICOM port) from ``GET /storage-commitment/{uid}``."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.acceptance.conftest import ArchiveProcess
from tests.factory import ct_study, part10
from tests.orthanc import MISSING, ORTHANC, Orthanc

ORTHANC_AE = "ORTHANC"

pytestmark = pytest.mark.skipif(not ORTHANC.exists(), reason=MISSING)


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-orthanc-"))
    # Modalities are added over REST below (the archive's port is chosen per test).
    pacs = Orthanc(root, ae_title=ORTHANC_AE, DicomModalitiesInDatabase=False)
    try:
        yield pacs
    finally:
        pacs.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_archive(root: Path, orthanc: Orthanc, extra: str = "") -> ArchiveProcess:
    config = root / "vna.toml"
    archive = ArchiveProcess(root / "data", config=config)
    config.write_text(
        # Replication retried every few seconds (8 attempts take ~20 s): the replica's
        # recovery below is noticed quickly, before the jobs are given up.
        "[lifecycle]\npoll_seconds = 1\nretry_base_seconds = 1\nretry_max_seconds = 3\n"
        + extra
        + "[[sources]]\n"
        'name = "HOSP1"\n'
        f'ae_titles = ["{ORTHANC_AE}"]\n'
        'issuer_of_patient_id = "HOSP1"\n'
        'host = "127.0.0.1"\n'
        f"port = {orthanc.dicom_port}\n"
    )
    archive.start()
    # The PACS administrator's side: the archive as a modality of Orthanc.
    orthanc.call(
        "PUT",
        "/modalities/vna",
        {"AET": archive.ae_title, "Host": "127.0.0.1", "Port": archive.dimse_port},
    )
    return archive


@pytest.fixture
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-commit-orthanc-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def send_study(orthanc: Orthanc) -> list[dict[str, str]]:
    """Upload a study into Orthanc and have Orthanc C-STORE it to the archive; the instances
    as Orthanc's storage-commitment request names them."""
    study = ct_study(series=1, slices=4, size=32)
    for ds in study:
        r = requests.post(f"{orthanc.url}/instances", data=part10(ds), timeout=30)
        assert r.status_code == 200, r.text
    resource = r.json()["ParentStudy"]
    job = orthanc.call("POST", "/modalities/vna/store", {"Resources": [resource]})
    assert job is not None
    return [{"SOPClassUID": ds.SOPClassUID, "SOPInstanceUID": ds.SOPInstanceUID} for ds in study]


def ask_commitment(orthanc: Orthanc, instances: list[dict[str, str]]) -> dict[str, Any]:
    """Orthanc's storage-commitment request, then its report once it has one."""
    answer = orthanc.call(
        "POST", "/modalities/vna/storage-commitment", {"DicomInstances": instances}
    )
    path = answer["Path"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report: dict[str, Any] = orthanc.call("GET", path)
        if report["Status"] != "Pending":
            return report
        time.sleep(0.5)
    raise AssertionError(f"Orthanc received no storage commitment report ({path})")


def uids(entries: list[dict[str, str]]) -> set[str]:
    return {e["SOPInstanceUID"] for e in entries}


def test_orthanc_sees_every_instance_committed(orthanc: Orthanc, workdir: Path) -> None:
    archive = start_archive(workdir, orthanc)
    try:
        instances = send_study(orthanc)
        report = ask_commitment(orthanc, instances)
    finally:
        archive.shutdown()
    assert report["Status"] == "Success", report
    assert uids(report["Success"]) == uids(instances)
    assert report["Failures"] == []


def test_with_a_failing_replica_orthanc_sees_failures_then_commitment_after_recovery(
    orthanc: Orthanc, workdir: Path
) -> None:
    """commit_requires_replicas = 1: while the replica cannot be written the report (after
    commit_timeout_seconds) lists every instance failed (0110); once the replica works again
    replication catches up and the same request is answered with every instance committed."""
    replica = workdir / "replica-objects"
    replica.mkdir()
    # A file where the replica's directory of objects should be: every copy fails to be
    # written (the store itself opens, as a mounted disk with a fault would).
    blocker = replica / "sha256"
    blocker.write_text("not a directory")
    archive = start_archive(
        workdir,
        orthanc,
        "[dimse]\ncommit_requires_replicas = 1\ncommit_timeout_seconds = 10\n"
        f'[[replicas]]\nname = "dr"\nstorage_url = "{replica.as_uri()}"\n',
    )
    try:
        instances = send_study(orthanc)
        failed = ask_commitment(orthanc, instances)
        assert failed["Status"] == "Failure", failed
        assert failed["Success"] == []
        assert uids(failed["Failures"]) == uids(instances)
        # Orthanc shows the Failure Reason (PS3.3 C.14.1.1) in decimal: 0x0110 processing.
        assert {f["FailureReason"] for f in failed["Failures"]} == {0x0110}

        blocker.unlink()  # the replica's disk is back
        recovered = ask_commitment(orthanc, instances)
        if recovered["Status"] != "Success":
            print(archive.log())
        assert recovered["Status"] == "Success", recovered
        assert uids(recovered["Success"]) == uids(instances)
        assert recovered["Failures"] == []
        assert len([p for p in blocker.rglob("*") if p.is_file()]) >= len(instances)
    finally:
        archive.shutdown()
