"""Compression at rest with an image codec (issue 18): every instance comes back exactly as
received (SHA-256 equal to the file sent) after the lifecycle job, over WADO-RS and DIMSE
C-GET, frame by frame, after DR replication (to S3 on moto) and after a catalogue rebuild
from that replica; fixity runs pass on both stores; a file whose pixel data has junk in the
bits above Bits Stored is never altered: it is stored with zstd and counted in
``vna lifecycle status``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import io
import struct
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore

from lifecycle import status as lifecycle_status
from lifecycle.dr import catalogue_rebuild as rebuild
from lifecycle.dr import fixity
from lifecycle.worker import run_once
from tests.factory import part10, split_multipart
from tests.integration.lifecycle_support import fetch, opened, with_lifecycle
from tests.phantom import dicom_date, phantom_pixels, smooth_ct_study
from tests.security_support import serving
from vna.archive import Archive
from vna.config import (
    DEFAULT_SOURCE,
    DimseSettings,
    ReplicaSettings,
    Settings,
    TieringRuleSettings,
)
from vna.dicom import pixel_codecs
from vna.dicom.render import render
from vna.gateway.dimse import DimseListener
from vna.ingest.pipeline import Sender

pytestmark = pytest.mark.asyncio
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTETS = "multipart/related; type=application/octet-stream; transfer-syntax=*"
#: Rows and columns of the multi-frame image.
MULTI = 128
CODECS = [
    "jpeg-ls",
    "jpeg2000",
    pytest.param(
        "htj2k",
        marks=pytest.mark.skipif(
            not pixel_codecs.htj2k_encoder_available(),
            reason="HTJ2K encoding needs imagecodecs",
        ),
    ),
]


def noisy(pixels: bytes, rng: np.random.Generator) -> bytes:
    """Phantom pixels with scanner noise in the air too, as a real CT has (exact zeros around
    the body would let zstd beat the image codecs, and the lifecycle keep zstd)."""
    values = np.frombuffer(pixels, dtype="<u2").astype(np.int32) + 30
    values += rng.normal(0, 5, values.shape).astype(np.int32)
    return np.clip(values, 0, 4095).astype("<u2").tobytes()


def ct_images(slices: int = 2, size: int = 128) -> list[Dataset]:
    study = smooth_ct_study(series=1, slices=slices, size=size)
    rng = np.random.default_rng(3)
    for ds in study:
        ds.PixelData = noisy(ds.PixelData, rng)
    return study


def multiframe_phantom(frames: int = 3, size: int = MULTI) -> Dataset:
    (ds,) = smooth_ct_study(series=1, slices=1, size=size)
    rng = np.random.default_rng(7)
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(noisy(phantom_pixels(size, i, rng), rng) for i in range(frames))
    return ds


def junk_in_high_bits() -> Dataset:
    """12 bits stored, and some values with bits 12-15 set (an overlay or a modality's padding):
    no lossless image codec of 12-bit samples can give these bytes back."""
    (ds,) = smooth_ct_study(series=1, slices=1, size=64)
    pixels = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    pixels[::7] |= 0xA000
    ds.PixelData = pixels.tobytes()
    return ds


async def ingest_bytes(archive: Archive, files: dict[str, bytes]) -> None:
    sender = Sender(source=DEFAULT_SOURCE, protocol="import", actor="test")
    for data in files.values():
        path = archive.incoming / f"{uuid.uuid4().hex}.dcm"
        Path(path).write_bytes(data)  # noqa: ASYNC240 - a test
        await archive.ingester.ingest_file(path, sender)


def corpus(pydicom_test_dir: Path) -> tuple[dict[str, bytes], str, Dataset]:
    """SOP UID -> the exact bytes sent; the junk instance's UID; the multi-frame data set."""
    files: dict[str, bytes] = {}
    for name in ("CT_small.dcm", "MR_small.dcm"):
        data = (pydicom_test_dir / name).read_bytes()
        files[str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)] = data
    for ds in ct_images():
        files[str(ds.SOPInstanceUID)] = part10(ds)
    multi = multiframe_phantom()
    files[str(multi.SOPInstanceUID)] = part10(multi)
    junk = junk_in_high_bits()
    files[str(junk.SOPInstanceUID)] = part10(junk)
    return files, str(junk.SOPInstanceUID), multi


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def wado_digests(root: str, study_uids: set[str]) -> dict[str, str]:
    """SHA-256 of every instance WADO-RS returns for these studies, by SOP Instance UID."""
    out: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for uid in study_uids:
            async with http.get(
                f"{root}/dicom-web/studies/{uid}", headers={"Accept": ACCEPT}
            ) as resp:
                assert resp.status == 200, await resp.text()
                parts = split_multipart(await resp.read(), resp.headers["Content-Type"])
            for part in parts:
                sop = str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)
                out[sop] = sha(part)
    return out


def data_set_bytes(data: bytes) -> bytes:
    """A Part 10 file without its preamble and File Meta Information: what DIMSE carries."""
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def c_get(port: int, study_uid: str) -> tuple[int, dict[str, bytes]]:
    """C-GET of a study with pynetdicom: the final status and the data sets received."""
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        path = Path(event.dataset_path)
        got[str(event.request.AffectedSOPInstanceUID)] = data_set_bytes(path.read_bytes())
        path.unlink()
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="VNA", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        last = None
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status is not None and "Status" in status:
                last = int(status.Status)
    finally:
        assoc.release()
    assert last is not None
    return last, got


@pytest.mark.parametrize("codec", CODECS)
async def test_image_codec_at_rest_returns_the_bytes_received(
    archive_settings: Settings, pydicom_test_dir: Path, s3_url: str, codec: str
) -> None:
    settings = dataclasses.replace(
        with_lifecycle(
            archive_settings,
            compression={"codec": codec, "level": 3, "min_size": 1024},
            lifecycle={"delete_grace_seconds": 0},
        ),
        replicas=(ReplicaSettings("dr", s3_url),),
        dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
    )
    files, junk_uid, multi = corpus(pydicom_test_dir)
    digests = {uid: sha(data) for uid, data in files.items()}
    async with opened(settings) as archive:
        assert archive.sites is not None
        await ingest_bytes(archive, files)
        await run_once(archive)
        rows = {r["sop_uid"]: r for r in await fetch(archive, "SELECT * FROM instances")}
        studies = {r["study_uid"] for r in await fetch(archive, "SELECT study_uid FROM studies")}

        # Every image in the codec's pack, smaller than zstd would make it; the junk one in zstd.
        for uid, row in rows.items():
            assert row["sha256"] == digests[uid]
            if uid == junk_uid:
                assert row["compression"] == "zstd"
                assert row["object_key"].endswith(".szst")
            else:
                assert row["compression"] == codec, uid
                assert row["object_key"].endswith(".vpx")
                assert row["stored_size"] < row["size"]
        status = await lifecycle_status.collect(archive.db, settings, dt.date.today())
        (fallback,) = status["compression"]["fallbacks"]
        assert fallback["codec"] == codec and fallback["instances"] == 1
        assert "above Bits Stored" in fallback["reason"]
        text = lifecycle_status.render_text(status)
        assert f"not {codec} (1 instance, kept in zstd or as received): values use bits" in text
        assert status["compression"]["by_codec"][codec]["instances"] == len(files) - 1

        async with serving(archive) as root:
            # WADO-RS: the very bytes received.
            assert await wado_digests(root, studies) == digests
            # Frames: each decoded alone, equal to the frame received.
            frame = MULTI * MULTI * 2
            url = (
                f"{root}/dicom-web/studies/{multi.StudyInstanceUID}/series/"
                f"{multi.SeriesInstanceUID}/instances/{multi.SOPInstanceUID}"
            )
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{url}/frames/3,1", headers={"Accept": OCTETS}) as resp,
            ):
                assert resp.status == 200
                parts = split_multipart(await resp.read(), resp.headers["Content-Type"])
            assert parts == [multi.PixelData[2 * frame :], multi.PixelData[:frame]]
            # Rendered from the stored form (a slice's header and frame rebuilt in one span, a
            # later frame of the multi-frame alone): the picture of the bytes received.
            options = archive.renderer.options("image/jpeg")
            async with aiohttp.ClientSession() as http:
                for uid, data in files.items():
                    ds = pydicom.dcmread(io.BytesIO(data))
                    base = (
                        f"{root}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                        f"{ds.SeriesInstanceUID}/instances/{uid}"
                    )
                    for number in (1, 3) if uid == str(multi.SOPInstanceUID) else (1,):
                        async with http.get(
                            f"{base}/frames/{number}/rendered", headers={"Accept": "image/jpeg"}
                        ) as resp:
                            assert resp.status == 200, (uid, number)
                            assert await resp.read() == render(ds, number - 1, options)

        # The codec's own codestream, without decoding, for transcoding on retrieve.
        (found,) = await archive.retriever.find(
            str(multi.StudyInstanceUID), str(multi.SeriesInstanceUID), str(multi.SOPInstanceUID)
        )
        stored = await archive.retriever.stored_frame(found, 2)
        assert stored is not None
        syntax, codestream = stored
        info = pixel_codecs.PixelInfo(MULTI, MULTI, 1, 16, 12, 0, "MONOCHROME2")
        assert (
            pixel_codecs.decode_frame(codestream, info, syntax)
            == multi.PixelData[frame : 2 * frame]
        )

        # DIMSE C-GET: the data sets received.
        listener = DimseListener(archive)
        await listener.start()
        try:
            for study_uid in studies:
                final, got = await asyncio.to_thread(c_get, listener.port, study_uid)
                assert final == 0x0000
                for uid, data_set in got.items():
                    assert data_set == data_set_bytes(files[uid]), uid
            assert sum(1 for r in rows.values()) == len(files)
        finally:
            await listener.stop(grace_seconds=5)

        # Fixity on the active store and on the S3 replica the lifecycle copied to.
        active = await fixity.verify(archive.db, archive.sites, every=True, actor="test")
        assert active.ok and active.verified == len(files)
        replica = await fixity.verify(
            archive.db, archive.sites, every=True, store_name="dr", actor="test"
        )
        assert replica.ok and replica.verified == len(files)

        # The catalogue lost: rebuilt from the S3 replica, the same forms and the same bytes.
        async with archive.db.acquire() as conn:
            await conn.execute(
                "TRUNCATE patients, studies, series, instances, instance_versions, conflicts,"
                " jobs, replicas, study_retention RESTART IDENTITY CASCADE"
            )
        report = await rebuild.rebuild(
            archive.db,
            archive.sites,
            archive.sites.get("dr"),
            scratch_dir=archive.incoming,
            actor="test",
        )
        assert report.failed_count == 0 and report.instances == len(files)
        again = {r["sop_uid"]: r for r in await fetch(archive, "SELECT * FROM instances")}
        assert {u: r["compression"] for u, r in again.items()} == {
            u: r["compression"] for u, r in rows.items()
        }
        async with serving(archive) as root:
            assert await wado_digests(root, studies) == digests


async def test_a_tiering_rule_re_encodes_the_studies_it_moves(
    archive_settings: Settings, pydicom_test_dir: Path
) -> None:
    """zstd for recent studies, JPEG-LS for the cold tier: the old study's objects are
    re-encoded as they move, still byte-exact; the recent one keeps zstd; the junk image
    keeps its form and is counted."""
    today = dt.date.today()
    rules = (
        TieringRuleSettings(tier="cold", name="archive", min_study_age_days=730, codec="jpeg-ls"),
    )
    settings = with_lifecycle(
        archive_settings, tiering_rules=rules, lifecycle={"delete_grace_seconds": 0}
    )
    old = ct_images()
    for ds in old:
        ds.StudyDate = dicom_date(today - dt.timedelta(days=1000))
    junk = junk_in_high_bits()
    junk.StudyInstanceUID, junk.StudyDate = old[0].StudyInstanceUID, old[0].StudyDate
    recent = ct_images()
    for ds in recent:
        ds.StudyDate = dicom_date(today)
    files = {str(ds.SOPInstanceUID): part10(ds) for ds in [*old, junk, *recent]}
    async with opened(settings) as archive:
        await ingest_bytes(archive, files)
        await run_once(archive)
        await run_once(archive)  # the deletions of the replaced objects
        rows = {r["sop_uid"]: r for r in await fetch(archive, "SELECT * FROM instances")}
        cold_root = archive.settings.data_dir / "objects-cold"
        for ds in old:
            row = rows[str(ds.SOPInstanceUID)]
            assert (row["tier"], row["compression"]) == ("cold", "jpeg-ls")
            assert (cold_root / row["object_key"]).is_file()
        assert rows[str(junk.SOPInstanceUID)]["tier"] == "cold"
        assert rows[str(junk.SOPInstanceUID)]["compression"] in ("none", "zstd")
        for ds in recent:
            row = rows[str(ds.SOPInstanceUID)]
            assert (row["tier"], row["compression"]) == ("hot", "zstd")
        status = await lifecycle_status.collect(archive.db, settings, today)
        assert [(f["codec"], f["instances"]) for f in status["compression"]["fallbacks"]] == [
            ("jpeg-ls", 1)
        ]
        for instance in await archive.retriever.find(str(old[0].StudyInstanceUID)):
            assert await archive.retriever.read(instance) == files[instance.sop_uid]
        async with serving(archive) as root:
            studies = {str(old[0].StudyInstanceUID), str(recent[0].StudyInstanceUID)}
            assert await wado_digests(root, studies) == {u: sha(d) for u, d in files.items()}


async def test_on_s3_a_frame_is_ranged_reads_of_its_own_codestream(
    archive_settings: Settings, pydicom_test_dir: Path, s3_url: str
) -> None:
    """The archive's store on S3 (moto): packs written there, whole retrieves byte-exact, and
    a frame read with ranged GETs only (footer, index, the frame's codestream)."""
    settings = with_lifecycle(
        archive_settings,
        storage_url=s3_url,
        compression={"codec": "jpeg-ls", "min_size": 1024},
        lifecycle={"delete_grace_seconds": 0},
    )
    multi = multiframe_phantom()
    files = {str(multi.SOPInstanceUID): part10(multi)}
    ct = (pydicom_test_dir / "CT_small.dcm").read_bytes()
    files[str(pydicom.dcmread(io.BytesIO(ct)).SOPInstanceUID)] = ct
    async with opened(settings) as archive:
        await ingest_bytes(archive, files)
        await run_once(archive)
        rows = await fetch(archive, "SELECT compression FROM instances")
        assert {r["compression"] for r in rows} == {"jpeg-ls"}
        (found,) = await archive.retriever.find(
            str(multi.StudyInstanceUID), str(multi.SeriesInstanceUID), str(multi.SOPInstanceUID)
        )
        whole_reads: list[str] = []
        saved = archive.store.iter_chunks

        def counting(key: str, chunk_size: int = 1 << 20) -> Any:
            whole_reads.append(key)
            return saved(key, chunk_size)

        archive.store.iter_chunks = counting  # type: ignore[method-assign]
        try:
            frame = MULTI * MULTI * 2
            assert await archive.retriever.frames(found, [2]) == [
                multi.PixelData[frame : 2 * frame]
            ]
            assert whole_reads == []
        finally:
            archive.store.iter_chunks = saved  # type: ignore[method-assign]
        async with serving(archive) as root:
            studies = {
                r["study_uid"] for r in await fetch(archive, "SELECT study_uid FROM studies")
            }
            assert await wado_digests(root, studies) == {u: sha(d) for u, d in files.items()}


async def test_an_object_too_large_for_an_image_codec_stays_in_zstd(
    archive_settings: Settings, pydicom_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle import compression

    monkeypatch.setattr(compression, "MAX_IMAGE_OBJECT", 10_000)  # CT_small is 39 kB
    settings = with_lifecycle(archive_settings, compression={"codec": "jpeg-ls"})
    ct = (pydicom_test_dir / "CT_small.dcm").read_bytes()
    async with opened(settings) as archive:
        await ingest_bytes(archive, {"ct": ct})
        await run_once(archive)
        (row,) = await fetch(archive, "SELECT compression FROM instances")
        assert row["compression"] == "zstd"
        status = await lifecycle_status.collect(archive.db, settings, dt.date.today())
        (fallback,) = status["compression"]["fallbacks"]
        assert "larger than 1 GiB" in fallback["reason"]
        (instance,) = await archive.retriever.find_by_uids(
            [str(pydicom.dcmread(io.BytesIO(ct)).SOPInstanceUID)]
        )
        assert await archive.retriever.read(instance) == ct
