"""`vna serve` as a PACS administrator sees it, driven by dcmtk: storescu, findscu, movescu,
getscu and echoscu against the DIMSE listener, with a pynetdicom storage SCP (started here)
as the C-MOVE destination."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.acceptance.conftest import ArchiveProcess
from tests.conftest import STORE_KINDS, free_port
from tests.factory import ct_study, part10, split_multipart

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        shutil.which("storescu") is None,
        reason="dcmtk's storescu/findscu/movescu/getscu/echoscu are not installed"
        " (apt-get install dcmtk; .ci/run installs it)",
    ),
]

DESTINATION_AE = "STORESCP"
_TRAILING_PADDING = 0xFFFCFFFC


class StorageSCP:
    """A workstation receiving C-MOVE sub-operations: keeps each data set's bytes as received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=DESTINATION_AE)
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: Any) -> int:
        syntax = str(event.context.transfer_syntax)
        # pynetdicom may have been set (by another test in this process) to receive to a file.
        path = event.dataset_path if _config.STORE_RECV_CHUNKED_DATASET else None
        if path is not None:
            data = data_set_bytes(Path(path).read_bytes())
        else:
            data = event.encoded_dataset(include_meta=False)
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] = (syntax, data)
        return 0x0000

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()


@pytest.fixture(scope="module")
def destination() -> Iterator[StorageSCP]:
    scp = StorageSCP()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture(scope="module")
def server(destination: StorageSCP) -> Iterator[ArchiveProcess]:
    """``vna serve`` with no sources (any calling AE) and the test's C-MOVE destination."""
    yield from _serve(destination)


@pytest.fixture(scope="module")
def s3_server(destination: StorageSCP, s3_endpoint: str) -> Iterator[ArchiveProcess]:
    """The same on an S3 bucket (the moto server) instead of the filesystem store."""
    import boto3

    bucket = f"vna-accept-dimse-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    yield from _serve(destination, f"s3://{bucket}?endpoint_url={s3_endpoint}&region=us-east-1")


def _serve(destination: StorageSCP, storage_url: str = "") -> Iterator[ArchiveProcess]:
    # Not under pytest's basetemp (see archive_process in conftest.py).
    root = Path(tempfile.mkdtemp(prefix="vna-accept-dimse-"))
    config = root / "vna.toml"
    config.write_text(
        "[[destinations]]\n"
        'name = "workstation"\n'
        f'ae_title = "{DESTINATION_AE}"\n'
        'host = "127.0.0.1"\n'
        f"port = {destination.port}\n"
    )
    process = ArchiveProcess(root / "data", config=config, storage_url=storage_url)
    try:
        process.start()
        yield process
    finally:
        process.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )


def address(server: ArchiveProcess) -> list[str]:
    return ["-aec", server.ae_title, "127.0.0.1", str(server.dimse_port)]


def keys(**values: str) -> list[str]:
    out = []
    for keyword, value in values.items():
        out += ["-k", f"{keyword}={value}" if value else keyword]
    return out


def storescu(server: ArchiveProcess, files: list[Path], *options: str) -> str:
    """Store over one association (``-nh``: go on after a refused instance); the log."""
    done = run(
        "storescu", "-v", "-nh", "-aet", "MODALITY", *options, *address(server), *map(str, files)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def findscu(server: ArchiveProcess, model: str, out: Path, **values: str) -> list[Dataset]:
    """C-FIND (``-P`` Patient Root, ``-S`` Study Root); the response identifiers."""
    out.mkdir(parents=True)
    done = run("findscu", "-v", model, *address(server), *keys(**values), "-X", "-od", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def data_set_bytes(part10_bytes: bytes) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information."""
    assert part10_bytes[128:132] == b"DICM"
    # PS3.10 7.1: the meta group starts with its length, (0002,0000) UL, explicit VR.
    (group_length,) = struct.unpack("<I", part10_bytes[140:144])
    return part10_bytes[144 + group_length :]


def stored_data_set(server: ArchiveProcess, ds: Dataset) -> bytes:
    """The data set bytes the archive holds for an instance, fetched over WADO-RS."""
    url = (
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    r = requests.get(url, headers={"Accept": accept}, timeout=60)
    r.raise_for_status()
    (part,) = split_multipart(r.content, r.headers["Content-Type"])
    return data_set_bytes(part)


def decoded(syntax: str, data: bytes) -> Dataset:
    uid = UID(syntax)
    ds = decode(io.BytesIO(data), uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)
    assert ds is not None
    return ds


def same_values(a: Dataset, b: Dataset) -> None:
    """Every data element of ``a`` and ``b`` equal, Pixel Data included; group lengths and
    Data Set Trailing Padding aside (PS3.5 7.2, PS3.10 7.2: senders may drop or add them)."""
    tags_a = {e.tag for e in a if e.tag.element != 0 and e.tag != _TRAILING_PADDING}
    tags_b = {e.tag for e in b if e.tag.element != 0 and e.tag != _TRAILING_PADDING}
    assert tags_a == tags_b
    for tag in tags_a:
        assert a[tag].value == b[tag].value, a[tag]


def write_study(directory: Path, study: list[Dataset]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(study):
        path = directory / f"{i:03d}.dcm"
        path.write_bytes(part10(ds))
        paths.append(path)
    return paths


def test_echoscu(server: ArchiveProcess) -> None:
    done = run("echoscu", "-v", "-aet", "PACS", *address(server))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Echo Response (Success)" in done.stdout + done.stderr


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_store_find_move_and_get_a_multi_series_study(
    store_kind: str, destination: StorageSCP, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("server" if store_kind == "file" else "s3_server")
    study = ct_study(series=2, slices=3, patient_id="DCMTK-1", accession="ACC-DCMTK")
    files = write_study(tmp_path / "study", study)
    log = storescu(server, files)
    assert log.count("Received Store Response (Success)") == 6
    study_uid = study[0].StudyInstanceUID

    # findscu at each level, both information models.
    (patient,) = findscu(
        server,
        "-P",
        tmp_path / "patient",
        QueryRetrieveLevel="PATIENT",
        PatientID="DCMTK-1",
        PatientName="",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedInstances="",
    )
    assert patient.PatientName == "DOE^JANE"
    assert int(patient.NumberOfPatientRelatedStudies) == 1
    assert int(patient.NumberOfPatientRelatedInstances) == 6

    (found,) = findscu(
        server,
        "-S",
        tmp_path / "study-level",
        QueryRetrieveLevel="STUDY",
        PatientID="DCMTK-*",
        StudyInstanceUID="",
        AccessionNumber="",
        StudyDate="20240101-20240131",
        NumberOfStudyRelatedSeries="",
    )
    assert found.StudyInstanceUID == study_uid
    assert found.AccessionNumber == "ACC-DCMTK"
    assert int(found.NumberOfStudyRelatedSeries) == 2
    assert found.RetrieveAETitle == "VNA"

    series = findscu(
        server,
        "-S",
        tmp_path / "series-level",
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=study_uid,
        SeriesInstanceUID="",
        Modality="",
        NumberOfSeriesRelatedInstances="",
    )
    assert {s.SeriesInstanceUID for s in series} == {ds.SeriesInstanceUID for ds in study}
    assert [int(s.NumberOfSeriesRelatedInstances) for s in series] == [3, 3]

    images = findscu(
        server,
        "-S",
        tmp_path / "image-level",
        QueryRetrieveLevel="IMAGE",
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=study[3].SeriesInstanceUID,
        SOPInstanceUID="",
    )
    assert {i.SOPInstanceUID for i in images} == {ds.SOPInstanceUID for ds in study[3:]}

    # movescu to the workstation: the data sets arrive as storescu sent them.
    done = run(
        "movescu",
        "-v",
        "-S",
        "-aet",
        "PACS",
        "-aem",
        DESTINATION_AE,
        *address(server),
        *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Final Move Response (Success)" in done.stdout + done.stderr
    for path, ds in zip(files, study, strict=True):
        syntax, data = destination.received[ds.SOPInstanceUID]
        assert syntax == ds.file_meta.TransferSyntaxUID
        assert data == stored_data_set(server, ds)  # the archived bytes, bit for bit
        moved = decoded(syntax, data)
        assert moved.PixelData == ds.PixelData
        same_values(moved, pydicom.dcmread(path))

    # getscu of one series: dcmtk writes each received instance to a file.
    got = tmp_path / "got"
    got.mkdir()
    done = run(
        "getscu",
        "-v",
        "-S",
        "-aet",
        "VIEWER",
        *address(server),
        *keys(
            QueryRetrieveLevel="SERIES",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=study[0].SeriesInstanceUID,
        ),
        "-od",
        str(got),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    retrieved = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in got.iterdir()}
    assert set(retrieved) == {ds.SOPInstanceUID for ds in study[:3]}
    for ds in study[:3]:
        assert retrieved[ds.SOPInstanceUID].PixelData == ds.PixelData
        same_values(retrieved[ds.SOPInstanceUID], pydicom.dcmread(files[study.index(ds)]))


@pytest.mark.parametrize(
    ("name", "propose"),
    [
        ("MR_small_RLE.dcm", "-xr"),  # RLE Lossless
        ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),  # JPEG Baseline
        ("JPEG2000.dcm", "-xw"),  # JPEG 2000
    ],
)
def test_compressed_instances_are_kept_and_moved_in_their_transfer_syntax(
    server: ArchiveProcess, destination: StorageSCP, name: str, propose: str
) -> None:
    source = get_testdata_file(name)
    assert source is not None
    path = Path(source)
    original = pydicom.dcmread(path)
    log = storescu(server, [path], propose)
    assert "Received Store Response (Success)" in log
    done = run(
        "movescu",
        "-v",
        "-S",
        "-aem",
        DESTINATION_AE,
        *address(server),
        *keys(
            QueryRetrieveLevel="IMAGE",
            StudyInstanceUID=original.StudyInstanceUID,
            SeriesInstanceUID=original.SeriesInstanceUID,
            SOPInstanceUID=original.SOPInstanceUID,
        ),
    )
    assert "Received Final Move Response (Success)" in done.stdout + done.stderr
    syntax, data = destination.received[original.SOPInstanceUID]
    assert syntax == original.file_meta.TransferSyntaxUID  # not decompressed on the way
    assert data == stored_data_set(server, original)  # the archived bytes, bit for bit
    moved = decoded(syntax, data)
    # storescu re-encodes sequences (defined lengths), so values are compared, not bytes.
    assert moved.PixelData == original.PixelData
    same_values(moved, original)


def test_broken_instance_fails_and_the_association_goes_on(
    server: ArchiveProcess, tmp_path: Path
) -> None:
    good, broken, after = ct_study(series=1, slices=3, patient_id="DCMTK-BROKEN")
    del broken.StudyInstanceUID
    files = write_study(tmp_path / "files", [good, broken, after])
    log = storescu(server, files)
    assert log.count("Requesting Association") == 1
    assert log.count("Received Store Response (Success)") == 2
    assert "Received Store Response (Error: CannotUnderstand)" in log
    images = findscu(
        server,
        "-P",
        tmp_path / "find",
        QueryRetrieveLevel="IMAGE",
        PatientID="DCMTK-BROKEN",
        SOPInstanceUID="",
    )
    assert {i.SOPInstanceUID for i in images} == {good.SOPInstanceUID, after.SOPInstanceUID}


def test_move_to_an_unknown_destination_is_refused(server: ArchiveProcess, tmp_path: Path) -> None:
    study = ct_study(series=1, slices=1, patient_id="DCMTK-NOWHERE")
    storescu(server, write_study(tmp_path / "files", study))
    done = run(
        "movescu",
        "-v",
        "-S",
        "-aem",
        "NOBODY",
        *address(server),
        *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study[0].StudyInstanceUID),
    )
    # 0xA801, Refused: Move Destination unknown (PS3.4 C.4.2.1.5).
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in (
        done.stdout + done.stderr
    )


def test_eight_concurrent_storescu_associations(server: ArchiveProcess, tmp_path: Path) -> None:
    studies = [ct_study(series=1, slices=5, patient_id=f"DCMTK-CONC-{i}") for i in range(8)]
    procs = []
    for i, study in enumerate(studies):
        files = write_study(tmp_path / f"sender{i}", study)
        procs.append(
            subprocess.Popen(
                ["storescu", "-v", "-aet", f"SENDER{i}", *address(server), *map(str, files)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, logs
    assert [log.count("Received Store Response (Success)") for log in logs] == [5] * 8
    found = findscu(
        server,
        "-S",
        tmp_path / "find",
        QueryRetrieveLevel="STUDY",
        PatientID="DCMTK-CONC-*",
        StudyInstanceUID="",
        NumberOfStudyRelatedInstances="",
    )
    assert len(found) == 8
    assert {int(s.NumberOfStudyRelatedInstances) for s in found} == {5}


def test_unknown_calling_ae_is_rejected_once_sources_are_declared() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="vna-accept-dimse-"))
    config = tmp_path / "vna.toml"
    config.write_text(
        '[[sources]]\nname = "HOSP1"\nae_titles = ["HOSP1PACS"]\nissuer_of_patient_id = "H1"\n'
    )
    process = ArchiveProcess(tmp_path / "data", config=config)
    process.start()
    try:
        refused = run("echoscu", "-v", "-aet", "STRANGER", *address(process))
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        accepted = run("echoscu", "-v", "-aet", "HOSP1PACS", *address(process))
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    finally:
        process.shutdown()
        shutil.rmtree(tmp_path, ignore_errors=True)


def write_large_instance(path: Path, frames: int, rows: int = 1024, columns: int = 1024) -> None:
    """A multi-frame 16-bit CT of frames x rows x columns x 2 bytes, written in chunks."""
    ds = ct_study(series=1, slices=1, patient_id="DCMTK-BIG", size=rows)[0]
    del ds.PixelData
    ds.Columns = columns
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    length = frames * rows * columns * 2
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "ab") as f:
        # (7FE0,0010) OW, explicit VR little endian (PS3.5 7.1.2).
        f.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(length >> 20):
            f.write(block)


@pytest.mark.slow
def test_a_large_instance_is_received_without_holding_it_in_memory(
    server: ArchiveProcess, tmp_path: Path
) -> None:
    path = tmp_path / "big.dcm"
    write_large_instance(path, frames=128)  # 256 MiB of Pixel Data
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        log = storescu(server, [path])
    finally:
        done.set()
        sampler.join()
    assert "Received Store Response (Success)" in log
    # pynetdicom writes the data set to a file as its PDUs arrive (STORE_RECV_CHUNKED_DATASET).
    growth = peak[0] - baseline
    assert growth < 128 * 1024**2, f"server RSS grew by {growth / 1024**2:.0f} MiB"
