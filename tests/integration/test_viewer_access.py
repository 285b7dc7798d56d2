"""What a viewer in a browser relies on beyond WADO-RS instances: WADO-URI's
application/dicom (PS3.18 9), CORS for another origin, and the same access rules on frames,
bulk data and WADO-URI as on instance retrieves: restricted readers, availability, audit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lifecycle.worker import run_once
from tests.factory import ct_study
from tests.integration.lifecycle_support import (
    OfflineColdStore,
    ingest,
    jobs,
    move_to_tier,
    opened,
    use_store,
    with_lifecycle,
)
from tests.security_support import call, config_file, serving, vna
from vna.archive import Archive
from vna.config import HttpSettings, Settings, SourceSettings

pytestmark = pytest.mark.asyncio
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
SOURCES = (
    SourceSettings(name="H1", issuer_of_patient_id="HOSP1"),
    SourceSettings(name="H2", issuer_of_patient_id="HOSP2"),
)


def wado_uri(root: str, ds: object, **params: str) -> str:
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,  # type: ignore[attr-defined]
        "seriesUID": ds.SeriesInstanceUID,  # type: ignore[attr-defined]
        "objectUID": ds.SOPInstanceUID,  # type: ignore[attr-defined]
        "contentType": "application/dicom",
        **params,
    }
    return f"{root}/wado?" + "&".join(f"{k}={v}" for k, v in query.items() if v != "")


async def test_wado_uri_application_dicom_and_its_errors(archive: Archive) -> None:
    (ds,) = ct_study(series=1, slices=1, size=16)
    sent = await ingest(archive, [ds])
    async with serving(archive) as root:
        got = await call("GET", wado_uri(root, ds), accept="*/*")
        assert got.status == 200 and got.body == sent[ds.SOPInstanceUID]
        assert got.headers["Content-Type"] == "application/dicom"
        # Also beside the DICOMweb routes, and with a list of content types.
        got = await call(
            "GET",
            wado_uri(f"{root}/dicom-web", ds, contentType="application/dicom,image/jpeg"),
            accept="*/*",
        )
        assert got.body == sent[ds.SOPInstanceUID]

        for params, status, named in [
            ({"requestType": "WADO-RS"}, 400, b"requestType"),
            ({"seriesUID": ""}, 400, b"seriesUID is required"),
            ({"objectUID": "1.2.x"}, 400, b"objectUID"),
            ({"objectUID": "1.2.3.4"}, 404, b"not in the archive"),
            ({"contentType": "image/gif"}, 406, b"image/gif"),
            ({"transferSyntax": "1.2.840.10008.1.2.4.50"}, 406, b"no encoder for the lossy"),
        ]:
            got = await call("GET", wado_uri(root, ds, **params), accept="*/*")
            assert (got.status, named in got.body) == (status, True), (params, got.body)


async def test_cors_preflight_and_answers_for_configured_origins(
    archive_settings: Settings,
) -> None:
    settings = dataclasses.replace(
        archive_settings, http=HttpSettings(cors_origins=("https://viewer.example.org",))
    )
    archive = await Archive.open(settings)
    try:
        (ds,) = ct_study(series=1, slices=1, size=16)
        await ingest(archive, [ds])
        async with serving(archive) as root:
            web = f"{root}/dicom-web"
            frames = (
                f"{web}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}/frames/1"
            )
            preflight = {
                "Origin": "https://viewer.example.org",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, accept",
            }
            got = await call("OPTIONS", frames, headers=preflight)
            assert got.status == 204
            assert got.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
            assert "authorization" in got.headers["Access-Control-Allow-Headers"].lower()
            assert "GET" in got.headers["Access-Control-Allow-Methods"]

            # The real requests: answers and errors name the origin.
            origin = {"Origin": "https://viewer.example.org"}
            got = await call("GET", frames, accept=OHIF, headers=origin)
            assert got.status == 200
            assert got.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
            got = await call(
                "GET",
                f"{web}/studies/{ds.StudyInstanceUID}",
                headers=origin,
                accept='multipart/related; type="application/dicom"',
            )
            assert got.status == 200 and "Access-Control-Allow-Origin" in got.headers
            got = await call("GET", f"{web}/studies/1.2.3/metadata", headers=origin)
            assert got.status == 404 and "Access-Control-Allow-Origin" in got.headers

            # Another origin: no CORS headers, its preflight refused.
            other = {**preflight, "Origin": "https://evil.example.com"}
            assert (await call("OPTIONS", frames, headers=other)).status == 403
            got = await call("GET", frames, accept=OHIF, headers={"Origin": other["Origin"]})
            assert "Access-Control-Allow-Origin" not in got.headers
            # Not for /admin or /metrics.
            got = await call("OPTIONS", f"{root}/metrics", headers=preflight)
            assert got.status == 403
    finally:
        await archive.close()


async def test_no_cors_by_default(archive: Archive) -> None:
    async with serving(archive) as root:
        got = await call(
            "OPTIONS",
            f"{root}/dicom-web/studies",
            headers={
                "Origin": "https://viewer.example.org",
                "Access-Control-Request-Method": "GET",
            },
        )
        assert got.status == 403 and "Access-Control-Allow-Origin" not in got.headers


async def test_restricted_reader_and_audit_on_frames_bulk_and_wado_uri(
    archive_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dataclasses.replace(
        archive_settings, sources=SOURCES, http=HttpSettings(token_cache_seconds=0)
    )
    config = config_file(settings, tmp_path / "vna.toml")
    archive = await Archive.open(settings)
    try:
        (s1,) = ct_study(series=1, slices=1, size=16, patient_id="P1")
        (s2,) = ct_study(series=1, slices=1, size=16, patient_id="P2")
        await ingest(archive, [s1], SOURCES[0])
        await ingest(archive, [s2], SOURCES[1])
        code, out, err = await vna(
            capsys, config, "tokens", "create", "v1", "--role", "reader", "--read-sources", "H1"
        )
        assert code == 0, err
        token = out.strip()
        async with serving(archive) as root:

            def urls(ds: object) -> list[tuple[str, str]]:
                inst = (
                    f"{root}/dicom-web/studies/{ds.StudyInstanceUID}"  # type: ignore[attr-defined]
                    f"/series/{ds.SeriesInstanceUID}"  # type: ignore[attr-defined]
                    f"/instances/{ds.SOPInstanceUID}"  # type: ignore[attr-defined]
                )
                return [
                    (f"{inst}/frames/1", OHIF),
                    (f"{inst}/bulk/7FE00010", OHIF),
                    (wado_uri(root, ds), "*/*"),
                ]

            async with archive.db.acquire() as conn:
                before = await conn.fetchval("SELECT count(*) FROM audit")
            for url, accept in urls(s1):
                assert (await call("GET", url, token=token, accept=accept)).status == 200
            async with archive.db.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT action, study_uids, actor FROM audit ORDER BY id OFFSET $1", before
                )
            # One record per request, naming the study disclosed.
            assert [(r["action"], list(r["study_uids"]), r["actor"]) for r in rows] == [
                ("retrieve", [s1.StudyInstanceUID], "v1")
            ] * 3
            for url, accept in urls(s2):
                got = await call("GET", url, token=token, accept=accept)
                assert got.status == 404, url
            async with archive.db.acquire() as conn:
                denied = await conn.fetchval(
                    "SELECT count(*) FROM audit WHERE action = 'access-denied'"
                )
            assert denied == 3
    finally:
        await archive.close()


async def test_offline_frames_and_wado_uri_are_503_and_queue_one_restore(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 0})
    async with opened(settings) as archive:
        use_store(archive, OfflineColdStore(archive.settings.data_dir / "objects"))
        (ds,) = ct_study(series=1, slices=1, size=16)
        sent = await ingest(archive, [ds])
        async with serving(archive) as root:
            inst = (
                f"{root}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )
            # Read once while hot: the layout is known, later reads are ranged.
            assert (await call("GET", f"{inst}/frames/1", accept=OHIF)).status == 200
            await move_to_tier(archive, ds.StudyInstanceUID, "cold")
            for url, accept in [
                (f"{inst}/frames/1", OHIF),
                (f"{inst}/bulk/7FE00010", OHIF),
                (wado_uri(root, ds), "*/*"),
            ]:
                got = await call("GET", url, accept=accept)
                assert got.status == 503 and int(got.headers["Retry-After"]) > 0, url
            assert len(await jobs(archive, "restore")) == 1
            await run_once(archive)
            got = await call("GET", wado_uri(root, ds), accept="*/*")
            assert got.status == 200 and got.body == sent[ds.SOPInstanceUID]
            assert (await call("GET", f"{inst}/frames/1", accept=OHIF)).status == 200
