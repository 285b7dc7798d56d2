"""`vna serve` as users run it, driven by dicomweb-client and plain HTTP clients:
store/query/retrieve, restart, crash (kill -9) and memory under a 1 GB upload."""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from pathlib import Path

import psutil
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.acceptance.conftest import ArchiveProcess
from tests.conftest import STORE_KINDS
from tests.factory import ct_study, part10, split_multipart, stow_body

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _retrieve_bytes(server: ArchiveProcess, study_uid: str) -> list[bytes]:
    r = requests.get(f"{server.url}/studies/{study_uid}", headers={"Accept": ACCEPT}, timeout=60)
    r.raise_for_status()
    return split_multipart(r.content, r.headers["Content-Type"])


def _stow(server: ArchiveProcess, parts: list[bytes]) -> requests.Response:
    body, content_type = stow_body(parts)
    return requests.post(
        f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=120
    )


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_dicomweb_client_stores_queries_and_retrieves_a_study(archive_process):
    client = DICOMwebClient(archive_process.url)
    study = ct_study(series=3, slices=4, patient_id="HOSP1-0042", accession="A-77")
    client.store_instances(study)

    found = client.search_for_studies(search_filters={"PatientID": "HOSP1-0042"})
    assert len(found) == 1
    assert found[0]["0020000D"]["Value"] == [study[0].StudyInstanceUID]
    assert found[0]["00201208"]["Value"] == [12]  # NumberOfStudyRelatedInstances

    series = client.search_for_series(study[0].StudyInstanceUID)
    assert len(series) == 3
    instances = client.search_for_instances(study[0].StudyInstanceUID, study[0].SeriesInstanceUID)
    assert len(instances) == 4

    retrieved = client.retrieve_study(study[0].StudyInstanceUID)
    assert len(retrieved) == 12
    by_uid = {ds.SOPInstanceUID: ds for ds in study}
    for ds in retrieved:
        original = by_uid[ds.SOPInstanceUID]
        assert ds.PixelData == original.PixelData
        for elem in original:
            assert ds[elem.tag].value == elem.value, elem.keyword

    metadata = client.retrieve_study_metadata(study[0].StudyInstanceUID)
    assert {m["00080018"]["Value"][0] for m in metadata} == set(by_uid)


def test_workers_share_the_port_and_report_one_set_of_metrics(archive_process):
    """`vna serve` runs one worker per core; whichever answers, /metrics counts them all."""
    server = psutil.Process(archive_process.proc.pid)
    expected = max(1, min(os.cpu_count() or 1, 8))
    deadline = time.monotonic() + 60  # the others start once the first one answers
    while time.monotonic() < deadline:
        workers = [p for p in server.children() if "postgres" not in p.name()]
        if len(workers) == expected:
            break
        time.sleep(0.2)
    assert len(workers) == expected
    for _ in range(8):
        assert _stow(archive_process, [part10(ct_study(series=1, slices=1)[0])]).status_code == 200
    for _ in range(4):  # several scrapes, answered by different workers, agree
        text = requests.get(f"{archive_process.base}/metrics", timeout=10).text
        assert 'vna_instances_stored_total{protocol="stow-rs",source="DEFAULT"} 8.0' in text


def test_resend_of_a_study_stores_nothing_new(archive_process):
    client = DICOMwebClient(archive_process.url)
    study = ct_study(series=1, slices=5)
    client.store_instances(study)
    data_dir = archive_process.data_dir / "objects"

    def received_objects() -> set[Path]:
        # The lifecycle engine adds compressed forms (.zst) of what was stored, at its own
        # pace, and keeps the originals for an hour (lifecycle.delete_grace_seconds).  A
        # resend stored again would add an object of its own file's content.
        return {
            p
            for p in data_dir.rglob("*")
            if p.is_file() and not {".zst", ".szst"} & set(p.suffixes)
        }

    before = received_objects()
    result = client.store_instances(study)  # raises on any HTTP error
    assert len(result.ReferencedSOPSequence) == 5
    assert "FailedSOPSequence" not in result
    assert received_objects() == before


def test_restart_keeps_every_instance(archive_process):
    studies = [ct_study(series=2, slices=3) for _ in range(3)]
    sent = {s[0].StudyInstanceUID: sorted(part10(ds) for ds in s) for s in studies}
    for study in studies:
        assert _stow(archive_process, [part10(ds) for ds in study]).status_code == 200
    assert archive_process.stop() == 0
    archive_process.start()
    for study_uid, parts in sent.items():
        assert sorted(_retrieve_bytes(archive_process, study_uid)) == parts


def test_kill_9_mid_upload_loses_nothing_acknowledged(archive_process):
    """Upload in a loop, kill the server with SIGKILL while requests are in flight; after the
    restart, every acknowledged instance is retrievable and bit-exact."""
    acknowledged: dict[str, bytes] = {}
    study_uid = generate_uid()
    stop = threading.Event()

    def uploader() -> None:
        while not stop.is_set():
            batch = ct_study(series=1, slices=4, size=256, study_uid=study_uid)
            parts = [part10(ds) for ds in batch]
            try:
                r = _stow(archive_process, parts)
            except requests.RequestException:
                return  # the server died mid-request: nothing of this batch was acknowledged
            if r.status_code == 200:
                for ds, data in zip(batch, parts, strict=True):
                    acknowledged[ds.SOPInstanceUID] = data

    threads = [threading.Thread(target=uploader) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [
        p for p in psutil.Process(archive_process.proc.pid).children() if "postgres" not in p.name()
    ]
    archive_process.kill()
    # Workers do not outlive a killed supervisor (they would keep serving on the port).
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"workers still running after the supervisor was killed: {alive}"
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert len(acknowledged) >= 40

    archive_process.start()
    retrieved = {
        pydicom.dcmread(__import__("io").BytesIO(data)).SOPInstanceUID: data
        for data in _retrieve_bytes(archive_process, study_uid)
    }
    missing = set(acknowledged) - set(retrieved)
    assert not missing, f"{len(missing)} acknowledged instances lost"
    for uid, data in acknowledged.items():
        assert retrieved[uid] == data
    # Partial uploads of the killed processes were cleaned up at start.
    dead = {str(p.pid) for p in workers}
    leftovers = [
        p for p in (archive_process.data_dir / "incoming").iterdir() if p.name.split(".")[0] in dead
    ]
    assert leftovers == []


def _write_large_instance(path: Path, frames: int, rows: int = 1024, cols: int = 1024) -> str:
    """A multi-frame 16-bit instance of frames*rows*cols*2 bytes, written in chunks."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "BIG1"
    ds.PatientName = "LARGE^UPLOAD"
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.save_as(path, enforce_file_format=True)
    length = frames * rows * cols * 2
    block = os.urandom(1 << 20)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(length >> 20):
            f.write(block)
    return sop_uid


@pytest.mark.slow
def test_1gb_upload_keeps_gateway_memory_bounded(archive_process, tmp_path):
    files = []
    for i in range(4):  # 4 x 256 MiB
        path = tmp_path / f"big{i}.dcm"
        _write_large_instance(path, frames=128)
        files.append(path)
    total = sum(p.stat().st_size for p in files)
    assert total > 1_000_000_000

    boundary = "vnabigupload"

    def body():
        for path in files:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    server = psutil.Process(archive_process.proc.pid)

    def gateway_rss() -> int:
        """The archive's own processes (supervisor and workers), not its PostgreSQL."""
        total = 0
        for proc in [server, *server.children(recursive=True)]:
            try:
                if "postgres" not in proc.name():
                    total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    peak = [gateway_rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], gateway_rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = requests.post(
            f"{archive_process.url}/studies",
            data=body(),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
            timeout=600,
        )
    finally:
        done.set()
        sampler.join()
    assert r.status_code == 200, r.headers.get("Warning")
    assert len(r.json()["00081199"]["Value"]) == 4
    # Well below the upload size: the gateway streams parts to disk, never holds them.  (The
    # supervisor and its workers together: about 100 MiB each when idle.)
    assert peak[0] < 500 * 1024**2, f"peak RSS {peak[0] / 1024**2:.0f} MiB"

    # And the stored objects are the uploaded bytes.
    one = files[0]
    ds = pydicom.dcmread(one, stop_before_pixels=True)
    url = (
        f"{archive_process.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    digest = hashlib.sha256()
    with requests.get(url, headers={"Accept": ACCEPT}, stream=True, timeout=300) as resp:
        resp.raise_for_status()
        raw = resp.raw.read()
    parts = split_multipart(raw, resp.headers["Content-Type"])
    digest.update(parts[0])
    assert digest.hexdigest() == hashlib.sha256(one.read_bytes()).hexdigest()
