"""DICOMweb against a real archive (PostgreSQL catalogue, filesystem store) over real HTTP."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import aiohttp
import pydicom
import pytest

from tests.conftest import STORE_KINDS
from tests.factory import ct_study, part10, split_multipart, stow_body
from vna.archive import Archive

pytestmark = pytest.mark.asyncio

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


async def stow(url: str, parts: list[bytes], study: str | None = None) -> aiohttp.ClientResponse:
    body, content_type = stow_body(parts)
    target = f"{url}/studies" + (f"/{study}" if study else "")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(target, data=body, headers={"Content-Type": content_type})
        await resp.read()
        return resp


async def get(url: str, accept: str = ACCEPT_DICOM) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Accept": accept}) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


async def count(archive: Archive, table: str) -> int:
    async with archive.db.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def object_keys(archive: Archive) -> list[str]:
    """The objects of the archive's store (filesystem or S3)."""
    return [key async for key in archive.store.iter_keys("sha256/")]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_store_and_retrieve_multi_series_study_bit_exact(archive, dicomweb):
    study = ct_study(series=2, slices=3)
    sent = [part10(ds) for ds in study]
    resp = await stow(dicomweb, sent)
    assert resp.status == 200
    body = await resp.json(content_type=None)
    refs = body["00081199"]["Value"]
    assert {r["00081155"]["Value"][0] for r in refs} == {ds.SOPInstanceUID for ds in study}
    assert all(r["00081190"]["Value"][0].startswith(dicomweb) for r in refs)

    status, payload, ctype = await get(f"{dicomweb}/studies/{study[0].StudyInstanceUID}")
    assert status == 200 and ctype.startswith("multipart/related")
    assert sorted(split_multipart(payload, ctype)) == sorted(sent)

    series_uid = study[3].SeriesInstanceUID
    status, payload, ctype = await get(
        f"{dicomweb}/studies/{study[0].StudyInstanceUID}/series/{series_uid}"
    )
    assert sorted(split_multipart(payload, ctype)) == sorted(sent[3:])

    one = study[4]
    status, payload, ctype = await get(
        f"{dicomweb}/studies/{one.StudyInstanceUID}/series/{one.SeriesInstanceUID}"
        f"/instances/{one.SOPInstanceUID}"
    )
    assert split_multipart(payload, ctype) == [sent[4]]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_identical_resend_stores_nothing_new_and_succeeds(archive, dicomweb):
    sent = [part10(ds) for ds in ct_study(series=1, slices=4)]
    assert (await stow(dicomweb, sent)).status == 200
    before = (await count(archive, "instances"), len(await object_keys(archive)))
    again = await stow(dicomweb, sent)
    assert again.status == 200
    refs = (await again.json(content_type=None))["00081199"]["Value"]
    assert len(refs) == 4
    assert (await count(archive, "instances"), len(await object_keys(archive))) == before
    # And nothing is queued twice for the lifecycle engine.
    assert await count(archive, "jobs") == 4


async def test_same_uid_with_other_content_is_refused_with_reason(archive, dicomweb):
    ds = ct_study(series=1, slices=1)[0]
    assert (await stow(dicomweb, [part10(ds)])).status == 200
    ds.PixelData = bytes(len(ds.PixelData))
    resp = await stow(dicomweb, [part10(ds)])
    assert resp.status == 409
    failed = (await resp.json(content_type=None))["00081198"]["Value"][0]
    assert failed["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0x0111]
    assert "different content" in resp.headers["Warning"]


async def test_mixed_request_stores_good_parts_and_reports_bad_ones(archive, dicomweb):
    good = ct_study(series=1, slices=2)
    truncated = part10(ct_study(series=1, slices=1)[0])[:-1000]
    parts = [part10(good[0]), b"garbage, not DICOM at all", truncated, part10(good[1])]
    resp = await stow(dicomweb, parts)
    assert resp.status == 202
    body = await resp.json(content_type=None)
    assert len(body["00081199"]["Value"]) == 2
    reasons = sorted(f["00081197"]["Value"][0] for f in body["00081198"]["Value"])
    assert reasons == [0xC000, 0xC000]
    warnings = " ".join(resp.headers.getall("Warning"))
    assert "not a DICOM Part 10 file" in warnings and "truncated" in warnings
    assert await count(archive, "instances") == 2
    assert await count(archive, "studies") == 1
    # Refusals are audited too.
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit WHERE outcome = 'failure'") == 2
    # No leftovers in the incoming directory.
    assert list(archive.incoming.iterdir()) == []


async def test_same_study_under_another_patient_is_refused(archive, dicomweb):
    first = ct_study(series=1, slices=1, patient_id="A1")
    assert (await stow(dicomweb, [part10(first[0])])).status == 200
    other = ct_study(series=1, slices=1, patient_id="B2", study_uid=first[0].StudyInstanceUID)
    resp = await stow(dicomweb, [part10(other[0])])
    assert resp.status == 409
    assert "archived under patient 'A1'" in resp.headers["Warning"]
    assert await count(archive, "patients") == 1


async def test_store_to_a_named_study_refuses_instances_of_other_studies(archive, dicomweb):
    a = ct_study(series=1, slices=1)[0]
    b = ct_study(series=1, slices=1)[0]
    resp = await stow(dicomweb, [part10(a), part10(b)], study=a.StudyInstanceUID)
    assert resp.status == 202
    body = await resp.json(content_type=None)
    assert body["00081198"]["Value"][0]["00081155"]["Value"] == [b.SOPInstanceUID]
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
async def test_wrong_content_type_is_refused_clearly(archive, dicomweb, content_type, status):
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{dicomweb}/studies", data=b"xx", headers={"Content-Type": content_type}
        )
        assert resp.status == status
        assert (await resp.text()).strip()


async def test_instance_over_the_size_limit_is_refused(archive_settings, tmp_path):
    import dataclasses

    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    settings = dataclasses.replace(
        archive_settings,
        ingest=dataclasses.replace(archive_settings.ingest, max_instance_bytes=4096),
    )
    opened = await Archive.open(settings)
    runner = web.AppRunner(create_app(opened))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        resp = await stow(f"http://127.0.0.1:{port}/dicom-web", [part10(ct_study()[0])])
        assert resp.status == 409
        body = await resp.json(content_type=None)
        assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        assert "ingest.max_instance_bytes" in resp.headers["Warning"]
    finally:
        await runner.cleanup()
        await opened.close()


async def test_retrieve_errors_are_specific(archive, dicomweb):
    ds = ct_study(series=1, slices=1)[0]
    await stow(dicomweb, [part10(ds)])
    status, body, _ = await get(f"{dicomweb}/studies/1.2.3.999")
    assert status == 404 and b"not in the archive" in body
    status, body, _ = await get(f"{dicomweb}/studies/not-a-uid")
    assert status == 400 and b"not a valid UID" in body
    status, body, _ = await get(
        f"{dicomweb}/studies/{ds.StudyInstanceUID}",
        accept=(
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
        ),
    )
    # JPEG baseline is lossy: no encoder for it, named in the 406.
    assert status == 406 and b"1.2.840.10008.1.2.4.50" in body and b"no encoder" in body
    status, _, _ = await get(f"{dicomweb}/studies/{ds.StudyInstanceUID}", accept="image/jpeg")
    assert status == 406


async def test_metadata_is_dicom_json_with_pixel_data_by_reference(archive, dicomweb):
    study = ct_study(series=1, slices=2, patient_name="ÖZ^ÄDA")
    study[0].SpecificCharacterSet = study[1].SpecificCharacterSet = "ISO_IR 192"
    await stow(dicomweb, [part10(ds) for ds in study])
    status, body, ctype = await get(
        f"{dicomweb}/studies/{study[0].StudyInstanceUID}/metadata", accept="application/dicom+json"
    )
    assert status == 200 and ctype.startswith("application/dicom+json")
    import json

    items = json.loads(body)
    assert len(items) == 2
    assert items[0]["00100010"]["Value"][0]["Alphabetic"] == "ÖZ^ÄDA"
    # Pixel Data is not inlined: a BulkDataURI stands for it (PS3.18 F.2.6).
    for item in items:
        assert set(item["7FE00010"]) == {"vr", "BulkDataURI"}
        assert item["7FE00010"]["BulkDataURI"].startswith(dicomweb)
    assert {item["00080018"]["Value"][0] for item in items} == {ds.SOPInstanceUID for ds in study}


async def test_health_and_metrics(archive, dicomweb):
    root = dicomweb.removesuffix("/dicom-web")
    await stow(dicomweb, [part10(ds) for ds in ct_study(series=1, slices=2)])
    await stow(dicomweb, [b"junk"])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{root}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{root}/metrics") as r:
            text = await r.text()
    assert 'vna_instances_stored_total{protocol="stow-rs",source="DEFAULT"} 2.0' in text
    assert 'vna_instance_failures_total{protocol="stow-rs",reason="InvalidInstance"} 1.0' in text
    assert "vna_catalogue_instances 2.0" in text
    assert "vna_http_request_seconds_bucket" in text


def _partition_without_collisions(files: list[Path]) -> list[list[tuple[Path, pydicom.Dataset]]]:
    """pydicom's test files reuse UIDs across variants; group them so that no group holds two
    files with the same SOP Instance UID or the same study under two patients."""
    groups: list[list[tuple[Path, pydicom.Dataset]]] = []
    keys: list[tuple[set[str], dict[str, str]]] = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sop, study, patient = ds.SOPInstanceUID, ds.StudyInstanceUID, str(ds.get("PatientID", ""))
        for group, (sops, studies) in zip(groups, keys, strict=True):
            if sop not in sops and studies.get(study, patient) == patient:
                group.append((f, ds))
                sops.add(sop)
                studies[study] = patient
                break
        else:
            groups.append([(f, ds)])
            keys.append(({sop}, {study: patient}))
    return groups


#: pydicom test files that are broken on purpose, or lack what an archive must index.
BROKEN = {
    "ExplVR_BigEndNoMeta.dcm": "not a DICOM Part 10 file",
    "ExplVR_LitEndNoMeta.dcm": "not a DICOM Part 10 file",
    "no_meta.dcm": "not a DICOM Part 10 file",
    "rtstruct.dcm": "not a DICOM Part 10 file",
    "MR_truncated.dcm": "truncated",
    "rtplan_truncated.dcm": "truncated",
    "meta_missing_tsyntax.dcm": "transfer syntax unknown",
    "badVR.dcm": "cannot convert header",
    "JPEGLSNearLossless_08.dcm": "StudyInstanceUID is missing",
    "SC_rgb_jls_lossy_line.dcm": "StudyInstanceUID is missing",
    "UN_sequence.dcm": "SOPClassUID is missing",
}


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_pydicom_test_files_round_trip_or_fail_with_reason(
    archive_settings, pydicom_test_dir, database_url, tmp_path
):
    """Every transfer syntax pydicom ships comes back bit-exact; broken files are refused
    with a readable reason and leave nothing in the catalogue."""
    import dataclasses

    import asyncpg
    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    all_files = sorted(pydicom_test_dir.glob("*.dcm"))
    readable: list[Path] = []
    refused: dict[str, str] = {}
    for f in all_files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            ok = all(k in ds for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
        except Exception:
            ok = False
        if ok and f.name not in BROKEN:
            readable.append(f)
    assert len(readable) > 40

    groups = _partition_without_collisions(readable)
    stored_syntaxes: set[str] = set()
    for index, group in enumerate([*groups, []]):
        # Each group goes to an empty archive (a fresh database and store).
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "TRUNCATE instances, series, studies, patients, jobs, audit"
                " RESTART IDENTITY CASCADE"
            )
        finally:
            await conn.close()
        settings = dataclasses.replace(archive_settings, data_dir=tmp_path / f"d{index}")
        opened = await Archive.open(settings)
        runner = web.AppRunner(create_app(opened))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/dicom-web"
        try:
            if not group:  # the last round: the broken files
                for name in sorted(BROKEN):
                    path = pydicom_test_dir / name
                    if not path.exists():
                        continue
                    resp = await stow(url, [path.read_bytes()])
                    assert resp.status == 409, name
                    refused[name] = resp.headers["Warning"]
                assert await count(opened, "instances") == 0
                assert await count(opened, "patients") == 0
                continue
            for path, _ds in group:
                resp = await stow(url, [path.read_bytes()])
                assert resp.status == 200, (path.name, resp.headers.get("Warning"))
            by_study: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
            for path, ds in group:
                by_study[ds.StudyInstanceUID].append((path, ds))
            for study_uid, members in by_study.items():
                status, payload, ctype = await get(f"{url}/studies/{study_uid}")
                assert status == 200
                assert sorted(split_multipart(payload, ctype)) == sorted(
                    p.read_bytes() for p, _ in members
                )
                stored_syntaxes.update(str(ds.file_meta.TransferSyntaxUID) for _, ds in members)
        finally:
            await runner.cleanup()
            await opened.close()

    for name, expected in BROKEN.items():
        if name in refused:
            assert expected in refused[name], (name, refused[name])
    # Implicit and explicit VR, big endian, deflate, JPEG, JPEG-LS, JPEG 2000, RLE at least.
    for ts in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
    ):
        assert ts in stored_syntaxes, ts


async def test_qido_over_http_names_bad_parameters_and_pages(archive, dicomweb):
    for i in range(3):
        study = ct_study(series=1, slices=1, patient_id="Q1", study_date=f"2024010{i + 1}")
        await stow(dicomweb, [part10(ds) for ds in study])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dicomweb}/studies?StudyDate=2024-13-45") as r:
            assert r.status == 400
            assert "StudyDate" in await r.text()
        async with http.get(f"{dicomweb}/studies?NoSuchAttribute=1") as r:
            assert r.status == 400
            assert "NoSuchAttribute" in await r.text()
        async with http.get(f"{dicomweb}/studies?PatientID=Q1&limit=2") as r:
            assert r.status == 200
            page = await r.json(content_type=None)
            assert len(page) == 2
            assert "more results" in r.headers["Warning"]
            # Newest first, with a RetrieveURL that WADO-RS answers.
            assert page[0]["00080020"]["Value"] == ["20240103"]
            url = page[0]["00081190"]["Value"][0]
        async with http.get(url, headers={"Accept": ACCEPT_DICOM}) as r:
            assert r.status == 200
        async with http.get(f"{dicomweb}/studies?PatientID=Q1&limit=2&offset=2") as r:
            assert len(await r.json(content_type=None)) == 1
            assert "Warning" not in r.headers
        async with http.get(f"{dicomweb}/studies?PatientID=NOBODY") as r:
            assert r.status == 200 and await r.json(content_type=None) == []
