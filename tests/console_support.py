"""Helpers of the web console's tests: an archive with two hospitals, an admin token and a
reader restricted to one hospital, served with the console on a free port; a signed-in HTTP
client (aiohttp, for the fast tests; the browser tests are in tests/acceptance)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from pydicom.dataset import Dataset

from tests.conftest import free_port
from tests.factory import ct_study, part10
from vna.archive import Archive
from vna.config import AdminSettings, ReplicaSettings, Settings, SourceSettings, UiSettings
from vna.ingest.pipeline import Sender
from vna.security import tokens

ADMIN_TOKEN = "vna_console-test-admin-token-0123456789abcdefghijkl"
VIEWER_URL = "https://ohif.example/viewer?StudyInstanceUIDs={study}"
#: HOSP1 keeps both versions of an instance sent again with other content (a conflict).
HOSP1 = SourceSettings(
    name="HOSP1", ae_titles=("HOSP1PACS",), issuer_of_patient_id="HOSP1", on_conflict="keep-both"
)
HOSP2 = SourceSettings(name="HOSP2", ae_titles=("HOSP2PACS",), issuer_of_patient_id="HOSP2")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        sources=(HOSP1, HOSP2),
        admin=AdminSettings(hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()),
        ui=UiSettings(viewer_url=VIEWER_URL, page_size=10),
        # A disaster-recovery replica (a folder): the study page shows verified copies on it.
        # Tests that declare their own keep theirs.
        replicas=settings.replicas
        or (ReplicaSettings("dr1", (settings.data_dir.parent / "dr1").resolve().as_uri()),),
    )


@dataclass
class ConsoleSite:
    archive: Archive
    base: str
    admin_token: str = ADMIN_TOKEN
    #: A reader token restricted to HOSP1's studies.
    reader_token: str = ""
    #: Study UIDs stored per source.
    studies: dict[str, list[str]] = field(default_factory=dict)
    #: The datasets stored, per source.
    datasets: dict[str, list[Dataset]] = field(default_factory=dict)
    #: The served application (the gateway's, with the console mounted on it).
    app: web.Application | None = None
    #: A second study of HOSP1 filed under a duplicate identity of DOE^JANE (P1-DUP), to merge.
    duplicate_study: str = ""

    @property
    def ui(self) -> str:
        return f"{self.base}/ui"


async def ingest(archive: Archive, datasets: Sequence[Dataset], source: SourceSettings) -> None:
    sender = Sender(source=source, protocol="import", actor="test")
    for ds in datasets:
        path = archive.incoming / f"{uuid.uuid4().hex}.dcm"
        Path(path).write_bytes(part10(ds))  # noqa: ASYNC240 - a test
        await archive.ingester.ingest_file(path, sender)


@contextlib.asynccontextmanager
async def console_site(settings: Settings) -> AsyncIterator[ConsoleSite]:
    """The archive (console settings) with one study per hospital, served with the console."""
    from vna.gateway.web import create_app
    from vna.ui import register

    archive = await Archive.open(console_settings(settings))
    try:
        site = ConsoleSite(archive, "")
        stored = site.datasets
        for source, name, pid in ((HOSP1, "DOE^JANE", "P1"), (HOSP2, "ROE^RICHARD", "P2")):
            study = ct_study(
                patient_id=pid,
                patient_name=name,
                issuer=source.issuer_of_patient_id,
                series=2,
                slices=2,
                size=32,
                accession=f"ACC-{source.name}",
            )
            await ingest(archive, study, source)
            stored[source.name] = study
            site.studies[source.name] = [str(study[0].StudyInstanceUID)]
        # The same woman registered twice at HOSP1: a study under P1-DUP, to be merged.
        duplicate = ct_study(
            patient_id="P1-DUP",
            patient_name="DOE^JANE",
            issuer="HOSP1",
            series=1,
            slices=1,
            size=32,
            accession="ACC-DUP",
            study_date="20240301",
        )
        await ingest(archive, duplicate, HOSP1)
        site.duplicate_study = str(duplicate[0].StudyInstanceUID)
        # HOSP1 sends one of its instances again with another description: a conflict.
        again = copy.deepcopy(stored["HOSP1"][0])
        again.StudyDescription = "CT CHEST WITH CONTRAST"
        again.InstitutionName = "HOSP1 WEST"
        await ingest(archive, [again], HOSP1)
        async with archive.db.transaction() as conn:
            made = await tokens.create_token(
                conn, name="hosp1-reader", role="reader", read_sources=["HOSP1"], actor="test"
            )
        site.reader_token = made.secret
        app = create_app(archive)
        register(app, archive)
        site.app = app
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        site.base = f"http://127.0.0.1:{port}"
        try:
            yield site
        finally:
            await runner.cleanup()
    finally:
        await archive.close()


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@contextlib.asynccontextmanager
async def signed_in(site: ConsoleSite, token: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client signed in to the console with ``token`` (its cookie jar holds the
    session)."""
    # unsafe: keep cookies of an IP address host (127.0.0.1), which aiohttp drops by default.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.get(f"{site.ui}/signin") as resp:
            csrf = csrf_of(await resp.text())
        async with http.post(
            f"{site.ui}/signin", data={"csrf": csrf, "token": token}, allow_redirects=False
        ) as resp:
            assert resp.status == 303, await resp.text()
        yield http
    finally:
        await http.close()


async def page_csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return csrf_of(await resp.text())
