"""Queries and retrieves scoped to the caller's hospital, and instances shared between
hospitals (issue 23, items 1 and 2), against a real archive: PostgreSQL catalogue, filesystem
store, the DIMSE listener driven by pynetdicom and the DICOMweb gateway over real HTTP.

Two hospitals use the same PatientID for two different patients.  A PACS that queries without
IssuerOfPatientID must get its own patient only; with ``query_scope = "linked"`` and a link
between the identities it gets both, each under its own issuer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.conftest import free_port
from tests.factory import ct_study, part10, stow_body
from tests.integration.test_dimse import QR, StorageSCP, association, scu, store, study_keys
from vna.admin import patients
from vna.admin.patients import Identity
from vna.archive import Archive
from vna.config import (
    AdminSettings,
    DestinationSettings,
    DimseSettings,
    Settings,
    SourceSettings,
)
from vna.gateway.dimse import DimseListener
from vna.security import tokens

pytestmark = pytest.mark.asyncio

ADMIN_TOKEN = "token-admin"
SOURCE_TOKENS = {"HOSP1": "token-hosp1", "HOSP2": "token-hosp2"}
ACCEPT_JSON = {"Accept": "application/dicom+json"}
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class Running:
    archive: Archive
    dimse_port: int
    url: str
    viewer: StorageSCP
    #: Bearer tokens of source principals that may also read (role source, read_sources).
    readers: dict[str, str]


@pytest.fixture
def viewer() -> Iterator[StorageSCP]:
    scp = StorageSCP("VIEWER")
    yield scp
    scp.stop()


@pytest.fixture
async def running(archive_settings: Settings, viewer: StorageSCP) -> AsyncIterator[Running]:
    """HOSP1 (query_scope own) and HOSP2 (query_scope linked) as sources, a viewer as a
    C-MOVE destination, DIMSE and DICOMweb both listening."""
    from aiohttp import web

    from vna.gateway.web import create_app

    settings = dataclasses.replace(
        archive_settings,
        dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
        sources=(
            SourceSettings(
                name="HOSP1",
                ae_titles=("HOSP1PACS",),
                issuer_of_patient_id="HOSP1",
                token_sha256=_sha(SOURCE_TOKENS["HOSP1"]),
            ),
            SourceSettings(
                name="HOSP2",
                ae_titles=("HOSP2PACS",),
                issuer_of_patient_id="HOSP2",
                token_sha256=_sha(SOURCE_TOKENS["HOSP2"]),
                query_scope="linked",
            ),
        ),
        destinations=(
            DestinationSettings(
                name="viewer", ae_title="VIEWER", host="127.0.0.1", port=viewer.port
            ),
        ),
        admin=AdminSettings(_sha(ADMIN_TOKEN)),
    )
    archive = await Archive.open(settings)
    listener = DimseListener(archive)
    await listener.start()
    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # A PACS's own token that stores as its source and may read what both hospitals sent
    # (read_sources): the query scope, not the token's sources, keeps it to its patients.
    readers = {}
    async with archive.db.transaction() as conn:
        for source in ("HOSP1", "HOSP2"):
            made = await tokens.create_token(
                conn,
                name=f"{source.lower()}-pacs",
                role="source",
                source=source,
                read_sources=["HOSP1", "HOSP2"],
                actor="test",
            )
            readers[source] = made.secret
    try:
        yield Running(archive, listener.port, f"http://127.0.0.1:{port}/dicom-web", viewer, readers)
    finally:
        await runner.cleanup()
        await listener.stop(grace_seconds=5)
        await archive.close()


# --- helpers ------------------------------------------------------------------------------------


def cfind(port: int, calling: str, level: str, model: str, keys: dict[str, str]) -> list[Dataset]:
    """The pending C-FIND identifiers answered to ``calling``; asserts a final Success."""
    with association(port, QR, calling=calling) as assoc:
        assert assoc.is_established
        found, final = [], None
        for status, ds in assoc.send_c_find(study_keys(level, **keys), model):
            if status.Status in (0xFF00, 0xFF01):
                found.append(ds)
            else:
                final = int(status.Status)
        assert final == 0x0000
        return found


def cmove_patient(port: int, calling: str, patient_id: str) -> Dataset:
    with association(port, QR, calling=calling) as assoc:
        assert assoc.is_established
        last = None
        for status, _ in assoc.send_c_move(
            study_keys("PATIENT", PatientID=patient_id),
            "VIEWER",
            PatientRootQueryRetrieveInformationModelMove,
        ):
            last = status
        assert last is not None
        return last


def cget(port: int, calling: str, keys: Dataset) -> tuple[int, set[str]]:
    """C-GET over the Patient Root model: the final status and the SOP Instance UIDs the
    archive sent back over the requester's association."""
    got: set[str] = set()

    def on_store(event: Any) -> int:
        got.add(str(event.request.AffectedSOPInstanceUID))
        Path(event.dataset_path).unlink()  # pynetdicom leaves it on the requester's side
        return 0x0000

    contexts = [
        (PatientRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ]
    role = build_role(CTImageStorage, scp_role=True)
    with association(
        port, contexts, calling=calling, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
    ) as assoc:
        assert assoc.is_established
        last = None
        for status, _ in assoc.send_c_get(keys, PatientRootQueryRetrieveInformationModelGet):
            last = status
        assert last is not None
        return int(last.Status), got


async def studies_found(run: Running, calling: str, patient_id: str) -> dict[str, str]:
    """Study level C-FIND by PatientID alone (no IssuerOfPatientID, as most PACS ask):
    StudyInstanceUID -> the IssuerOfPatientID each answer carries (unasked)."""
    found = await scu(
        cfind,
        run.dimse_port,
        calling,
        "STUDY",
        StudyRootQueryRetrieveInformationModelFind,
        {"PatientID": patient_id, "StudyInstanceUID": ""},
    )
    return {ds.StudyInstanceUID: ds.get("IssuerOfPatientID", "(none)") for ds in found}


async def qido(run: Running, token: str, query: str) -> tuple[int, Any]:
    headers = {**ACCEPT_JSON, "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{run.url}/studies?{query}", headers=headers) as resp,
    ):
        if resp.status != 200:
            return resp.status, await resp.text()
        return 200, await resp.json(content_type=None)


def by_study(matches: list[dict[str, Any]]) -> dict[str, str]:
    """StudyInstanceUID -> IssuerOfPatientID of QIDO-RS study matches."""
    return {
        m["0020000D"]["Value"][0]: m.get("00100021", {}).get("Value", ["(none)"])[0]
        for m in matches
    }


async def wado_status(run: Running, token: str, study_uid: str) -> int:
    headers = {"Accept": ACCEPT_DICOM, "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{run.url}/studies/{study_uid}", headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


async def admin(run: Running, method: str, path: str) -> tuple[int, Any]:
    url = run.url.replace("/dicom-web", "/admin") + path
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as resp:
        if resp.status != 200:
            return resp.status, await resp.text()
        return 200, await resp.json()


async def stow(run: Running, source: str, datasets: list[Dataset]) -> int:
    body, content_type = stow_body([part10(ds) for ds in datasets])
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {SOURCE_TOKENS[source]}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{run.url}/studies", data=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


async def two_patients_with_one_id(run: Running) -> tuple[list[Dataset], list[Dataset]]:
    """HOSP1 and HOSP2 each send a study of their own patient P00001 over C-STORE."""
    jane = ct_study(patient_id="P00001", patient_name="DOE^JANE", series=1, slices=2)
    richard = ct_study(patient_id="P00001", patient_name="ROE^RICHARD", series=1, slices=3)
    assert await scu(store, run.dimse_port, jane, "HOSP1PACS") == [0xB000] * 2  # issuer added
    assert await scu(store, run.dimse_port, richard, "HOSP2PACS") == [0xB000] * 3
    return jane, richard


# --- item 1: scoped to the caller -----------------------------------------------------------------


async def test_c_find_and_c_move_without_issuer_answer_the_callers_own_patient(
    running: Running,
) -> None:
    run = running
    jane, richard = await two_patients_with_one_id(run)
    jane_study, richard_study = jane[0].StudyInstanceUID, richard[0].StudyInstanceUID

    # Each hospital sees its own P00001, and is told whose ID it is (IssuerOfPatientID).
    assert await studies_found(run, "HOSP1PACS", "P00001") == {jane_study: "HOSP1"}
    assert await studies_found(run, "HOSP2PACS", "P00001") == {richard_study: "HOSP2"}
    patients_of = await scu(
        cfind,
        run.dimse_port,
        "HOSP1PACS",
        "PATIENT",
        PatientRootQueryRetrieveInformationModelFind,
        {"PatientID": "P00001", "PatientName": ""},
    )
    assert [(str(p.PatientName), p.IssuerOfPatientID) for p in patients_of] == [
        ("DOE^JANE", "HOSP1")
    ]
    # Asking for the other hospital's issuer does not widen an "own" scope.
    other = await scu(
        cfind,
        run.dimse_port,
        "HOSP1PACS",
        "STUDY",
        StudyRootQueryRetrieveInformationModelFind,
        {"PatientID": "P00001", "IssuerOfPatientID": "HOSP2", "StudyInstanceUID": ""},
    )
    assert other == []
    # A destination that is not a source (a viewer) is not scoped: both patients.
    assert await studies_found(run, "VIEWER", "P00001") == {
        jane_study: "HOSP1",
        richard_study: "HOSP2",
    }

    # C-MOVE at PATIENT level moves the caller's patient only; so does C-GET, and another
    # hospital's study named by its UID is not sent at all.
    final = await scu(cmove_patient, run.dimse_port, "HOSP2PACS", "P00001")
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 3)
    assert set(run.viewer.received) == {ds.SOPInstanceUID for ds in richard}
    status, got = await scu(
        cget, run.dimse_port, "HOSP1PACS", study_keys("PATIENT", PatientID="P00001")
    )
    assert (status, got) == (0x0000, {ds.SOPInstanceUID for ds in jane})
    status, got = await scu(
        cget,
        run.dimse_port,
        "HOSP1PACS",
        study_keys("STUDY", PatientID="P00001", StudyInstanceUID=richard_study),
    )
    assert (status, got) == (0x0000, set())


async def test_linked_scope_finds_both_identities_once_they_are_linked(running: Running) -> None:
    run = running
    jane, richard = await two_patients_with_one_id(run)
    jane_study, richard_study = jane[0].StudyInstanceUID, richard[0].StudyInstanceUID
    # HOSP2's scope is "linked", but nothing is linked yet: its own patient only.
    assert await studies_found(run, "HOSP2PACS", "P00001") == {richard_study: "HOSP2"}

    await patients.link(
        run.archive.db,
        Identity("P00001", "HOSP1"),
        Identity("P00001", "HOSP2"),
        reason="same person (test)",
        actor="test",
    )
    # Linked: HOSP2 finds both studies, each under the identity it is filed under; HOSP1,
    # scoped to its own, still finds its own only.
    assert await studies_found(run, "HOSP2PACS", "P00001") == {
        jane_study: "HOSP1",
        richard_study: "HOSP2",
    }
    assert await studies_found(run, "HOSP1PACS", "P00001") == {jane_study: "HOSP1"}
    final = await scu(cmove_patient, run.dimse_port, "HOSP2PACS", "P00001")
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0x0000, 5)
    assert set(run.viewer.received) == {ds.SOPInstanceUID for ds in jane + richard}


async def test_qido_and_wado_with_a_source_token_follow_the_same_scope(running: Running) -> None:
    run = running
    jane, richard = await two_patients_with_one_id(run)
    jane_study, richard_study = jane[0].StudyInstanceUID, richard[0].StudyInstanceUID

    status, found = await qido(run, run.readers["HOSP1"], "PatientID=P00001")
    assert (status, by_study(found)) == (200, {jane_study: "HOSP1"})
    status, found = await qido(run, run.readers["HOSP2"], "PatientID=P00001")
    assert (status, by_study(found)) == (200, {richard_study: "HOSP2"})
    # A reader (here the admin token) is not scoped.
    status, found = await qido(run, ADMIN_TOKEN, "PatientID=P00001")
    assert (status, by_study(found)) == (200, {jane_study: "HOSP1", richard_study: "HOSP2"})
    # WADO-RS: another hospital's study is absent to a source.
    assert await wado_status(run, run.readers["HOSP1"], richard_study) == 404
    assert await wado_status(run, run.readers["HOSP2"], richard_study) == 200

    await patients.link(
        run.archive.db,
        Identity("P00001", "HOSP1"),
        Identity("P00001", "HOSP2"),
        reason="same person (test)",
        actor="test",
    )
    status, found = await qido(run, run.readers["HOSP2"], "PatientID=P00001")
    assert (status, by_study(found)) == (200, {jane_study: "HOSP1", richard_study: "HOSP2"})
    status, found = await qido(run, run.readers["HOSP1"], "PatientID=P00001")
    assert (status, by_study(found)) == (200, {jane_study: "HOSP1"})
    assert await wado_status(run, run.readers["HOSP2"], jane_study) == 200
    assert await wado_status(run, run.readers["HOSP1"], richard_study) == 404
    # The queries were audited as before: one query row per search, naming what it disclosed.
    async with run.archive.db.acquire() as conn:
        queried = await conn.fetchval(
            "SELECT count(*) FROM audit WHERE action = 'query' AND actor = 'hosp2-pacs'"
        )
    assert queried == 2


# --- item 2: instances shared between hospitals ------------------------------------------------


def _config_file(settings: Settings, tmp_path: Path) -> Path:
    lines = [f'data_dir = "{settings.data_dir}"', f'database_url = "{settings.database_url}"']
    for src in settings.sources:
        lines += [
            "[[sources]]",
            f'name = "{src.name}"',
            f'issuer_of_patient_id = "{src.issuer_of_patient_id}"',
            f'query_scope = "{src.query_scope}"',
        ]
    path = tmp_path / "vna.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def store_audit(run: Running, sop_uid: str) -> list[tuple[str, str, str, bool]]:
    """The store audit rows of an instance: actor, source, filed patient, duplicate."""
    async with run.archive.db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT actor, detail, patient_id, issuer FROM audit"
            " WHERE action = 'store' AND sop_uid = $1 ORDER BY id",
            sop_uid,
        )
    return [
        (
            r["actor"],
            r["detail"]["source"],
            f"{r['patient_id']}^^^{r['issuer']}",
            bool(r["detail"].get("duplicate")),
        )
        for r in rows
    ]


async def test_an_instance_shared_by_a_second_hospital_proposes_a_link(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vna.cli import main

    run = running
    study = ct_study(patient_id="P77", patient_name="SHARED^PAT", series=1, slices=2)
    shared, other = study
    assert await stow(run, "HOSP1", study) == 202  # issuer HOSP1 added: a coercion warning
    # HOSP2 sends the same file HOSP1 sent (an image the hospitals exchanged): success, and
    # HOSP1's own resend of the other instance too.
    assert await stow(run, "HOSP2", [shared]) == 200
    assert await stow(run, "HOSP1", [other]) == 200

    # Every store attempt left one audit row; HOSP2's names HOSP2 and where the instance is.
    assert await store_audit(run, shared.SOPInstanceUID) == [
        ("token:HOSP1", "HOSP1", "P77^^^HOSP1", False),
        ("token:HOSP2", "HOSP2", "P77^^^HOSP1", True),
    ]
    assert await store_audit(run, other.SOPInstanceUID) == [
        ("token:HOSP1", "HOSP1", "P77^^^HOSP1", False),
        ("token:HOSP1", "HOSP1", "P77^^^HOSP1", True),
    ]
    # Nothing re-filed: the instance stays with HOSP1's patient, and HOSP2 has no P77.
    status, found = await qido(run, ADMIN_TOKEN, "PatientID=P77")
    assert (status, by_study(found)) == (200, {shared.StudyInstanceUID: "HOSP1"})
    assert await studies_found(run, "HOSP2PACS", "P77") == {}

    config = _config_file(run.archive.settings, tmp_path)

    async def vna(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--config", str(config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = await vna("patients", "links", "--pending")
    assert code == 0
    (line,) = out.splitlines()
    assert "pending link 1: P77^^^HOSP1 = P77^^^HOSP2" in line
    assert "source HOSP2" in line and shared.SOPInstanceUID in line
    # HOSP2 resends: the same proposal, seen again, not a second one.
    assert await stow(run, "HOSP2", [shared]) == 200
    code, out, _ = await vna("patients", "links", "--pending")
    assert len(out.splitlines()) == 1 and "seen 2x" in out

    code, out, _ = await vna("patients", "accept-link", "1")
    assert code == 0 and "pending link 1 accepted" in out
    code, out, _ = await vna("patients", "links", "--pending")
    assert out.strip() == "no pending links"
    code, _, err = await vna("patients", "reject-link", "1")
    assert code != 0 and "accepted already" in err

    # HOSP2 (query_scope linked) now finds the study under its own ID, HOSP1 as before.
    assert await studies_found(run, "HOSP2PACS", "P77") == {shared.StudyInstanceUID: "HOSP1"}
    assert await studies_found(run, "HOSP1PACS", "P77") == {shared.StudyInstanceUID: "HOSP1"}
    status, found = await qido(run, run.readers["HOSP2"], "PatientID=P77")
    assert (status, by_study(found)) == (200, {shared.StudyInstanceUID: "HOSP1"})
    async with run.archive.db.acquire() as conn:
        decided = await conn.fetch(
            "SELECT actor, patient_id, issuer FROM audit WHERE action = 'patient-link-accept'"
            " ORDER BY issuer"
        )
    assert [(r["patient_id"], r["issuer"]) for r in decided] == [
        ("P77", "HOSP1"),
        ("P77", "HOSP2"),
    ]
    assert all(r["actor"].startswith("user:") for r in decided)


async def test_a_rejected_link_is_not_proposed_again(running: Running) -> None:
    run = running
    (shared,) = ct_study(patient_id="P88", series=1, slices=1)
    assert await stow(run, "HOSP1", [shared]) == 202
    assert await stow(run, "HOSP2", [shared]) == 200
    # Decided over HTTP this time (/admin, with the admin token), as a console would.
    status, listed = await admin(run, "GET", "/patients/links/pending")
    assert status == 200
    assert [
        (p["patient_id_a"], p["issuer_a"], p["patient_id_b"], p["issuer_b"]) for p in listed
    ] == [("P88", "HOSP1", "P88", "HOSP2")]
    pending = listed[0]["id"]
    assert await admin(run, "POST", f"/patients/links/pending/{pending}/reject") == (
        200,
        {"pending_link": pending, "state": "rejected"},
    )
    status, text = await admin(run, "POST", f"/patients/links/pending/{pending}/accept")
    assert status == 400 and "rejected already" in text
    assert (await admin(run, "POST", "/patients/links/pending/999/reject"))[0] == 404
    assert await patients.pending_links(run.archive.db) == []
    assert await stow(run, "HOSP2", [shared]) == 200  # the same evidence again
    assert await patients.pending_links(run.archive.db) == []
    (rejected,) = await patients.pending_links(run.archive.db, state="rejected")
    assert (rejected["decided_by"], rejected["sightings"]) == ("admin-token", 1)
    # Still separate identities: HOSP2 finds nothing of P88.
    assert await studies_found(run, "HOSP2PACS", "P88") == {}
