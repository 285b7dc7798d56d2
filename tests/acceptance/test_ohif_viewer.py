"""The OHIF viewer (v3, npm package ``@ohif/app``, its built ``dist/``) shows what the archive
holds, in a real browser (Debian's headless Chromium driven by playwright; no browser is
downloaded).

The archive runs as users run it (``vna serve``); the test serves OHIF's built site from a
small static server whose ``/dicom-web`` is a plain proxy to the archive, so OHIF talks
DICOMweb to its own origin, as a deployment behind one reverse proxy would.  For each study
the test opens ``/viewer?StudyInstanceUIDs=...`` and asserts what a user would notice: the
viewport canvas shows the image (compared with a rendering made from the stored file with
pydicom's pixels), and no request OHIF made was answered with a 4xx or 5xx.

``make ohif`` (run by ``make test``) fetches the package into ``.cache/ohif``; ``.ci/run``
installs chromium when it runs as root.  Without either, the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pydicom
import pytest
from aiohttp import web
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.acceptance.conftest import VNA, ArchiveProcess
from tests.conftest import free_port
from tests.factory import part10, stow_body
from tests.phantom import smooth_ct_study
from vna.dicom.render import RenderOptions, render

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: Where ``make ohif`` unpacks the viewer (VNA_OHIF_DIST overrides).
OHIF_DIST = Path(os.environ.get("VNA_OHIF_DIST", REPO / ".cache" / "ohif" / "package" / "dist"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds OHIF may take to show a study's first image.
SHOW_TIMEOUT = 40

#: The data source a deployment would write in OHIF's app-config.js (README: "Viewers").
APP_CONFIG = """
window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  defaultDataSourceName: 'vna',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'vna',
      configuration: {
        friendlyName: 'VNA',
        name: 'vna',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        // The study browser's pictures come from the archive's /thumbnail (PS3.18 10.4.1.1.4).
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video,pdf',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


def _missing() -> str | None:
    if not (OHIF_DIST / "index.html").is_file():
        return f"the OHIF viewer is not unpacked at {OHIF_DIST} (run `make ohif`)"
    if not Path(CHROMIUM).is_file():
        return "chromium is not installed (apt-get install chromium; .ci/run does as root)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the test extras)"
    return None


@dataclass
class Case:
    """One study to open, and the renderings of its images made from the stored files."""

    name: str
    datasets: list[Dataset]
    expected: list[np.ndarray[Any, Any]] = field(default_factory=list)

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)


# --- the studies ---------------------------------------------------------------------------------


def _fresh_uids(ds: Dataset, study_uid: str, series_uid: str) -> Dataset:
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = ds.get("PatientID") or "OHIF"
    ds.PatientName = ds.get("PatientName") or "VIEWER^TEST"
    return ds


def _ct(name: str, slices: int = 6) -> Case:
    study = smooth_ct_study(series=1, slices=slices, size=256, patient_id=name.upper())
    for ds in study:
        # A soft-tissue window as a CT carries one (PS3.3 C.11.2), in HU.
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
    return Case(name, study)


def _cr() -> Case:
    (ds,) = smooth_ct_study(series=1, slices=1, size=256, patient_id="CR1", modality="CR")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.PhotometricInterpretation = "MONOCHROME1"
    for name in ("ImagePositionPatient", "SliceThickness"):
        delattr(ds, name)
    return Case("mono1-cr", [ds])


def _us_multiframe(frames: int = 8, size: int = 160) -> Case:
    (ds,) = smooth_ct_study(series=1, slices=1, size=size, patient_id="US1", modality="US")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    for name in ("ImagePositionPatient", "SliceThickness", "PixelSpacing"):
        delattr(ds, name)
    y, x = np.mgrid[0:size, 0:size]
    cine = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        sector = ((x - size / 2) ** 2 + (y - 10) ** 2) < (size * 0.8) ** 2
        cine[f, ..., 0] = np.where(sector, (x * 255 // size + f * 8) % 256, 0)
        cine[f, ..., 1] = np.where(sector, y * 255 // size, 0)
        cine[f, ..., 2] = np.where(sector & (x > size // 2), 200, 30)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.NumberOfFrames = frames
    ds.FrameTime = 40
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.PixelData = cine.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return Case("rgb-us-multiframe", [ds])


def _pydicom_file(name: str, case: str) -> Case:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    return Case(case, [_fresh_uids(ds, generate_uid(), generate_uid())])


def _cases() -> list[Case]:
    cases = [
        _ct("ct-16bit"),
        _cr(),
        _us_multiframe(),
        _pydicom_file("MR_small_jp2klossless.dcm", "jpeg2000-lossless"),
        _pydicom_file("MR_small_jpeg_ls_lossless.dcm", "jpeg-ls-lossless"),
        _ct("ct-compressed-at-rest"),
    ]
    for case in cases:
        case.expected = [
            np.asarray(Image.open(io.BytesIO(render(ds, 0, RenderOptions("image/png")))))
            for ds in case.datasets
        ]
    return cases


# --- the servers -------------------------------------------------------------------------------


def _site_files() -> tuple[Path, set[str]]:
    dist = OHIF_DIST.resolve()
    return dist, {str(p.relative_to(dist)) for p in dist.rglob("*") if p.is_file()}


@asynccontextmanager
async def viewer_site(archive_base: str) -> AsyncIterator[str]:
    """OHIF's dist/ with our app-config.js, and /dicom-web proxied to the archive."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")
        }
        async with session.request(
            request.method,
            f"{archive_base}{request.rel_url}",
            headers=headers,
            data=await request.read() if request.can_read_body else None,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Type", "Content-Encoding", "Retry-After", "Content-Location"):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def app_config(request: web.Request) -> web.Response:
        return web.Response(text=APP_CONFIG, content_type="application/javascript")

    dist, files = _site_files()

    async def site(request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"]
        # Anything else is one of the single-page app's own routes (/viewer, /).
        return web.FileResponse(dist / (name if name in files else "index.html"))

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/dicom-web/{tail:.*}", proxy)
    app.router.add_route("*", "/wado", proxy)
    app.router.add_get("/app-config.js", app_config)
    app.router.add_get("/{path:.*}", site)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


def _stow(url: str, datasets: list[Dataset]) -> None:
    import requests

    body, content_type = stow_body([part10(ds) for ds in datasets])
    reply = requests.post(
        f"{url}/studies", data=body, headers={"Content-Type": content_type}, timeout=120
    )
    assert reply.status_code == 200, reply.text


def _compress_at_rest(server: ArchiveProcess) -> None:
    """The lifecycle worker's compression job (zstd at rest), as `vna lifecycle run --once`."""
    done = subprocess.run(
        [str(VNA), "lifecycle", "run", "--once"],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


# --- comparing what the viewer shows -------------------------------------------------------------


def _gray(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    image = image.astype(np.float64)
    return image[..., :3].mean(axis=2) if image.ndim == 3 else image


def resemblance(shown: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> float:
    """Correlation of the canvas with the expected rendering fitted into it as a viewer fits
    an image (aspect kept, centred): 1.0 is the same picture, about 0 an unrelated one."""
    canvas = _gray(shown)
    height, width = canvas.shape
    picture = Image.fromarray(np.clip(_gray(expected), 0, 255).astype(np.uint8))
    scale = min(width / picture.width, height / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    fitted = np.asarray(picture.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    region = canvas[top : top + size[1], left : left + size[0]]
    if region.std() == 0 or fitted.std() == 0:
        return 0.0
    return float(np.corrcoef(region.ravel(), fitted.ravel())[0, 1])


_CANVAS_PIXELS = """
() => {
  const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas')]
    .filter(c => c.width > 0 && c.height > 0);
  if (!canvases.length) return null;
  return canvases[0].toDataURL('image/png');
}
"""


async def _shown(page: Any) -> np.ndarray[Any, Any] | None:
    data = await page.evaluate(_CANVAS_PIXELS)
    if not data:
        return None
    raw = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# --- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
async def test_ohif_shows_every_kind_of_study(archive_process: ArchiveProcess) -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    cases = _cases()
    for case in cases:
        await asyncio.to_thread(_stow, archive_process.url, case.datasets)
    await asyncio.to_thread(_compress_at_rest, archive_process)

    failures: list[str] = []
    async with viewer_site(archive_process.base) as site, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            for case in cases:
                failures += await _open_study(browser, site, case)
        finally:
            await browser.close()
    assert not failures, "\n".join(failures)


async def _open_study(browser: Any, site: str, case: Case) -> list[str]:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    bad: list[str] = []
    page.on(
        "response",
        lambda r: (
            bad.append(f"{r.status} {r.request.method} {r.url}")
            if r.url.startswith(site) and r.status >= 400
            else None
        ),
    )
    page.on(
        "requestfailed",
        lambda r: (
            bad.append(f"failed {r.method} {r.url}: {r.failure}")
            if r.url.startswith(site)
            else None
        ),
    )
    problems: list[str] = []
    try:
        await page.goto(f"{site}/viewer?StudyInstanceUIDs={case.study_uid}")
        best = 0.0
        shown = None
        for _ in range(SHOW_TIMEOUT * 2):
            shown = await _shown(page)
            if shown is not None and _gray(shown).std() > 2:
                best = max(resemblance(shown, e) for e in case.expected)
                if best > 0.9:
                    break
            await asyncio.sleep(0.5)
        if shown is None or _gray(shown).std() <= 2:
            problems.append(f"{case.name}: the viewport stayed blank")
        elif best <= 0.9:
            Image.fromarray(shown).save(f"/tmp/ohif-{case.name}.png")
            problems.append(
                f"{case.name}: the viewport does not show the study's image"
                f" (best correlation {best:.2f}; canvas saved to /tmp/ohif-{case.name}.png)"
            )
        await asyncio.sleep(1)  # let the study's remaining requests (thumbnails) finish
    finally:
        await page.close()
    problems += [f"{case.name}: OHIF got {b}" for b in bad]
    return problems


if __name__ == "__main__":  # pragma: no cover - a developer's quick look
    sys.exit(pytest.main([__file__, "-q", "-s"]))
