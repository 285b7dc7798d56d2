"""Federation administration against a real archive: conflicts (list, show, resolve), patient
links, corrections and merges with their undoing, over the admin HTTP endpoints and the
command line; each visible in WADO-RS, QIDO-RS and the audit log."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest

from tests.factory import ct_study, part10, split_multipart, stow_body
from vna.archive import Archive
from vna.catalog.patient_links import linked_patient_ids
from vna.config import AdminSettings, Settings, SourceSettings

pytestmark = pytest.mark.asyncio

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
TOKENS = {"H1": "t-one", "H2": "t-two"}
# Source tokens store; the admin token reads and administers.
ADMIN_TOKEN = "t-admin"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SOURCES = (
    SourceSettings(
        name="H1", issuer_of_patient_id="HOSP1", token_sha256=_sha("t-one"), on_conflict="keep-both"
    ),
    SourceSettings(name="H2", issuer_of_patient_id="HOSP2", token_sha256=_sha("t-two")),
)


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings, sources=SOURCES, admin=AdminSettings(_sha(ADMIN_TOKEN))
    )


def admin_url(dicomweb: str) -> str:
    return dicomweb.replace("/dicom-web", "/admin")


async def stow(url: str, parts: list[bytes], source: str) -> int:
    body, content_type = stow_body(parts)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKENS[source]}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/studies", data=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


async def call(
    method: str, url: str, body: Any = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, text


async def retrieve(url: str, ds: pydicom.Dataset) -> pydicom.Dataset:
    target = (
        f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            target, headers={"Accept": ACCEPT_DICOM, "Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as resp,
    ):
        assert resp.status == 200
        (part,) = split_multipart(await resp.read(), resp.headers["Content-Type"])
        return pydicom.dcmread(io.BytesIO(part))


async def study_metadata(url: str, study_uid: str) -> list[dict[str, Any]]:
    status, body = await call("GET", f"{url}/studies/{study_uid}/metadata")
    assert status == 200
    return list(body)


async def audit_actions(archive: Archive) -> list[str]:
    async with archive.db.acquire() as conn:
        return [r["action"] for r in await conn.fetch("SELECT action FROM audit ORDER BY id")]


# --- conflicts ----------------------------------------------------------------------------------


def _version(ds: pydicom.Dataset, description: str) -> bytes:
    other = pydicom.Dataset(ds)
    other.file_meta = ds.file_meta
    other.StudyDescription = description
    return part10(other)


async def test_conflicts_are_listed_shown_and_resolved_over_http(archive, dicomweb):
    admin = admin_url(dicomweb)
    first, second = ct_study(series=1, slices=2)
    for ds in (first, second):
        assert await stow(dicomweb, [part10(ds)], "H1") == 202
        assert await stow(dicomweb, [_version(ds, "CT HEAD")], "H1") == 202

    status, listed = await call("GET", f"{admin}/conflicts")
    assert status == 200 and [c["sop_uid"] for c in listed] == [
        first.SOPInstanceUID,
        second.SOPInstanceUID,
    ]
    one, two = (c["id"] for c in listed)
    status, shown = await call("GET", f"{admin}/conflicts/{one}")
    assert status == 200
    diffs = {d["keyword"]: (d["archived"], d["quarantined"]) for d in shown["differences"]}
    assert diffs == {"StudyDescription": (["CT CHEST"], ["CT HEAD"])}

    # Accept: the quarantined version becomes the one served; the archived one is kept.
    status, result = await call("POST", f"{admin}/conflicts/{one}/resolve", {"action": "accept"})
    assert (status, result["state"]) == (200, "accepted")
    assert (await retrieve(dicomweb, first)).StudyDescription == "CT HEAD"
    # Discard: nothing served changes.
    status, _ = await call("POST", f"{admin}/conflicts/{two}/resolve", {"action": "discard"})
    assert status == 200
    assert (await retrieve(dicomweb, second)).StudyDescription == "CT CHEST"
    # Resolved once only; unknown ids and actions are clear errors.
    status, text = await call("POST", f"{admin}/conflicts/{two}/resolve", {"action": "accept"})
    assert status == 400 and "already discarded" in text
    assert (await call("GET", f"{admin}/conflicts/999"))[0] == 404
    assert (await call("POST", f"{admin}/conflicts/{one}/resolve", {"action": "merge"}))[0] == 400
    assert (await call("GET", f"{admin}/conflicts"))[1] == []
    async with archive.db.acquire() as conn:
        kept = await conn.fetch("SELECT sop_uid, reason FROM instance_versions")
    assert [(k["sop_uid"], k["reason"]) for k in kept] == [
        (first.SOPInstanceUID, "conflict-accept")
    ]
    actions = await audit_actions(archive)
    assert actions.count("conflict-accept") == 1 and actions.count("conflict-discard") == 1


async def test_conflicts_from_the_command_line(archive, dicomweb, tmp_path, capsys):
    from vna.cli import main

    ds = ct_study(series=1, slices=1)[0]
    assert await stow(dicomweb, [part10(ds)], "H1") == 202
    assert await stow(dicomweb, [_version(ds, "CT HEAD")], "H1") == 202
    config = _config_file(archive.settings, tmp_path)

    async def vna(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--config", str(config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await vna("conflicts", "list")
    assert code == 0 and ds.SOPInstanceUID in out and "open" in out
    code, out, err = await vna("conflicts", "show", "1")
    assert code == 0 and "StudyDescription" in out and "CT HEAD" in out
    code, out, err = await vna("conflicts", "resolve", "1", "accept")
    assert code == 0 and "accepted" in out
    assert (await retrieve(dicomweb, ds)).StudyDescription == "CT HEAD"
    code, _, err = await vna("conflicts", "resolve", "1", "discard")
    assert code == 1 and "already accepted" in err


def _config_file(settings: Settings, tmp_path: Path) -> Path:
    lines = [
        f'data_dir = "{settings.data_dir}"',
        f'database_url = "{settings.database_url}"',
    ]
    for src in settings.sources:
        lines += [
            "[[sources]]",
            f'name = "{src.name}"',
            f'issuer_of_patient_id = "{src.issuer_of_patient_id}"',
            f'on_conflict = "{src.on_conflict}"',
        ]
    path = tmp_path / "vna.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- admin authorisation ------------------------------------------------------------------------


async def test_admin_endpoints_require_the_admin_token_when_configured(archive_settings):
    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    settings = dataclasses.replace(
        archive_settings, admin=AdminSettings(admin_token_sha256=_sha("sesame"))
    )
    archive = await Archive.open(settings)
    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/admin/conflicts"
    try:
        assert (await call("GET", url, token=None))[0] == 401
        assert (await call("GET", url, token="wrong"))[0] == 401
        assert (await call("GET", url, token="sesame")) == (200, [])
    finally:
        await runner.cleanup()
        await archive.close()


async def test_without_an_admin_token_only_loopback_clients_are_served(archive):
    from aiohttp.test_utils import make_mocked_request

    from vna.errors import Forbidden
    from vna.gateway import auth
    from vna.gateway.web import create_app
    from vna.security.authn import Authenticator

    app = create_app(archive)
    # An archive without any credential (no source tokens, no admin token, none created).
    bare = dataclasses.replace(archive.settings, sources=(), admin=AdminSettings())
    app[auth.AUTH] = Authenticator(archive.db, bare)

    class Transport:
        def __init__(self, peer: str) -> None:
            self.peer = peer

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return (self.peer, 40000) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    local = make_mocked_request("GET", "/admin/conflicts", app=app, transport=Transport("::1"))
    assert (await auth.authorise(local, auth.ADMIN)).name == "admin@::1"
    remote = make_mocked_request(
        "GET", "/admin/conflicts", app=app, transport=Transport("10.1.2.3")
    )
    with pytest.raises(Forbidden):
        await auth.authorise(remote, auth.ADMIN)


# --- patient links ------------------------------------------------------------------------------


async def test_links_are_followed_when_asked_and_removable(archive, dicomweb):
    admin = admin_url(dicomweb)
    a = ct_study(patient_id="A-1", series=1, slices=1)
    b = ct_study(patient_id="B-2", series=1, slices=1)
    c = ct_study(patient_id="C-3", series=1, slices=1)
    assert await stow(dicomweb, [part10(a[0])], "H1") == 202
    assert await stow(dicomweb, [part10(b[0]), part10(c[0])], "H2") == 202

    ab = {
        "a": {"PatientID": "A-1", "IssuerOfPatientID": "HOSP1"},
        "b": {"PatientID": "B-2", "IssuerOfPatientID": "HOSP2"},
        "reason": "same NHS number",
    }
    status, first = await call("POST", f"{admin}/patients/links", ab)
    assert status == 200
    # Linking again (either way round) is the same link.
    swapped = {"a": ab["b"], "b": ab["a"]}
    assert (await call("POST", f"{admin}/patients/links", swapped))[1] == first
    bc = {
        "a": {"PatientID": "B-2", "IssuerOfPatientID": "HOSP2"},
        "b": {"PatientID": "C-3", "IssuerOfPatientID": "HOSP2"},
    }
    assert (await call("POST", f"{admin}/patients/links", bc))[0] == 200

    async with archive.db.acquire() as conn:
        assert await linked_patient_ids(conn, "A-1", "HOSP1") == [
            ("A-1", "HOSP1"),
            ("B-2", "HOSP2"),
            ("C-3", "HOSP2"),
        ]
        assert await linked_patient_ids(conn, "Z", "") == [("Z", "")]
    status, listed = await call("GET", f"{admin}/patients?PatientID=A-1&IssuerOfPatientID=HOSP1")
    assert listed[0]["linked"] == ["B-2^^^HOSP2", "C-3^^^HOSP2"]

    assert (await call("DELETE", f"{admin}/patients/links/{first['link']}"))[0] == 200
    async with archive.db.acquire() as conn:
        assert await linked_patient_ids(conn, "A-1", "HOSP1") == [("A-1", "HOSP1")]
        assert await linked_patient_ids(conn, "C-3", "HOSP2") == [
            ("B-2", "HOSP2"),
            ("C-3", "HOSP2"),
        ]
    assert (await call("DELETE", f"{admin}/patients/links/{first['link']}"))[0] == 404
    unknown = {"a": ab["a"], "b": {"PatientID": "NOPE"}}
    assert (await call("POST", f"{admin}/patients/links", unknown))[0] == 404
    actions = await audit_actions(archive)
    assert actions.count("patient-link") == 4 and actions.count("patient-unlink") == 2


# --- merges and corrections ---------------------------------------------------------------------


async def qido_studies(url: str, patient_id: str, issuer: str) -> set[str]:
    status, body = await call(
        "GET", f"{url}/studies?PatientID={patient_id}&IssuerOfPatientID={issuer}"
    )
    if status == 204:
        return set()
    assert status == 200, body
    return {s["0020000D"]["Value"][0] for s in body}


async def test_merge_moves_every_study_is_visible_audited_and_undone(archive, dicomweb):
    admin = admin_url(dicomweb)
    keep = ct_study(patient_id="P1", patient_name="DOE^JANE", series=1, slices=2)
    dup1 = ct_study(patient_id="X9", patient_name="DOE^J", series=2, slices=1)
    dup2 = ct_study(patient_id="X9", patient_name="DOE^J", series=1, slices=1)
    assert await stow(dicomweb, [part10(ds) for ds in keep], "H1") == 202
    assert await stow(dicomweb, [part10(ds) for ds in dup1 + dup2], "H2") == 202
    before = {ds.SOPInstanceUID: await retrieve(dicomweb, ds) for ds in dup1 + dup2}
    moved = {dup1[0].StudyInstanceUID, dup2[0].StudyInstanceUID}

    body = {
        "from": {"PatientID": "X9", "IssuerOfPatientID": "HOSP2"},
        "into": {"PatientID": "P1", "IssuerOfPatientID": "HOSP1"},
    }
    status, result = await call("POST", f"{admin}/patients/merge", body)
    assert status == 200, result
    change = result["change"]

    # Every study is under the target, in the catalogue (QIDO-RS) and in the objects (WADO-RS).
    assert await qido_studies(dicomweb, "P1", "HOSP1") == moved | {keep[0].StudyInstanceUID}
    assert await qido_studies(dicomweb, "X9", "HOSP2") == set()
    for study_uid in moved:
        for meta in await study_metadata(dicomweb, study_uid):
            assert meta["00100020"]["Value"] == ["P1"]
            assert meta["00100021"]["Value"] == ["HOSP1"]
            assert meta["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    merged = await retrieve(dicomweb, dup1[0])
    assert (merged.PatientID, merged.IssuerOfPatientID, merged.PatientName) == (
        "P1",
        "HOSP1",
        "DOE^JANE",
    )
    item = merged.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifiedAttributesSequence[0].PatientID == "X9"
    assert merged.PixelData == dup1[0].PixelData
    async with archive.db.acquire() as conn:
        audited = await conn.fetch(
            "SELECT study_uid, detail FROM audit WHERE action = 'patient-merge'"
        )
    assert {a["study_uid"] for a in audited} == moved
    assert all(a["detail"]["change"] == change for a in audited)
    # A resend from H2 of what it sent before the merge stays a duplicate.
    assert await stow(dicomweb, [part10(dup1[0])], "H2") == 200

    # Undo: the studies, the objects and the catalogue as they were.
    status, _ = await call("POST", f"{admin}/patients/changes/{change}/undo")
    assert status == 200
    assert await qido_studies(dicomweb, "X9", "HOSP2") == moved
    assert await qido_studies(dicomweb, "P1", "HOSP1") == {keep[0].StudyInstanceUID}
    for ds in dup1 + dup2:
        again = await retrieve(dicomweb, ds)
        assert again == before[ds.SOPInstanceUID]
    assert (await call("POST", f"{admin}/patients/changes/{change}/undo"))[0] == 400
    assert "patient-merge-undo" in await audit_actions(archive)


async def test_correction_from_the_command_line_and_undo(archive, dicomweb, tmp_path, capsys):
    from vna.cli import main

    study = ct_study(patient_id="P7", patient_name="SMIHT^ANN", series=1, slices=2)
    assert await stow(dicomweb, [part10(ds) for ds in study], "H2") == 202
    config = _config_file(archive.settings, tmp_path)

    async def vna(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--config", str(config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await vna(
        "patients", "update", "P7^^^HOSP2", "--name", "SMITH^ANN", "--birth-date", "19800202"
    )
    assert code == 0, err
    change = int(out.split()[1].rstrip(":"))
    for meta in await study_metadata(dicomweb, study[0].StudyInstanceUID):
        assert meta["00100010"]["Value"] == [{"Alphabetic": "SMITH^ANN"}]
        assert meta["00100030"]["Value"] == ["19800202"]
    code, out, err = await vna("patients", "list", "P7^^^HOSP2")
    assert "SMITH^ANN" in out and "19800202" in out
    code, out, err = await vna("patients", "changes")
    assert f"{change}" in out and "update" in out
    # Updating to an identity that exists is a merge, said plainly.
    other = ct_study(patient_id="P8", series=1, slices=1)
    assert await stow(dicomweb, [part10(other[0])], "H2") == 202
    code, _, err = await vna("patients", "update", "P7^^^HOSP2", "--id", "P8")
    assert code == 1 and "merge" in err

    code, out, err = await vna("patients", "undo", str(change))
    assert code == 0
    for meta in await study_metadata(dicomweb, study[0].StudyInstanceUID):
        assert meta["00100010"]["Value"] == [{"Alphabetic": "SMIHT^ANN"}]
    code, out, err = await vna("patients", "list", "P7^^^HOSP2")
    assert "SMIHT^ANN" in out


async def test_instances_sent_under_a_merged_identity_are_filed_under_the_target(archive, dicomweb):
    keep = ct_study(patient_id="P1", patient_name="DOE^JANE", series=1, slices=1)
    dup = ct_study(patient_id="X9", patient_name="DOE^J", series=1, slices=2)
    assert await stow(dicomweb, [part10(keep[0])], "H1") == 202
    assert await stow(dicomweb, [part10(dup[0])], "H2") == 202
    body = {
        "from": {"PatientID": "X9", "IssuerOfPatientID": "HOSP2"},
        "into": {"PatientID": "P1", "IssuerOfPatientID": "HOSP1"},
    }
    assert (await call("POST", f"{admin_url(dicomweb)}/patients/merge", body))[0] == 200
    # The PACS of HOSP2 goes on sending X9: the rest of the moved study, and a new study.
    later = ct_study(patient_id="X9", patient_name="DOE^J", series=1, slices=1)
    assert await stow(dicomweb, [part10(dup[1]), part10(later[0])], "H2") == 202
    assert await qido_studies(dicomweb, "P1", "HOSP1") == {
        keep[0].StudyInstanceUID,
        dup[0].StudyInstanceUID,
        later[0].StudyInstanceUID,
    }
    stored = await retrieve(dicomweb, later[0])
    assert (stored.PatientID, stored.IssuerOfPatientID, stored.PatientName) == (
        "P1",
        "HOSP1",
        "DOE^JANE",
    )
    reasons = [i.ReasonForTheAttributeModification for i in stored.OriginalAttributesSequence]
    assert reasons == ["COERCE", "CORRECT"]
    assert stored.OriginalAttributesSequence[1].ModifiedAttributesSequence[0].PatientID == "X9"
