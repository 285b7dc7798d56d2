"""The DIMSE gateway against a real archive (PostgreSQL catalogue, filesystem store), driven
by pynetdicom as the SCU over real associations on a loopback port.

pynetdicom's SCU calls block, and the listener's handlers need this test's event loop (the
archive lives on it), so every SCU exchange runs in a thread of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.conftest import STORE_KINDS, free_port
from tests.factory import ct_study
from vna.archive import Archive
from vna.config import (
    CompressionSettings,
    DestinationSettings,
    DimseSettings,
    Settings,
    SourceSettings,
)
from vna.errors import ConfigError, OfflineError
from vna.gateway.dimse import DimseListener

pytestmark = pytest.mark.asyncio
T = TypeVar("T")

Start = Callable[..., Awaitable[tuple[Archive, DimseListener]]]

# The SCU side's own threads: the loop's default executor serves the archive (header parsing,
# file writes), and SCU calls blocked on the archive must not take its threads.
_SCU_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="scu")


async def scu(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking SCU exchange in a thread of its own."""
    return await asyncio.get_running_loop().run_in_executor(
        _SCU_THREADS, functools.partial(fn, *args)
    )


@pytest.fixture
async def start_archive(archive_settings: Settings) -> AsyncIterator[Start]:
    """Open the archive of this test with its DIMSE listener on a free loopback port."""
    started: list[tuple[Archive, DimseListener]] = []

    async def start(**overrides: Any) -> tuple[Archive, DimseListener]:
        settings = dataclasses.replace(
            archive_settings,
            dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
            **overrides,
        )
        archive = await Archive.open(settings)
        listener = DimseListener(archive)
        await listener.start()
        started.append((archive, listener))
        return archive, listener

    yield start
    for archive, listener in reversed(started):
        await listener.stop(grace_seconds=5)
        await archive.close()


class StorageSCP:
    """A storage SCP started by the test, standing for a PACS or workstation: keeps the data
    set bytes of every instance it receives, as received."""

    def __init__(self, ae_title: str = "TESTDEST") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.received: dict[str, bytes] = {}
        self.meta: dict[str, Dataset] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )

    def _on_store(self, event: Any) -> int:
        meta, data_set = split_part10(Path(event.dataset_path).read_bytes())
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] = data_set
            self.meta[str(event.request.AffectedSOPInstanceUID)] = meta
        return 0x0000

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()


@pytest.fixture
def destination() -> Iterator[StorageSCP]:
    scp = StorageSCP()
    try:
        yield scp
    finally:
        scp.stop()


def split_part10(data: bytes) -> tuple[Dataset, bytes]:
    """A Part 10 file's File Meta Information and the bytes of its data set."""
    assert data[128:132] == b"DICM"
    # PS3.10 7.1: the meta group starts with its length, (0002,0000) UL, explicit VR.
    (group_length,) = struct.unpack("<I", data[140:144])
    offset = 144 + group_length
    meta = pydicom.dcmread(io.BytesIO(data[:offset]), stop_before_pixels=True).file_meta
    return meta, data[offset:]


@contextmanager
def association(
    port: int,
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    calling: str = "SCU",
    ext_neg: list[Any] | None = None,
    handlers: list[Any] | None = None,
) -> Iterator[Any]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="VNA", ext_neg=ext_neg or [], evt_handlers=handlers or []
    )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


STORE_CONTEXT = [(CTImageStorage, [ExplicitVRLittleEndian])]
QR = [
    (StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian]),
    (PatientRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian]),
    (StudyRootQueryRetrieveInformationModelMove, [ImplicitVRLittleEndian]),
    (PatientRootQueryRetrieveInformationModelMove, [ImplicitVRLittleEndian]),
]


def store(port: int, datasets: list[Dataset], calling: str = "SCU") -> list[int]:
    """C-STORE each data set over one association; their statuses."""
    with association(port, STORE_CONTEXT, calling=calling) as assoc:
        assert assoc.is_established
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]


def find(port: int, model: str, identifier: Dataset) -> tuple[list[Dataset], int]:
    """C-FIND; the pending identifiers and the final status."""
    with association(port, QR) as assoc:
        assert assoc.is_established
        results, final = [], -1
        for status, ds in assoc.send_c_find(identifier, model):
            if status.Status in (0xFF00, 0xFF01):
                results.append(ds)
            else:
                final = int(status.Status)
        return results, final


def move(port: int, model: str, identifier: Dataset, destination: str) -> Dataset:
    """C-MOVE; the final response."""
    with association(port, QR) as assoc:
        assert assoc.is_established
        last = None
        for status, _ in assoc.send_c_move(identifier, destination, model):
            last = status
        assert last is not None
        return last


def study_keys(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def encoded(ds: Dataset) -> bytes:
    """The data set as a sender encodes it in Explicit VR Little Endian."""
    from pynetdicom.dsutils import encode

    data = encode(ds, False, True)
    assert data is not None
    return data


async def test_echo(start_archive: Start) -> None:
    _, listener = await start_archive()

    def echo() -> int:
        with association(listener.port, [(Verification, [ImplicitVRLittleEndian])]) as assoc:
            return int(assoc.send_c_echo().Status)

    assert await scu(echo) == 0x0000


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_store_find_move_and_get_a_multi_series_study_bit_exact(
    start_archive: Start, destination: StorageSCP
) -> None:
    archive, listener = await start_archive(
        destinations=(
            DestinationSettings(
                name="workstation", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        )
    )
    study = ct_study(series=2, slices=3)
    sent = {ds.SOPInstanceUID: encoded(ds) for ds in study}
    study_uid = study[0].StudyInstanceUID

    assert await scu(store, listener.port, study) == [0] * 6

    # What is archived is the data set as sent, byte for byte.
    for ds in study:
        (instance,) = await archive.retriever.find_by_uids([ds.SOPInstanceUID])
        assert split_part10(await archive.retriever.read(instance))[1] == sent[ds.SOPInstanceUID]
        assert instance.transfer_syntax == ExplicitVRLittleEndian

    # C-FIND at each level.
    patients, status = await scu(
        find,
        listener.port,
        PatientRootQueryRetrieveInformationModelFind,
        study_keys(
            "PATIENT",
            PatientID="PAT001",
            PatientName="",
            NumberOfPatientRelatedStudies="",
            NumberOfPatientRelatedInstances="",
        ),
    )
    assert status == 0
    assert len(patients) == 1
    assert patients[0].PatientName == "DOE^JANE"
    assert patients[0].NumberOfPatientRelatedStudies == 1
    assert patients[0].NumberOfPatientRelatedInstances == 6
    assert patients[0].QueryRetrieveLevel == "PATIENT"
    assert patients[0].RetrieveAETitle == "VNA"

    studies, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys(
            "STUDY",
            StudyInstanceUID="",
            PatientID="PAT*",
            StudyDate="20240101-20240131",
            AccessionNumber="",
            NumberOfStudyRelatedInstances="",
            ModalitiesInStudy="",
        ),
    )
    assert status == 0
    assert [s.StudyInstanceUID for s in studies] == [study_uid]
    assert studies[0].AccessionNumber == "ACC001"
    assert studies[0].NumberOfStudyRelatedInstances == 6
    assert studies[0].ModalitiesInStudy == "CT"
    assert "StudyDescription" not in studies[0]  # only the keys asked for come back

    series, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", SeriesNumber=""),
    )
    assert status == 0
    assert sorted(int(s.SeriesNumber) for s in series) == [1, 2]

    images, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys(
            "IMAGE",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=study[3].SeriesInstanceUID,
            SOPInstanceUID="",
            InstanceNumber="",
        ),
    )
    assert status == 0
    assert {i.SOPInstanceUID for i in images} == {ds.SOPInstanceUID for ds in study[3:]}

    # C-MOVE of the study to the workstation: every instance arrives unchanged.
    final = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("STUDY", StudyInstanceUID=study_uid),
        "TESTDEST",
    )
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 6
    assert destination.received == sent
    assert {str(m.TransferSyntaxUID) for m in destination.meta.values()} == {ExplicitVRLittleEndian}

    # C-GET of one series over the requester's own association.
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        got[str(event.request.AffectedSOPInstanceUID)] = split_part10(path.read_bytes())[1]
        path.unlink()  # pynetdicom leaves it behind on the requester's side of a C-GET
        return 0x0000

    def get() -> Dataset:
        contexts = [
            (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
        ]
        role = build_role(CTImageStorage, scp_role=True)
        with association(
            listener.port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
        ) as assoc:
            assert assoc.is_established
            last = None
            for status, _ in assoc.send_c_get(
                study_keys(
                    "SERIES",
                    StudyInstanceUID=study_uid,
                    SeriesInstanceUID=study[0].SeriesInstanceUID,
                ),
                StudyRootQueryRetrieveInformationModelGet,
            ):
                last = status
            assert last is not None
            return last

    final = await scu(get)
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 3
    assert got == {ds.SOPInstanceUID: sent[ds.SOPInstanceUID] for ds in study[:3]}


async def test_identical_resend_is_success(start_archive: Start) -> None:
    archive, listener = await start_archive()
    study = ct_study(series=1, slices=2)
    assert await scu(store, listener.port, study) == [0, 0]
    assert await scu(store, listener.port, study) == [0, 0]
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM instances") == 2


async def test_broken_instance_fails_and_the_association_stays_usable(
    start_archive: Start,
) -> None:
    archive, listener = await start_archive()
    good, broken, after = ct_study(series=1, slices=3)
    del broken.StudyInstanceUID  # PS3.3: Type 1; the archive cannot file it
    statuses = await scu(store, listener.port, [good, broken, after])
    assert statuses[0] == 0x0000
    assert 0xC000 <= statuses[1] <= 0xCFFF  # Error: Cannot understand (PS3.4 B.2.3)
    assert statuses[2] == 0x0000
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM instances") == 2
    assert list(archive.incoming.iterdir()) == []  # nothing left behind


async def test_conflicting_instance_is_refused(start_archive: Start) -> None:
    _, listener = await start_archive()
    (ds,) = ct_study(series=1, slices=1)
    assert await scu(store, listener.port, [ds]) == [0]
    ds.PixelData = bytes(len(ds.PixelData))
    (status,) = await scu(store, listener.port, [ds])
    assert status == 0x0111  # Duplicate SOP Instance with other content (PS3.7 C.4)


async def test_unknown_calling_ae_is_rejected_once_sources_are_declared(
    start_archive: Start,
) -> None:
    archive, listener = await start_archive(
        sources=(SourceSettings(name="HOSP1", ae_titles=("HOSP1PACS",), issuer_of_patient_id="H1"),)
    )

    def associate(calling: str) -> tuple[bool, tuple[int, int, int] | None]:
        with association(listener.port, STORE_CONTEXT, calling=calling) as assoc:
            if assoc.is_rejected:
                rj = assoc.acceptor.primitive
                return False, (rj.result, rj.result_source, rj.diagnostic)
            return assoc.is_established, None

    # Rejected-permanent, by the service user, calling AE title not recognized (PS3.8 9.3.4).
    assert await scu(associate, "STRANGER") == (False, (1, 1, 3))
    assert await scu(associate, "HOSP1PACS") == (True, None)

    (ds,) = ct_study(series=1, slices=1)
    # The source's issuer of patient ID is assigned: Warning, Coercion of Data Elements.
    assert await scu(store, listener.port, [ds], "HOSP1PACS") == [0xB000]
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow("SELECT source FROM instances")
        assert row["source"] == "HOSP1"
        assert await conn.fetchval("SELECT issuer FROM patients") == "H1"
        audit = await conn.fetchrow("SELECT actor, detail FROM audit WHERE outcome = 'success'")
        assert audit["actor"] == "HOSP1PACS"


async def test_move_to_an_unknown_destination_is_refused_with_a801(start_archive: Start) -> None:
    _, listener = await start_archive()
    study = ct_study(series=1, slices=1)
    assert await scu(store, listener.port, study) == [0]
    final = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("STUDY", StudyInstanceUID=study[0].StudyInstanceUID),
        "NOBODY",
    )
    assert final.Status == 0xA801


async def test_move_to_a_source_with_an_address(
    start_archive: Start, destination: StorageSCP
) -> None:
    _, listener = await start_archive(
        sources=(
            SourceSettings(
                name="HOSP1",
                ae_titles=("SCU", "TESTDEST"),
                host="127.0.0.1",
                port=destination.port,
            ),
        )
    )
    study = ct_study(series=1, slices=2, patient_id="P-MOVE")
    assert await scu(store, listener.port, study) == [0, 0]
    final = await scu(
        move,
        listener.port,
        PatientRootQueryRetrieveInformationModelMove,
        study_keys("PATIENT", PatientID="P-MOVE"),
        "TESTDEST",
    )
    assert final.Status == 0x0000
    assert set(destination.received) == {ds.SOPInstanceUID for ds in study}


async def test_bad_identifiers_are_refused_with_a900(
    start_archive: Start, destination: StorageSCP
) -> None:
    _, listener = await start_archive(
        destinations=(
            DestinationSettings(
                name="workstation", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        )
    )
    # PATIENT is not a level of the Study Root model (PS3.4 C.6.2.1.1).
    _, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys("PATIENT", PatientID=""),
    )
    assert status == 0xA900
    _, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys("STUDY", StudyDate="yesterday"),
    )
    assert status == 0xA900
    # A SERIES level retrieve without SeriesInstanceUID names nothing.
    final = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("SERIES", StudyInstanceUID="1.2.3"),
        "TESTDEST",
    )
    assert final.Status == 0xA900
    assert destination.received == {}

    def get_without_series() -> int:
        contexts = [(StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian])]
        with association(listener.port, contexts) as assoc:
            statuses = [
                int(status.Status)
                for status, _ in assoc.send_c_get(
                    study_keys("SERIES", StudyInstanceUID="1.2.3"),
                    StudyRootQueryRetrieveInformationModelGet,
                )
            ]
            return statuses[-1]

    assert await scu(get_without_series) == 0xA900


async def test_find_with_no_match_is_success(start_archive: Start) -> None:
    _, listener = await start_archive()
    results, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys("STUDY", PatientID="NOBODY", StudyInstanceUID=""),
    )
    assert (results, status) == ([], 0)


async def test_eight_concurrent_senders_and_an_idle_one(start_archive: Start) -> None:
    archive, listener = await start_archive()
    studies = [ct_study(series=1, slices=4, patient_id=f"P{i}") for i in range(8)]
    idle_open = threading.Event()
    release_idle = threading.Event()

    def idle() -> bool:
        # A sender that opens an association and then does nothing must not hold up others.
        with association(listener.port, STORE_CONTEXT) as assoc:
            idle_open.set()
            release_idle.wait(60)
            return bool(assoc.is_established)

    idle_task = asyncio.create_task(scu(idle))
    assert await scu(idle_open.wait, 30)
    started = time.monotonic()
    results = await asyncio.gather(*(scu(store, listener.port, study) for study in studies))
    elapsed = time.monotonic() - started
    release_idle.set()
    assert await idle_task
    assert results == [[0] * 4] * 8
    assert elapsed < 60
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM instances") == 32


async def test_a_compressed_instance_stays_compressed_when_the_sender_offers_a_choice(
    start_archive: Start,
) -> None:
    archive, listener = await start_archive()
    source = get_testdata_file("MR_small_RLE.dcm")
    assert source is not None
    ds = pydicom.dcmread(source)
    sent = split_part10(Path(source).read_bytes())[1]  # noqa: ASYNC240 - a small test file

    def send() -> tuple[str, int]:
        # One context offering both: the archive picks the lossless compressed one, so the
        # sender need not decompress (PS3.8 9.3.3.2).
        contexts = [(MRImageStorage, [ExplicitVRLittleEndian, RLELossless])]
        with association(listener.port, contexts) as assoc:
            (accepted,) = assoc.accepted_contexts
            return str(accepted.transfer_syntax[0]), int(assoc.send_c_store(ds).Status)

    assert await scu(send) == (RLELossless, 0x0000)
    (instance,) = await archive.retriever.find_by_uids([ds.SOPInstanceUID])
    assert instance.transfer_syntax == RLELossless
    stored = split_part10(await archive.retriever.read(instance))[1]
    assert stored == sent


async def test_a_retrieve_touching_offline_storage_is_refused_until_restored(
    start_archive: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, listener = await start_archive()
    study = ct_study(series=1, slices=2)
    assert await scu(store, listener.port, study) == [0, 0]

    async def offline(instances: Any) -> None:
        raise OfflineError("2 instances in offline storage: a restore has been requested")

    monkeypatch.setattr(archive.retriever, "ensure_online", offline)

    def get() -> Dataset:
        contexts = [
            (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
        ]
        role = build_role(CTImageStorage, scp_role=True)
        with association(listener.port, contexts, ext_neg=[role]) as assoc:
            responses = list(
                assoc.send_c_get(
                    study_keys("STUDY", StudyInstanceUID=study[0].StudyInstanceUID),
                    StudyRootQueryRetrieveInformationModelGet,
                )
            )
            return responses[-1][0]

    final = await scu(get)
    # Refused: Out of resources - Unable to perform sub-operations; the PACS retries later.
    assert final.Status == 0xA702
    assert "restore" in final.ErrorComment


async def test_offline_instances_are_refused_with_a702_until_their_restores_are_done(
    start_archive: Start, destination: StorageSCP
) -> None:
    """No stand-in: a store whose cold tier is offline (like S3 GLACIER).  C-FIND says
    OFFLINE, C-GET and C-MOVE are refused with A702 naming the restore, which is queued once
    per object; after the lifecycle worker restored them, the same requests succeed."""
    from lifecycle.worker import run_once
    from tests.integration.lifecycle_support import (
        OfflineColdStore,
        jobs,
        move_to_tier,
        use_store,
    )

    archive, listener = await start_archive(
        destinations=(
            DestinationSettings(
                name="workstation", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        ),
        compression=CompressionSettings(level=0),
    )
    use_store(archive, OfflineColdStore(archive.settings.data_dir / "objects"))
    study = ct_study(series=1, slices=2)
    study_uid = study[0].StudyInstanceUID
    assert await scu(store, listener.port, study) == [0, 0]
    await move_to_tier(archive, study_uid, "cold")
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        got[str(event.request.AffectedSOPInstanceUID)] = split_part10(path.read_bytes())[1]
        path.unlink()
        return 0x0000

    def get() -> Dataset:
        contexts = [
            (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
        ]
        role = build_role(CTImageStorage, scp_role=True)
        with association(
            listener.port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
        ) as assoc:
            responses = list(
                assoc.send_c_get(
                    study_keys("STUDY", StudyInstanceUID=study_uid),
                    StudyRootQueryRetrieveInformationModelGet,
                )
            )
            return responses[-1][0]

    def availability() -> str:
        found, status = find(
            listener.port,
            StudyRootQueryRetrieveInformationModelFind,
            study_keys("STUDY", StudyInstanceUID=study_uid),
        )
        assert status == 0
        return str(found[0].InstanceAvailability)

    assert await scu(availability) == "OFFLINE"
    final = await scu(get)
    # Refused: Out of resources - Unable to perform sub-operations (PS3.4 C.4.3.1.4).
    assert final.Status == 0xA702
    assert "restore" in final.ErrorComment
    assert got == {}
    moved = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("STUDY", StudyInstanceUID=study_uid),
        "TESTDEST",
    )
    assert moved.Status == 0xA702
    assert "restore" in moved.ErrorComment
    assert destination.received == {}
    # One restore per object, however many requests asked.
    restores = await jobs(archive, "restore")
    instances = await archive.retriever.find(study_uid)
    assert sorted(j["payload"]["object_key"] for j in restores) == sorted(
        i.object_key for i in instances
    )
    assert {j["state"] for j in restores} == {"queued"}

    assert (await run_once(archive)).done["restore"] == 2
    assert await scu(availability) == "ONLINE"
    final = await scu(get)
    assert final.Status == 0x0000
    assert got == {ds.SOPInstanceUID: encoded(ds) for ds in study}


async def test_a_destination_may_query_and_retrieve_but_not_store(
    start_archive: Start, destination: StorageSCP
) -> None:
    _, listener = await start_archive(
        sources=(SourceSettings(name="HOSP1", ae_titles=("HOSP1PACS",)),),
        destinations=(
            DestinationSettings(
                name="viewer", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        ),
    )
    study = ct_study(series=1, slices=2)
    assert await scu(store, listener.port, study, "HOSP1PACS") == [0, 0]

    def find_as_viewer() -> int:
        with association(listener.port, QR, calling="TESTDEST") as assoc:
            responses = list(
                assoc.send_c_find(
                    study_keys("STUDY", StudyInstanceUID=""),
                    StudyRootQueryRetrieveInformationModelFind,
                )
            )
            return len(responses) - 1  # pending responses before the final one

    assert await scu(find_as_viewer) == 1
    (extra,) = ct_study(series=1, slices=1)
    # Refused: Not authorised (PS3.7 C.4): only sources store.
    assert await scu(store, listener.port, [extra], "TESTDEST") == [0x0124]


async def test_a_busy_port_is_a_configuration_error(archive_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = dataclasses.replace(
            archive_settings, dimse=DimseSettings(host="127.0.0.1", port=port)
        )
        archive = await Archive.open(settings)
        try:
            with pytest.raises(ConfigError, match=r"dimse\.port"):
                await DimseListener(archive).start()
        finally:
            await archive.close()


async def test_c_get_to_an_uncompressed_only_peer_decompresses_and_fails_a_corrupt_one(
    start_archive: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a requester proposing only Explicit VR LE for CT gets JPEG-LS instances
    decompressed; an instance whose frame does not decode is a failed sub-operation (its UID
    in the Failed SOP Instance UID List), logged naming the syntax, the others go on."""
    from pydicom.encaps import encapsulate, generate_frames

    from tests.integration.lifecycle_support import ingest

    archive, listener = await start_archive()
    good, bad = ct_study(series=1, slices=2, size=32)
    for ds in (good, bad):
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
    expected = good.pixel_array.copy()
    (frame,) = generate_frames(bad.PixelData, number_of_frames=1)
    bad.PixelData = encapsulate([frame[:40] + b"\x00" * 40])
    await ingest(archive, [good, bad])
    got: dict[str, Dataset] = {}

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        got[str(event.request.AffectedSOPInstanceUID)] = pydicom.dcmread(path)
        path.unlink()
        return 0x0000

    def get() -> Dataset:
        contexts = [
            (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
        ]
        role = build_role(CTImageStorage, scp_role=True)
        with association(
            listener.port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
        ) as assoc:
            assert assoc.is_established
            last = None
            for status, identifier in assoc.send_c_get(
                study_keys("STUDY", StudyInstanceUID=good.StudyInstanceUID),
                StudyRootQueryRetrieveInformationModelGet,
            ):
                last = (status, identifier)
            assert last is not None
            return last

    with caplog.at_level("WARNING"):
        status, identifier = await scu(get)
    assert status.Status == 0xB000  # some sub-operations failed
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (1, 1)
    assert identifier.FailedSOPInstanceUIDList == bad.SOPInstanceUID
    assert set(got) == {good.SOPInstanceUID}
    assert got[good.SOPInstanceUID].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (got[good.SOPInstanceUID].pixel_array == expected).all()
    assert f"cannot send in transfer syntax {ExplicitVRLittleEndian}" in caplog.text
