"""Reads that heal themselves (issue 21): an object damaged on the active store (bytes flipped,
cut short, deleted) with a verified replica is served bit-exact by WADO-RS, frames, C-MOVE and
C-GET; the damage is audited, counted and shown by `vna dr status`, and the lifecycle workers
put a good copy back.  Without a replica the answer is a clear error, never other bytes.

On the filesystem store and on S3 (moto in server mode), uncompressed and compressed at rest
(the seekable zstandard form, whose frames are ranged reads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pydicom
import pytest
from aiohttp import web
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from lifecycle.dr import report as dr_report
from lifecycle.dr import status as dr_status
from lifecycle.worker import run_once
from tests.conftest import STORE_KINDS, free_port
from tests.factory import split_multipart
from tests.integration.lifecycle_support import fetch, ingest, with_lifecycle
from tests.integration.test_dimse import (
    StorageSCP,
    association,
    move,
    scu,
    split_part10,
    study_keys,
)
from tests.phantom import smooth_ct_study
from vna.archive import Archive
from vna.config import DestinationSettings, DimseSettings, ReplicaSettings, Settings
from vna.dicom.render import render
from vna.errors import StorageError
from vna.gateway.dimse import DimseListener
from vna.gateway.web import create_app
from vna.recovery.policy import Outcome
from vna.recovery.sites import Expected, digest_object
from vna.storage.base import ObjectStore
from vna.storage.filesystem import FilesystemStore

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DAMAGES = ("flipped", "truncated", "deleted")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def second_s3_url(s3_endpoint: str) -> str:
    name = f"vna-test-replica-{os.getpid()}-{id(object())}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}?endpoint_url={s3_endpoint}&region=us-east-1"


@dataclasses.dataclass
class Running:
    archive: Archive
    base: str
    dimse_port: int
    destination: StorageSCP


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """The archive with its DICOMweb and DIMSE gateways, and a storage SCP as C-MOVE
    destination."""
    destination = StorageSCP()
    settings = dataclasses.replace(
        settings,
        dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
        destinations=(
            DestinationSettings(
                name="ws", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        ),
    )
    archive = await Archive.open(settings)
    listener = DimseListener(archive)
    await listener.start()
    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Running(archive, f"http://127.0.0.1:{port}/dicom-web", listener.port, destination)
    finally:
        await runner.cleanup()
        await listener.stop(grace_seconds=5)
        await archive.close()
        destination.stop()


async def damage(store: ObjectStore, key: str, how: str) -> None:
    """Damage the stored object behind the archive's back, as a failing disk or an operator
    would."""
    if how == "deleted":
        await store.delete(key)
        return
    data = b"".join([c async for c in store.iter_chunks(key)])
    if how in ("flipped", "flipped near the end"):
        at = len(data) // 2 if how == "flipped" else len(data) - 10
        bad = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]
    else:
        bad = data[: len(data) - 100]
    await _overwrite(store, key, bad)


async def forget_damage(archive: Archive) -> None:
    """Forget what reads found so far, so that the next protocol finds the damage itself."""
    async with archive.db.acquire() as conn:
        await conn.execute("DELETE FROM read_repairs")
    retriever = archive.retriever
    retriever._damaged.clear()
    retriever._damaged_read_at = -1e9
    retriever._seek_tables.clear()
    retriever._layouts.clear()


async def wado(http: aiohttp.ClientSession, url: str) -> list[bytes]:
    async with http.get(url, headers={"Accept": ACCEPT}) as resp:
        assert resp.status == 200, await resp.text()
        return split_multipart(await resp.read(), resp.headers["Content-Type"])


async def frame(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(f"{url}/frames/1", headers={"Accept": FRAME_ACCEPT}) as resp:
        if resp.status != 200:
            return resp.status, await resp.read()
        (part,) = split_multipart(await resp.read(), resp.headers["Content-Type"])
        return 200, part


def get(port: int, keys: Dataset) -> tuple[Dataset, dict[str, bytes]]:
    """C-GET over the requester's association; the final status and what arrived."""
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        got[str(event.request.AffectedSOPInstanceUID)] = split_part10(path.read_bytes())[1]
        path.unlink()
        return 0x0000

    contexts = [
        (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ]
    role = build_role(CTImageStorage, scp_role=True)
    with association(
        port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
    ) as assoc:
        assert assoc.is_established
        last = None
        for status, _ in assoc.send_c_get(keys, StudyRootQueryRetrieveInformationModelGet):
            last = status
        assert last is not None
        return last, got


def data_set(part10: bytes) -> bytes:
    return split_part10(part10)[1]


def pixels(part10: bytes) -> bytes:
    return bytes(pydicom.dcmread(io.BytesIO(part10)).PixelData)


@pytest.mark.parametrize(
    ("store_kind", "compressed"),
    [("file", False), ("file", True), ("s3", False), ("s3", True)],
)
async def test_damaged_objects_are_served_from_the_replica_and_repaired(
    archive_settings: Settings,
    tmp_path: Path,
    store_kind: str,
    compressed: bool,
    request: pytest.FixtureRequest,
) -> None:
    if store_kind == "s3":
        primary = request.getfixturevalue("s3_url")
        replica = request.getfixturevalue("second_s3_url")
    else:
        primary, replica = "", (tmp_path / "replica").as_uri()
    settings = dataclasses.replace(
        archive_settings, storage_url=primary, replicas=(ReplicaSettings("dr", replica),)
    )
    settings = with_lifecycle(settings, compression={"level": 3 if compressed else 0})
    async with running(settings) as node:
        archive = node.archive
        study = smooth_ct_study(series=1, slices=3, size=64)
        study_uid, series_uid = study[0].StudyInstanceUID, study[0].SeriesInstanceUID
        sent = await ingest(archive, study)
        await run_once(archive)  # compress (if asked), then replicate
        rows = await fetch(archive, "SELECT sop_uid, object_key, compression FROM instances")
        keys = {r["sop_uid"]: r["object_key"] for r in rows}
        assert {r["compression"] for r in rows} == {"zstd" if compressed else "none"}
        copies = await fetch(archive, "SELECT object_key FROM replicas WHERE store = 'dr'")
        assert {c["object_key"] for c in copies} == set(keys.values())
        uids = [str(ds.SOPInstanceUID) for ds in study]
        for uid, how in zip(uids, DAMAGES, strict=True):
            await damage(archive.store, keys[uid], how)

        async with aiohttp.ClientSession() as http:
            # WADO-RS of the whole study: every instance bit-exact, from the replica.
            parts = await wado(http, f"{node.base}/studies/{study_uid}")
            assert sorted(map(sha, parts)) == sorted(map(sha, sent.values()))
            found = await fetch(archive, "SELECT * FROM read_repairs ORDER BY object_key")
            assert {(r["object_key"], r["served_from"]) for r in found} == {
                (k, "dr") for k in keys.values()
            }
            outcomes = {r["object_key"]: r["outcome"] for r in found}
            assert outcomes[keys[uids[2]]] == "missing"
            assert outcomes[keys[uids[0]]] == outcomes[keys[uids[1]]] == "corrupt"
            audit = await fetch(archive, "SELECT * FROM audit WHERE action = 'damaged-copy'")
            assert {a["sop_uid"] for a in audit} == set(uids)
            assert {a["study_uid"] for a in audit} == {study_uid}
            metrics = archive.metrics.render().decode()
            assert 'vna_damaged_reads_total{outcome="corrupt",store="primary"} 2.0' in metrics
            assert 'vna_damaged_reads_total{outcome="missing",store="primary"} 1.0' in metrics
            # The damage is recorded: a second read goes to the replica at once.
            parts = await wado(http, f"{node.base}/studies/{study_uid}")
            assert sorted(map(sha, parts)) == sorted(map(sha, sent.values()))

            # Frames, found damaged by themselves.
            await forget_damage(archive)
            for uid in uids:
                url = f"{node.base}/studies/{study_uid}/series/{series_uid}/instances/{uid}"
                status, data = await frame(http, url)
                assert status == 200, data
                assert data == pixels(sent[uid])
            assert len(await fetch(archive, "SELECT * FROM read_repairs")) == 3

        # C-MOVE and C-GET, each finding the damage itself.
        await forget_damage(archive)
        final = await scu(
            move,
            node.dimse_port,
            StudyRootQueryRetrieveInformationModelMove,
            study_keys("STUDY", StudyInstanceUID=study_uid),
            "TESTDEST",
        )
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
        assert node.destination.received == {u: data_set(d) for u, d in sent.items()}
        await forget_damage(archive)
        final, got = await scu(
            get, node.dimse_port, study_keys("STUDY", StudyInstanceUID=study_uid)
        )
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
        assert got == {u: data_set(d) for u, d in sent.items()}

        # `vna dr status` counts the damaged copies awaiting repair.
        text = dr_report.render_status(await dr_status.collect_status(archive))
        assert "read repairs   store primary: 3 damaged copies awaiting repair" in text

        # The lifecycle workers put good copies back on the active store.
        jobs = await fetch(archive, "SELECT * FROM jobs WHERE kind = 'repair-object'")
        assert len(jobs) == 3
        await run_once(archive)
        for row in rows:
            expected = Expected(
                row["object_key"], row["compression"], *(await _digest_of(archive, row))
            )
            digest = await digest_object(archive.store, row["object_key"], row["compression"])
            assert digest.judge(expected) is Outcome.VERIFIED
        found = await fetch(archive, "SELECT * FROM read_repairs")
        assert {(r["resolution"], r["repaired_from"]) for r in found} == {("repaired", "dr")}
        repaired = await fetch(archive, "SELECT * FROM audit WHERE action = 'object-repaired'")
        assert {a["sop_uid"] for a in repaired} == set(uids)
        text = dr_report.render_status(await dr_status.collect_status(archive))
        assert "0 damaged copies awaiting repair, 3 repaired from a replica" in text
        # And reads are served by the active store again, with no new damage found.
        archive.retriever._damaged_read_at = -1e9
        for uid in uids:
            (instance,) = await archive.retriever.find_by_uids([uid])
            assert await archive.retriever.read(instance) == sent[uid]
        assert len(await fetch(archive, "SELECT * FROM read_repairs")) == 3


async def _digest_of(archive: Archive, row: dict[str, Any]) -> tuple[str, int]:
    (r,) = await fetch(
        archive, "SELECT sha256, size FROM instances WHERE object_key = $1", row["object_key"]
    )
    return r["sha256"], r["size"]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_without_a_replica_a_damaged_object_is_a_clear_error(
    archive_settings: Settings,
) -> None:
    async with running(with_lifecycle(archive_settings, compression={"level": 0})) as node:
        archive = node.archive
        study = smooth_ct_study(series=1, slices=2, size=64)
        study_uid, series_uid = study[0].StudyInstanceUID, study[0].SeriesInstanceUID
        sent = await ingest(archive, study)
        bad, good = (str(ds.SOPInstanceUID) for ds in study)
        (row,) = await fetch(archive, "SELECT object_key FROM instances WHERE sop_uid = $1", bad)
        await damage(archive.store, row["object_key"], "flipped")

        url = f"{node.base}/studies/{study_uid}/series/{series_uid}/instances/{bad}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Accept": ACCEPT}) as resp:
                assert resp.status == 500
                assert "not the catalogued content" in await resp.text()
            status, body = await frame(http, url)
            assert status == 500 and b"not the catalogued content" in body
            # The other instance is unaffected.
            good_url = url.replace(bad, good)
            assert await wado(http, good_url) == [sent[good]]

        final, got = await scu(
            get,
            node.dimse_port,
            study_keys("STUDY", StudyInstanceUID=study_uid),
        )
        assert final.NumberOfFailedSuboperations == 1
        assert final.NumberOfCompletedSuboperations == 1
        assert got == {good: data_set(sent[good])}

        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert found["served_from"] is None and found["outcome"] == "corrupt"
        assert found["detections"] >= 2
        assert len(await fetch(archive, "SELECT * FROM audit WHERE action = 'damaged-copy'")) == 1
        # Nothing to repair from: no job.
        assert await fetch(archive, "SELECT * FROM jobs WHERE kind = 'repair-object'") == []


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_damage_found_mid_stream_cuts_the_answer_and_the_retry_is_healed(
    archive_settings: Settings, tmp_path: Path
) -> None:
    """An object larger than the read-ahead, damaged near its end: the first WADO-RS answer
    has started and is cut short (never the whole damaged object); the client's retry is
    served from the replica."""
    settings = dataclasses.replace(
        with_lifecycle(archive_settings, compression={"level": 0}),
        replicas=(ReplicaSettings("dr", (tmp_path / "replica").as_uri()),),
    )
    async with running(settings) as node:
        archive = node.archive
        study = smooth_ct_study(series=1, slices=1, size=1600)  # 5 MB of pixels
        sent = await ingest(archive, study)
        await run_once(archive)
        (row,) = await fetch(archive, "SELECT object_key, size FROM instances")
        assert row["size"] > 4 << 20
        await damage(archive.store, row["object_key"], "flipped near the end")
        # C-GET has sent nothing of the instance when the damage shows: it reads it again,
        # from the replica, within the same sub-operation.
        study_uid = study[0].StudyInstanceUID
        final, got = await scu(
            get, node.dimse_port, study_keys("STUDY", StudyInstanceUID=study_uid)
        )
        assert final.Status == 0x0000
        assert got == {u: data_set(d) for u, d in sent.items()}
        await forget_damage(archive)
        url = f"{node.base}/studies/{study_uid}"
        ds = study[0]
        uri = (
            f"{node.base.removesuffix('/dicom-web')}/wado?requestType=WADO&studyUID={study_uid}"
            f"&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}"
            "&contentType=application/dicom"
        )
        async with aiohttp.ClientSession() as http:
            # WADO-URI: the answer is cut short, and the retry served from the replica.
            with pytest.raises(aiohttp.ClientPayloadError):
                async with http.get(uri) as resp:
                    assert resp.status == 200
                    await resp.read()
            async with http.get(uri) as resp:
                assert resp.status == 200 and await resp.read() == sent[str(ds.SOPInstanceUID)]
            # WADO-RS the same.
            await forget_damage(archive)
            with pytest.raises(aiohttp.ClientPayloadError):
                async with http.get(url, headers={"Accept": ACCEPT}) as resp:
                    assert resp.status == 200
                    await resp.read()
            parts = await wado(http, url)
        assert parts == list(sent.values())
        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert found["outcome"] == "corrupt" and found["served_from"] is None
        # Another node on the same catalogue and store knows it too: its first read goes to
        # the replica (reading the damaged copy whole would fail past the read-ahead).
        other = await Archive.open(node.archive.settings)
        try:
            (instance,) = await other.retriever.find(study_uid)
            assert await other.retriever.read(instance) == next(iter(sent.values()))
            # It found no damage itself.
            assert "vna_damaged_reads_total{" not in other.metrics.render().decode()
        finally:
            await other.close()
        await run_once(archive)
        assert await archive.store.get_bytes(row["object_key"]) == next(iter(sent.values()))


async def test_a_store_failing_for_a_moment_is_served_from_the_replica_then_found_intact(
    archive_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        with_lifecycle(archive_settings, compression={"level": 0}),
        replicas=(ReplicaSettings("dr", (tmp_path / "replica").as_uri()),),
    )
    async with running(settings) as node:
        archive = node.archive
        study = smooth_ct_study(series=1, slices=1, size=64)
        sent = await ingest(archive, study)
        await run_once(archive)
        store = archive.store

        def failing(key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
            raise StorageError(f"filesystem store primary: read failed: {key}: I/O error")

        store.iter_chunks = failing  # type: ignore[method-assign]
        try:
            async with aiohttp.ClientSession() as http:
                parts = await wado(http, f"{node.base}/studies/{study[0].StudyInstanceUID}")
        finally:
            del store.iter_chunks
        assert parts == list(sent.values())
        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert (found["outcome"], found["served_from"]) == ("unreadable", "dr")
        # The repair job reads the copy back: it is intact, nothing is rewritten.
        await run_once(archive)
        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert found["resolution"] == "intact" and found["repaired_from"] is None
        (audit,) = await fetch(archive, "SELECT * FROM audit WHERE action = 'object-repaired'")
        assert audit["detail"]["resolution"] == "intact"
        assert (
            'vna_object_repairs_total{resolution="intact",store="primary"} 1.0'
            in archive.metrics.render().decode()
        )


def multi_frame(frames: int = 4, size: int = 64) -> Dataset:
    """An uncompressed multi-frame CT image: each frame a ranged read of its object."""
    slices = smooth_ct_study(series=1, slices=frames, size=size)
    ds = slices[0]
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(bytes(s.PixelData) for s in slices)
    return ds


@pytest.mark.parametrize("store_kind", STORE_KINDS)
@pytest.mark.parametrize("with_replica", [True, False])
async def test_a_damaged_frame_of_an_uncompressed_multi_frame_object_is_never_served(
    archive_settings: Settings, tmp_path: Path, with_replica: bool
) -> None:
    """A frame is one ranged read, which the object's SHA-256 cannot check: the CRC-32 its
    layout recorded at ingest does.  A byte flipped inside frame 3: with a replica the frame
    comes from it bit-exact and the copy is repaired; without, frame 3 is a clear error while
    the undamaged frames are still served."""
    replicas = (ReplicaSettings("dr", (tmp_path / "replica").as_uri()),) if with_replica else ()
    settings = dataclasses.replace(archive_settings, replicas=replicas)
    async with running(with_lifecycle(settings, compression={"level": 0})) as node:
        archive = node.archive
        ds = multi_frame()
        sent = await ingest(archive, [ds])
        await run_once(archive)  # replicate (when there is a replica)
        uid = str(ds.SOPInstanceUID)
        (row,) = await fetch(archive, "SELECT object_key, sha256 FROM instances")
        original = sent[uid]
        frame_length = len(ds.PixelData) // 4
        frame_3_at = len(original) - len(ds.PixelData) + 2 * frame_length
        at = frame_3_at + frame_length // 2
        bad = original[:at] + bytes([original[at] ^ 0x5A]) + original[at + 1 :]
        store = archive.store
        await _overwrite(store, row["object_key"], bad)
        await forget_damage(archive)

        url = f"{node.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        url += f"/instances/{uid}/frames"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/3", headers={"Accept": FRAME_ACCEPT}) as resp:
                body = await resp.read()
                if with_replica:
                    assert resp.status == 200
                    (part,) = split_multipart(body, resp.headers["Content-Type"])
                    assert part == original[frame_3_at : frame_3_at + frame_length]
                else:
                    assert resp.status == 500 and b"CRC-32" in body
            async with http.get(f"{url}/1", headers={"Accept": FRAME_ACCEPT}) as resp:
                assert resp.status == 200
                (part,) = split_multipart(await resp.read(), resp.headers["Content-Type"])
                first = len(original) - len(ds.PixelData)
                assert part == original[first : first + frame_length]
        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert found["outcome"] == "corrupt"
        assert found["served_from"] == ("dr" if with_replica else None)
        if with_replica:
            await run_once(archive)  # the repair job puts the good copy back
            stored = b"".join([c async for c in store.iter_chunks(row["object_key"])])
            assert sha(stored) == row["sha256"]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
@pytest.mark.parametrize("with_replica", [True, False])
async def test_a_damaged_slice_is_never_rendered(
    archive_settings: Settings, tmp_path: Path, with_replica: bool
) -> None:
    """/rendered of a single-frame slice reads its header and its frame in one ranged read,
    the frame's part checked by its CRC-32.  A byte flipped in the pixels: with a replica the
    image is rendered from the replica's bytes (the same image as from the bytes sent);
    without, a clear error, never an image of damaged pixels."""
    replicas = (ReplicaSettings("dr", (tmp_path / "replica").as_uri()),) if with_replica else ()
    settings = dataclasses.replace(archive_settings, replicas=replicas)
    async with running(with_lifecycle(settings, compression={"level": 0})) as node:
        archive = node.archive
        ds, good = smooth_ct_study(series=1, slices=2, size=64)
        sent = await ingest(archive, [ds, good])
        await run_once(archive)  # replicate (when there is a replica)
        url = f"{node.base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        keys = {
            r["sop_uid"]: r["object_key"]
            for r in await fetch(archive, "SELECT sop_uid, object_key FROM instances")
        }
        uid = str(ds.SOPInstanceUID)
        original = sent[uid]
        at = len(original) - len(ds.PixelData) // 2
        bad = original[:at] + bytes([original[at] ^ 0x5A]) + original[at + 1 :]
        await _overwrite(archive.store, keys[uid], bad)
        await forget_damage(archive)

        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{url}/instances/{uid}/rendered", headers={"Accept": "image/jpeg"}
            ) as resp:
                body = await resp.read()
                if with_replica:
                    assert resp.status == 200
                    assert body == _rendered(original, archive)
                else:
                    assert resp.status == 500 and b"CRC-32" in body
            good_uid = str(good.SOPInstanceUID)
            async with http.get(
                f"{url}/instances/{good_uid}/rendered", headers={"Accept": "image/jpeg"}
            ) as resp:
                assert resp.status == 200
                assert await resp.read() == _rendered(sent[good_uid], archive)
        (found,) = await fetch(archive, "SELECT * FROM read_repairs")
        assert found["outcome"] == "corrupt"
        assert found["served_from"] == ("dr" if with_replica else None)


def _rendered(part10: bytes, archive: Archive) -> bytes:
    """The JPEG the archive's renderer makes of an instance's bytes (the default options)."""
    return render(pydicom.dcmread(io.BytesIO(part10)), 0, archive.renderer.options("image/jpeg"))


async def _overwrite(store: ObjectStore, key: str, data: bytes) -> None:
    if isinstance(store, FilesystemStore):
        path = store.root / key
        path.unlink()
        path.write_bytes(data)
    else:
        await store._client.put_object(  # type: ignore[attr-defined]
            Bucket=store.bucket,  # type: ignore[attr-defined]
            Key=store._key(key),  # type: ignore[attr-defined]
            Body=data,
        )
