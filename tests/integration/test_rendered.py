"""WADO-RS rendered resources and thumbnails over real HTTP against a real archive
(PostgreSQL catalogue, filesystem store): what a viewer gets is the picture pydicom's pixels
give, at every level, with the same scope, availability and audit rules as retrieves."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.factory import split_multipart
from tests.integration.lifecycle_support import (
    OfflineColdStore,
    ingest,
    move_to_tier,
    opened,
    use_store,
    with_lifecycle,
)
from tests.phantom import smooth_ct_study
from tests.security_support import audit_rows, serving
from vna import rendering
from vna.config import Settings, SourceSettings
from vna.dicom.render import PNG, Region, RenderOptions, Window, render
from vna.security import tokens

pytestmark = pytest.mark.asyncio


async def get(url: str, accept: str | None = None, token: str | None = None):
    headers = {}
    if accept:
        headers["Accept"] = accept
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.read(), r.headers


def pixels(data: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(data)))


def url_of(root: str, ds: Dataset) -> str:
    return (
        f"{root}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def same_study(datasets: list[Dataset]) -> list[Dataset]:
    study = generate_uid()
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


async def test_instances_and_frames_render_as_pydicoms_pixels(
    archive_settings: Settings, pydicom_test_dir: Path
) -> None:
    names = ("CT_small.dcm", "MR_small_jp2klossless.dcm", "examples_palette.dcm", "rtdose.dcm")
    files = [pydicom.dcmread(pydicom_test_dir / n) for n in names]
    cr = copy.deepcopy(files[0])
    cr.PhotometricInterpretation = "MONOCHROME1"
    cr.SOPInstanceUID = generate_uid()
    cr.file_meta.MediaStorageSOPInstanceUID = cr.SOPInstanceUID
    files.append(cr)
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, files)
        for ds in files:
            status, body, headers = await get(f"{url_of(root, ds)}/rendered", "image/png")
            assert status == 200, body
            assert headers["Content-Type"] == PNG
            assert np.array_equal(pixels(body), pixels(render(ds, 0, RenderOptions(PNG))))
        # MONOCHROME1 shows inverted: the same pixels as the MONOCHROME2 original, negated.
        _, normal, _ = await get(f"{url_of(root, files[0])}/rendered", "image/png")
        _, inverted, _ = await get(f"{url_of(root, cr)}/rendered", "image/png")
        assert np.array_equal(pixels(inverted), 255 - pixels(normal))

        # Frames in the order asked for, as multipart/related of PNG; each rendered from the
        # header and its own bytes, never a read of the whole object.
        dose = files[3]

        async def whole(instance: Any) -> bytes:
            raise AssertionError(f"whole object {instance.sop_uid} read to render a frame")

        real_read = archive.retriever.read
        archive.retriever.read = whole  # type: ignore[method-assign]
        status, body, headers = await get(
            f"{url_of(root, dose)}/frames/9,2/rendered", 'multipart/related; type="image/png"'
        )
        assert status == 200
        parts = split_multipart(body, headers["Content-Type"])
        want = [render(dose, i, RenderOptions(PNG)) for i in (8, 1)]
        assert [pixels(p).tolist() for p in parts] == [pixels(w).tolist() for w in want]
        archive.retriever.read = real_read  # type: ignore[method-assign]
        # One frame, one image; a window, quality and viewport from the query.
        status, body, headers = await get(
            f"{url_of(root, files[0])}/frames/1/rendered?window=40,400&viewport=64,64",
            "image/png",
        )
        assert status == 200 and pixels(body).shape == (64, 64)
        options = RenderOptions(PNG, window=Window(40, 400), viewport=(64, 64))
        assert np.array_equal(pixels(body), pixels(render(files[0], 0, options)))
        status, body, headers = await get(f"{url_of(root, files[0])}/rendered?quality=20")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert body.startswith(b"\xff\xd8")

        status, body, _ = await get(f"{url_of(root, dose)}/frames/16/rendered", "image/png")
        assert status == 404 and b"frame 16" in body
        status, body, _ = await get(f"{url_of(root, files[0])}/rendered?window=40", "image/png")
        assert status == 400 and b"window" in body
        status, body, _ = await get(f"{url_of(root, files[0])}/rendered", "image/gif")
        assert status == 406


async def test_series_and_study_render_every_instance_and_thumbnails_are_small(
    archive_settings: Settings, pydicom_test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ct = smooth_ct_study(series=2, slices=5, size=256)
    report = pydicom.dcmread(pydicom_test_dir / "test-SR.dcm")
    report.StudyInstanceUID = ct[0].StudyInstanceUID
    report.PatientID = ct[0].PatientID
    report.PatientName = ct[0].PatientName
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, [*ct, report])
        study = f"{root}/dicom-web/studies/{ct[0].StudyInstanceUID}"
        series = f"{study}/series/{ct[0].SeriesInstanceUID}"
        status, body, headers = await get(f"{series}/rendered", "multipart/related; type=image/png")
        assert status == 200
        parts = split_multipart(body, headers["Content-Type"])
        want = [pixels(render(ds, 0, RenderOptions(PNG))) for ds in ct[:5]]
        assert [pixels(p).tolist() for p in parts] == [w.tolist() for w in want]
        # The study's images, the report left out (it has nothing to render).
        status, body, headers = await get(f"{study}/rendered")
        assert status == 200 and 'type="image/jpeg"' in headers["Content-Type"]
        assert len(split_multipart(body, headers["Content-Type"])) == 10
        # The report itself does not render: 406 with the reason, never a 500.
        status, body, _ = await get(f"{url_of(root, report)}/rendered", "image/jpeg")
        assert status == 406 and b"Pixel Data" in body

        # Thumbnails: one small JPEG; the series' is its middle instance.
        renders = 0
        real_render = rendering.render

        def counted(*args: Any, **kwargs: Any) -> bytes:
            nonlocal renders
            renders += 1
            return real_render(*args, **kwargs)

        monkeypatch.setattr(rendering, "render", counted)
        for url in (f"{study}/thumbnail", f"{series}/thumbnail", f"{series}/thumbnail"):
            status, body, headers = await get(url)
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            image = Image.open(io.BytesIO(body))
            assert max(image.size) <= 128
        assert renders == 1, "a series thumbnail is rendered once, then cached"
        status, body, _ = await get(f"{series}/thumbnail", "image/png")
        assert status == 200
        middle = render(ct[2], 0, RenderOptions(PNG, viewport=(128, 128)))
        assert np.array_equal(pixels(body), pixels(middle))
        status, body, _ = await get(f"{url_of(root, ct[7])}/thumbnail", "image/png")
        assert status == 200 and pixels(body).shape == (128, 128)


async def test_an_encapsulated_pdf_renders_as_application_pdf(archive_settings: Settings) -> None:
    ds = smooth_ct_study(series=1, slices=1, size=32)[0]
    for name in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, name)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality = "DOC"
    document = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, [ds])
        status, body, headers = await get(f"{url_of(root, ds)}/rendered")
        assert status == 200 and headers["Content-Type"] == "application/pdf"
        assert body == document
        status, _, _ = await get(f"{url_of(root, ds)}/rendered", "image/jpeg")
        assert status == 406


async def test_reader_scope_offline_and_audit_apply_to_rendered_and_thumbnails(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 0})
    h1, h2 = (smooth_ct_study(patient_id=p, series=1, slices=2, size=32) for p in ("A", "B"))
    async with opened(settings) as archive, serving(archive) as root:
        await ingest(archive, h1, SourceSettings(name="H1", issuer_of_patient_id="H1"))
        await ingest(archive, h2, SourceSettings(name="H2", issuer_of_patient_id="H2"))
        async with archive.db.transaction() as conn:
            made = await tokens.create_token(
                conn, name="h1-viewer", role="reader", read_sources=["H1"], actor="test"
            )
        token = made.secret
        before = len(await audit_rows(archive))
        status, _, _ = await get(f"{url_of(root, h1[0])}/thumbnail", token=token)
        assert status == 200
        status, _, _ = await get(f"{url_of(root, h2[0])}/rendered", token=token)
        assert status == 404  # another hospital's study is absent to this reader
        status, _, _ = await get(f"{root}/dicom-web/studies/{h2[0].StudyInstanceUID}/thumbnail")
        assert status == 401
        rows = (await audit_rows(archive))[before:]
        shown = [r for r in rows if r["action"] == "retrieve"]
        assert len(shown) == 1 and shown[0]["detail"]["rendition"] == "thumbnail"
        assert list(shown[0]["study_uids"]) == [h1[0].StudyInstanceUID]

        # Offline: 503 with Retry-After, never a picture and never a 500.
        use_store(archive, OfflineColdStore(archive.settings.data_dir / "objects"))
        await move_to_tier(archive, h1[0].StudyInstanceUID, "cold")
        for what in ("thumbnail", "rendered"):
            status, _, headers = await get(f"{url_of(root, h1[1])}/{what}", token=token)
            assert status == 503 and int(headers["Retry-After"]) > 0


def wado_uri(root: str, ds: Dataset, **params: str) -> str:
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        **params,
    }
    return f"{root}/wado?" + "&".join(f"{k}={v}" for k, v in query.items())


async def test_wado_uri_answers_jpeg_and_png_with_its_parameters(
    archive_settings: Settings, pydicom_test_dir: Path
) -> None:
    ct = pydicom.dcmread(pydicom_test_dir / "CT_small.dcm")  # 128 x 128
    dose = pydicom.dcmread(pydicom_test_dir / "rtdose.dcm")  # 15 frames
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, [ct, dose])
        before = len(await audit_rows(archive))
        # No contentType: an image answers image/jpeg (PS3.18 9.1.2.1.5).
        status, body, headers = await get(wado_uri(root, ct))
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert body.startswith(b"\xff\xd8")
        status, body, headers = await get(wado_uri(root, ct, contentType="image/png"))
        assert np.array_equal(pixels(body), pixels(render(ct, 0, RenderOptions(PNG))))
        status, body, _ = await get(
            wado_uri(
                root,
                ct,
                contentType="image/png",
                windowCenter="40",
                windowWidth="400",
                rows="64",
                columns="64",
                region="0.0,0.0,1.0,0.5",
            )
        )
        assert status == 200
        want = render(
            ct,
            0,
            RenderOptions(
                PNG, window=Window(40, 400), viewport=(64, 64), region=Region(0.0, 0.0, 1.0, 0.5)
            ),
        )
        assert pixels(body).shape == (32, 64)
        assert np.array_equal(pixels(body), pixels(want))
        status, body, _ = await get(wado_uri(root, dose, contentType="image/png", frameNumber="9"))
        assert np.array_equal(pixels(body), pixels(render(dose, 8, RenderOptions(PNG))))
        shown = [r for r in (await audit_rows(archive))[before:] if r["action"] == "retrieve"]
        assert len(shown) == 4 and all(r["detail"]["protocol"] == "wado-uri" for r in shown)

        for params, status_wanted, named in [
            ({"frameNumber": "16", "contentType": "image/png"}, 404, b"frame 16"),
            ({"windowCenter": "40"}, 400, b"windowWidth"),
            ({"region": "0.5,0.5,0.2,1"}, 400, b"region"),
            ({"rows": "0"}, 400, b"rows"),
        ]:
            status, body, _ = await get(
                wado_uri(root, ct if "frameNumber" not in params else dose, **params)
            )
            assert (status, named in body) == (status_wanted, True), (params, body)


async def test_a_syntax_no_decoder_reads_is_406_with_the_reason(
    archive_settings: Settings, pydicom_test_dir: Path
) -> None:
    # 12-bit JPEG Extended: none of the permissively licensed decoders reads it.
    ds = pydicom.dcmread(pydicom_test_dir / "JPGExtended.dcm")
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, [ds])
        for what in ("rendered", "thumbnail", "frames/1/rendered"):
            status, body, _ = await get(f"{url_of(root, ds)}/{what}")
            assert status == 406, (what, body)
            assert b"JPEG Extended" in body and b"12-bit" in body
        status, body, _ = await get(wado_uri(root, ds, contentType="image/jpeg"))
        assert status == 406 and b"12-bit" in body


def _video(syntax: str, stream: bytes) -> Dataset:
    from pydicom.encaps import encapsulate

    ds = smooth_ct_study(series=1, slices=1, size=32)[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
    ds.Modality = "XC"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.NumberOfFrames = 30
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([stream[: len(stream) // 2], stream[len(stream) // 2 :]])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


async def test_a_video_renders_as_its_own_stream_or_406_naming_its_type(
    archive_settings: Settings,
) -> None:
    # PS3.18 8.3.5.1: a video instance renders as itself (video/mp4 for MPEG-4 AVC/H.264,
    # video/mpeg for MPEG2), the encapsulated stream as stored.
    h264 = b"\x00\x00\x00\x01\x67\x64\x00\x1f" + bytes(range(256)) * 41  # even length
    mpeg2 = b"\x00\x00\x01\xb3" + bytes(range(255, -1, -1)) * 23
    avc = _video("1.2.840.10008.1.2.4.102", h264)
    m2v = _video("1.2.840.10008.1.2.4.100", mpeg2)
    async with opened(archive_settings) as archive, serving(archive) as root:
        await ingest(archive, [avc, m2v])
        for accept in ("video/mp4", None, "*/*", "video/*, image/jpeg;q=0.5"):
            status, body, headers = await get(f"{url_of(root, avc)}/rendered", accept)
            assert status == 200, (accept, body[:200])
            assert headers["Content-Type"] == "video/mp4" and body == h264, accept
        status, body, headers = await get(f"{url_of(root, m2v)}/rendered", "video/mpeg")
        assert (status, headers["Content-Type"], body) == (200, "video/mpeg", mpeg2)
        for accept in ("image/jpeg", "video/mpeg"):
            status, body, _ = await get(f"{url_of(root, avc)}/rendered", accept)
            assert status == 406 and b"renders as video/mp4" in body, (accept, body)
        rows = await audit_rows(archive, "sop_uid = $1", avc.SOPInstanceUID)
        assert len([r for r in rows if r["detail"].get("rendition") == "rendered"]) == 4
