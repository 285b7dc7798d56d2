"""Orthanc (the Debian package) as a hospital PACS asking the archive for Storage Commitment
through its own REST API, as a PACS administrator would set it up: the archive declares
Orthanc as a source (AE title, host, port) and Orthanc declares the archive as a modality.
Orthanc sends a study over DIMSE (C-STORE), asks for commitment and reads the report it
received (on a new association to its DICOM port) from ``GET /storage-commitment/{uid}``."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.acceptance.conftest import ArchiveProcess
from tests.conftest import free_port
from tests.factory import ct_study, part10

ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_AE = "ORTHANC"

pytestmark = pytest.mark.skipif(
    not ORTHANC.exists(), reason="Orthanc is not installed (apt-get install orthanc)"
)


class Orthanc:
    """Orthanc on free loopback ports, SQLite index and storage in a temporary directory, no
    plugins (the approach of bench/servers.py, without its benchmark parts)."""

    def __init__(self, root: Path) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.root = root
        self.log = root / "orthanc.log"
        config = {
            "Name": "test-pacs",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {},
            # Modalities are added over REST below (the archive's port is chosen per test).
            "DicomModalitiesInDatabase": False,
            "SaveJobs": False,
            "Plugins": [],
        }
        path = root / "orthanc.json"
        path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [str(ORTHANC), str(path)],
            cwd=root,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"Orthanc exited: {self.log.read_text()[-2000:]}"
            try:
                if requests.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        r = requests.request(method, f"{self.url}{path}", json=body, timeout=timeout)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-orthanc-"))
    pacs = Orthanc(root)
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
