"""IOCM rejection notes against a real archive: a Key Object Selection Document titled with a
rejection code (PS3.16 CID 7010) withdraws the instances it names from QIDO-RS, WADO-RS,
C-FIND, C-MOVE and C-GET; a retention review lists them with the reason and its approval
deletes them (objects and replica copies); the note stays.  Notes are made here with pydicom,
by hand, as a PACS would send them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from lifecycle import retention
from tests.conftest import free_port
from tests.factory import ct_study, part10, split_multipart, stow_body
from tests.integration.test_dimse import (
    Start,
    StorageSCP,
    association,
    find,
    move,
    scu,
    split_part10,
    start_archive,  # noqa: F401 - fixture
    store,
    study_keys,
)
from vna.admin import rejections
from vna.archive import Archive
from vna.config import DestinationSettings, RetentionRuleSettings
from vna.gateway.web import create_app
from vna.security import tokens

pytestmark = pytest.mark.asyncio

KOS = UID("1.2.840.10008.5.1.4.1.1.88.59")
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def rejection_note(study: list[Dataset], rejected: list[Dataset], code: str = "113001") -> Dataset:
    """A KOS rejection note as a PACS sends it (IHE RAD TF-3 4.66; PS3.3 A.35.4)."""
    meanings = {"113001": "Rejected for Quality Reasons", "113039": "Data Retention Policy Expired"}
    first = study[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KOS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = KOS
    for keyword in (
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
        "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
    ):  # fmt: skip
        setattr(ds, keyword, getattr(first, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "KO"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    title = Dataset()
    title.CodeValue = code
    title.CodingSchemeDesignator = "DCM"
    title.CodeMeaning = meanings[code]
    ds.ConceptNameCodeSequence = DicomSequence([title])
    by_series: dict[str, list[Dataset]] = {}
    for r in rejected:
        by_series.setdefault(r.SeriesInstanceUID, []).append(r)
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    series_items = []
    for series_uid, items in by_series.items():
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        refs = []
        for r in items:
            ref = Dataset()
            ref.ReferencedSOPClassUID = r.SOPClassUID
            ref.ReferencedSOPInstanceUID = r.SOPInstanceUID
            refs.append(ref)
        s.ReferencedSOPSequence = DicomSequence(refs)
        series_items.append(s)
    evidence.ReferencedSeriesSequence = DicomSequence(series_items)
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([evidence])
    return ds


async def serve_dicomweb(archive: Archive) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/dicom-web"


async def http_get(url: str, accept: str = "application/dicom+json", token: str = "") -> Any:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


async def qido_uids(url: str, token: str = "") -> set[str]:
    status, body, _ = await http_get(url, token=token)
    if status == 204:
        return set()
    assert status == 200, body
    return {m["00080018"]["Value"][0] for m in json.loads(body)}


async def stow(url: str, datasets: list[Dataset]) -> int:
    body, content_type = stow_body([part10(ds) for ds in datasets])
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/studies", data=body, headers={"Content-Type": content_type})
        await resp.read()
        return resp.status


def get_series(port: int, study_uid: str, series_uid: str) -> tuple[int, set[str]]:
    """C-GET of a series; the final status's completed count and the UIDs received."""
    got: set[str] = set()

    def on_store(event: Any) -> int:
        got.add(str(event.request.AffectedSOPInstanceUID))
        Path(event.dataset_path).unlink()
        return 0x0000

    contexts = [
        (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ]
    role = build_role(CTImageStorage, scp_role=True)
    with association(
        port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
    ) as assoc:
        last = None
        for status, _ in assoc.send_c_get(
            study_keys("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid),
            StudyRootQueryRetrieveInformationModelGet,
        ):
            last = status
        assert last is not None
        return int(last.NumberOfCompletedSuboperations), got


def store_note(port: int, note: Dataset) -> int:
    with association(port, [(KOS, [ExplicitVRLittleEndian])]) as assoc:
        assert assoc.is_established
        return int(assoc.send_c_store(note).Status)


@pytest.fixture
def destination() -> Any:
    scp = StorageSCP()
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
async def iocm(start_archive: Start, destination: StorageSCP) -> AsyncIterator[Any]:  # noqa: F811
    """An archive with its DIMSE listener, its DICOMweb gateway and a move destination."""
    archive, listener = await start_archive(
        destinations=(
            DestinationSettings(
                name="ws", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        )
    )
    runner, url = await serve_dicomweb(archive)
    try:
        yield archive, listener, url, destination
    finally:
        await runner.cleanup()


async def test_a_note_for_3_of_10_hides_exactly_those_everywhere_and_review_deletes_them(
    iocm: Any,
) -> None:
    archive, listener, url, destination = iocm
    study = ct_study(series=2, slices=5)
    study_uid = study[0].StudyInstanceUID
    series1, series2 = study[0].SeriesInstanceUID, study[5].SeriesInstanceUID
    rejected = [study[1], study[3], study[7]]
    kept = [ds for ds in study if ds not in rejected]
    gone = {ds.SOPInstanceUID for ds in rejected}
    assert await scu(store, listener.port, study) == [0] * 10

    note = rejection_note(study, rejected)
    assert await scu(store_note, listener.port, note) == 0x0000  # received by C-STORE

    # QIDO-RS: the rejected instances are not found; the note is, as an ordinary instance.
    found = await qido_uids(f"{url}/studies/{study_uid}/instances")
    assert found == {ds.SOPInstanceUID for ds in kept} | {note.SOPInstanceUID}
    status, body, _ = await http_get(f"{url}/studies?StudyInstanceUID={study_uid}")
    (match,) = json.loads(body)
    assert match["00201208"]["Value"] == [8]  # Number of Study Related Instances: 7 + the note
    for ds in rejected:
        path = f"{url}/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances"
        assert ds.SOPInstanceUID not in await qido_uids(
            f"{path}?SOPInstanceUID={ds.SOPInstanceUID}"
        )

    # WADO-RS: 404 for a rejected instance; the study without them.
    one = rejected[0]
    status, _, _ = await http_get(
        f"{url}/studies/{study_uid}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}",
        ACCEPT_DICOM,
    )
    assert status == 404
    status, _, _ = await http_get(
        f"{url}/studies/{study_uid}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}"
        "/metadata"
    )
    assert status == 404
    status, payload, ctype = await http_get(f"{url}/studies/{study_uid}", ACCEPT_DICOM)
    assert status == 200
    served = {
        split_part10(p)[0].MediaStorageSOPInstanceUID for p in split_multipart(payload, ctype)
    }
    assert served == {ds.SOPInstanceUID for ds in kept} | {note.SOPInstanceUID}

    # C-FIND at IMAGE level.
    images, final = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys(
            "IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series1, SOPInstanceUID=""
        ),
    )
    assert final == 0
    assert {i.SOPInstanceUID for i in images} == {ds.SOPInstanceUID for ds in study[:5]} - gone

    # C-MOVE of series 1: the three kept ones only; of a rejected instance: nothing.
    last = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series1),
        "TESTDEST",
    )
    assert last.Status == 0 and last.NumberOfCompletedSuboperations == 3
    await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys(
            "IMAGE",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series1,
            SOPInstanceUID=study[1].SOPInstanceUID,
        ),
        "TESTDEST",
    )
    assert set(destination.received) == {ds.SOPInstanceUID for ds in study[:5]} - gone

    # C-GET of series 2: four of five.
    completed, got = await scu(get_series, listener.port, study_uid, series2)
    assert completed == 4 and got == {ds.SOPInstanceUID for ds in study[5:]} - gone

    # An administrator sees what is withdrawn, and why.
    listed = await rejections.list_rejected(archive.db, study_uid)
    assert {r["sop_uid"] for r in listed} == gone
    assert {r["meaning"] for r in listed} == {"Rejected for Quality Reasons"}

    # The retention review lists them with the reason (no study is due under a 100-year rule).
    rules = (RetentionRuleSettings(name="forever", retain_years=100),)
    review = await retention.create_review(archive.db, rules, dt.date.today(), "records")
    assert review.due == []
    assert {r["sop_uid"]: r["meaning"] for r in review.rejected} == dict.fromkeys(
        gone, "Rejected for Quality Reasons"
    )
    keys = {r["object_key"] for r in await _instances(archive, gone)}
    assert all([await archive.store.stat(k) is not None for k in keys])

    report = await retention.approve(archive, rules, review.id, "records")
    assert set(report.deleted_instances) == gone
    assert [await archive.store.stat(k) for k in keys] == [None] * 3
    assert await _instances(archive, gone) == []
    # The note stays, and so does every kept instance.
    found = await qido_uids(f"{url}/studies/{study_uid}/instances")
    assert found == {ds.SOPInstanceUID for ds in kept} | {note.SOPInstanceUID}


async def _instances(archive: Archive, uids: set[str]) -> list[Any]:
    async with archive.db.acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT sop_uid, object_key FROM instances WHERE sop_uid = ANY($1::text[])",
                list(uids),
            )
        )


async def test_a_note_received_before_its_instances_applies_when_they_arrive(
    archive: Archive, dicomweb: str
) -> None:
    study = ct_study(series=1, slices=10)
    study_uid = study[0].StudyInstanceUID
    rejected = study[2:5]
    note = rejection_note(study, rejected, code="113039")
    assert await stow(dicomweb, [note]) == 200  # received by STOW-RS, nothing to withdraw yet
    assert await qido_uids(f"{dicomweb}/studies/{study_uid}/instances") == {note.SOPInstanceUID}

    assert await stow(dicomweb, study) == 200
    found = await qido_uids(f"{dicomweb}/studies/{study_uid}/instances")
    assert found == {ds.SOPInstanceUID for ds in study if ds not in rejected} | {
        note.SOPInstanceUID
    }
    one = rejected[0]
    status, _, _ = await http_get(
        f"{dicomweb}/studies/{study_uid}/series/{one.SeriesInstanceUID}"
        f"/instances/{one.SOPInstanceUID}",
        ACCEPT_DICOM,
    )
    assert status == 404
    (listed,) = await rejections.list_notes(archive.db)
    assert (listed["referenced"], listed["rejected"], listed["not_held"]) == (3, 3, 0)
    assert listed["meaning"] == "Data Retention Policy Expired"


async def test_a_note_cannot_withdraw_instances_of_another_study(
    archive: Archive, dicomweb: str
) -> None:
    victim = ct_study(series=1, slices=3, patient_id="OTHER")
    own = ct_study(series=1, slices=2)
    assert await stow(dicomweb, victim + own) == 200
    # A note in one study naming another study's instances (IHE: a note rejects within its
    # own study); the archive keeps serving them.
    note = rejection_note(own, victim)
    note.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID = victim[0].StudyInstanceUID
    assert await stow(dicomweb, [note]) == 200
    uid = victim[0].StudyInstanceUID
    assert await qido_uids(f"{dicomweb}/studies/{uid}/instances") == {
        ds.SOPInstanceUID for ds in victim
    }


async def test_reject_endpoint_for_admins_only_and_undo_brings_them_back(
    archive: Archive, dicomweb: str
) -> None:
    study = ct_study(series=2, slices=3)
    study_uid = study[0].StudyInstanceUID
    series_uid = study[0].SeriesInstanceUID
    async with archive.db.transaction() as conn:
        admin = await tokens.create_token(conn, name="ops", role="admin", actor="test")
        reader = await tokens.create_token(conn, name="ris", role="reader", actor="test")
        source = await tokens.create_token(
            conn, name="pacs", role="source", source="DEFAULT", actor="test"
        )

    async def post(path: str, token: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{dicomweb}{path}", headers={"Authorization": f"Bearer {token}"}
            )
            body = await resp.read()
            return resp.status, body

    body, content_type = stow_body([part10(ds) for ds in study])
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{dicomweb}/studies",
            data=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {source.secret}"},
        )
        assert resp.status == 200

    target = f"/studies/{study_uid}/series/{series_uid}/reject/113001^DCM"
    for token in (reader.secret, source.secret):
        status, _ = await post(target, token)
        assert status == 403
    everything = {ds.SOPInstanceUID for ds in study}
    all_url = f"{dicomweb}/studies/{study_uid}/instances"
    assert await qido_uids(all_url, admin.secret) == everything

    status, raw = await post(target, admin.secret)
    assert status == 200, raw
    answer = json.loads(raw)
    note_uid = answer["rejectionNote"]
    assert answer["rejected"] == 3
    assert await qido_uids(all_url, admin.secret) == (
        {ds.SOPInstanceUID for ds in study[3:]} | {note_uid}
    )
    # The note is a valid KOS of the study, served like any instance.
    (note,) = [
        m
        for m in json.loads(
            (await http_get(f"{dicomweb}/studies/{study_uid}/metadata", token=admin.secret))[1]
        )
        if m["00080018"]["Value"] == [note_uid]
    ]
    assert note["00080016"]["Value"] == [KOS]
    assert note["0040A043"]["Value"][0]["00080100"]["Value"] == ["113001"]
    evidence = note["0040A375"]["Value"][0]["00081115"]["Value"][0]["00081199"]["Value"]
    assert {e["00081155"]["Value"][0] for e in evidence} == {ds.SOPInstanceUID for ds in study[:3]}
    # Unknown code, unknown study.
    assert (await post(f"/studies/{study_uid}/reject/999999^DCM", admin.secret))[0] == 400
    assert (await post("/studies/1.2.3.4/reject/113001^DCM", admin.secret))[0] == 404

    # Administrators list and undo over /admin; a reader may do neither.
    root = dicomweb.removesuffix("/dicom-web")
    async with aiohttp.ClientSession() as http:
        as_admin = {"Authorization": f"Bearer {admin.secret}"}
        as_reader = {"Authorization": f"Bearer {reader.secret}"}
        async with http.get(f"{root}/admin/rejections/instances", headers=as_reader) as r:
            assert r.status == 403
        async with http.get(f"{root}/admin/rejections/instances", headers=as_admin) as r:
            listed = await r.json()
        assert {i["sop_uid"] for i in listed} == {ds.SOPInstanceUID for ds in study[:3]}
        undo_url = f"{root}/admin/rejections/{note_uid}/undo"
        async with http.post(undo_url, headers=as_reader, json={}) as r:
            assert r.status == 403
        async with http.post(undo_url, headers=as_admin, json={"reason": "wrong series"}) as r:
            assert r.status == 200
            undone = await r.json()
    assert set(undone["visibleAgain"]) == {ds.SOPInstanceUID for ds in study[:3]}
    assert await qido_uids(all_url, admin.secret) == everything | {note_uid}
    async with archive.db.acquire() as conn:
        actions = [
            r["action"]
            for r in await conn.fetch(
                "SELECT action FROM audit WHERE action LIKE 'reject%' ORDER BY id"
            )
        ]
    assert actions == ["reject", "reject-undo"]


async def test_approval_empties_the_replica_and_a_legal_hold_wins(
    archive_settings: Any, tmp_path: Path
) -> None:
    from lifecycle.worker import run_once
    from tests.integration.lifecycle_support import fetch, ingest, opened, with_lifecycle
    from vna.config import ReplicaSettings
    from vna.storage.factory import open_store

    replica_root = tmp_path / "replica"
    rules = (RetentionRuleSettings(name="forever", retain_years=100),)
    settings = with_lifecycle(
        dataclasses.replace(
            archive_settings, replicas=(ReplicaSettings("dr", replica_root.as_uri()),)
        ),
        compression={"level": 0},
        lifecycle={"delete_grace_seconds": 0},
        retention_rules=rules,
    )
    async with opened(settings) as archive:
        held_study = ct_study(series=1, slices=3, patient_id="HELD")
        study = ct_study(series=1, slices=4)
        await ingest(archive, held_study + study)
        await ingest(
            archive,
            [rejection_note(study, study[:2]), rejection_note(held_study, held_study[:1])],
        )
        await run_once(archive)  # replication of every object
        replica = await open_store(replica_root.as_uri(), name="dr")
        rejected_keys = {
            r["object_key"]
            for r in await fetch(
                archive,
                "SELECT object_key FROM instances WHERE sop_uid = ANY($1::text[])",
                [ds.SOPInstanceUID for ds in study[:2]],
            )
        }
        assert rejected_keys <= {k async for k in replica.iter_keys()}
        await retention.set_hold(
            archive.db, actor="legal", reason="litigation", study_uid=held_study[0].StudyInstanceUID
        )

        review = await retention.create_review(archive.db, rules, dt.date.today(), "records")
        states = {r["sop_uid"]: r["state"] for r in review.rejected}
        assert states == {
            study[0].SOPInstanceUID: "due",
            study[1].SOPInstanceUID: "due",
            held_study[0].SOPInstanceUID: "held",
        }
        report = await retention.approve(archive, rules, review.id, "records")
        assert set(report.deleted_instances) == {ds.SOPInstanceUID for ds in study[:2]}
        await run_once(archive)  # the replica deletions
        on_replica = {k async for k in replica.iter_keys()}
        assert on_replica.isdisjoint(rejected_keys)
        assert len(on_replica) == 3 + 2 + 2  # held study, the two kept, the two notes
        # The held instance is still archived (withdrawn), and listed again next time.
        again = await retention.create_review(archive.db, rules, dt.date.today(), "records")
        assert [(r["sop_uid"], r["state"]) for r in again.rejected] == [
            (held_study[0].SOPInstanceUID, "held")
        ]
        await replica.close()


async def test_a_catalogue_rebuild_withdraws_the_rejected_instances_again(
    archive_settings: Any,
) -> None:
    from lifecycle.dr import catalogue_rebuild
    from tests.integration.lifecycle_support import ingest, opened

    async with opened(archive_settings) as archive:
        study = ct_study(series=1, slices=5)
        note = rejection_note(study, study[:2])
        # The note first for this study: a rebuild files objects in no particular order.
        await ingest(archive, [note, *study])
        runner, url = await serve_dicomweb(archive)
        try:
            path = f"{url}/studies/{study[0].StudyInstanceUID}/instances"
            expected = {ds.SOPInstanceUID for ds in study[2:]} | {note.SOPInstanceUID}
            assert await qido_uids(path) == expected
            async with archive.db.acquire() as conn:
                await conn.execute(
                    "TRUNCATE patients, studies, series, instances, instance_versions, jobs,"
                    " replicas, study_retention, rejection_notes, rejected_instances"
                    " RESTART IDENTITY CASCADE"
                )
            assert await qido_uids(path) == set()
            assert archive.sites is not None
            report = await catalogue_rebuild.rebuild(
                archive.db, archive.sites, archive.store, scratch_dir=archive.incoming, actor="t"
            )
            assert report.instances == 6
            assert await qido_uids(path) == expected
        finally:
            await runner.cleanup()


async def test_command_line_lists_and_undoes(
    archive: Archive, dicomweb: str, tmp_path: Path, capsys: Any
) -> None:
    from tests.security_support import config_file, vna

    study = ct_study(series=1, slices=4)
    note = rejection_note(study, study[:3])
    assert await stow(dicomweb, [*study, note]) == 200
    config = config_file(archive.settings, tmp_path / "vna.toml")

    code, out, _ = await vna(capsys, config, "rejections", "list")
    assert code == 0
    assert note.SOPInstanceUID in out and "Rejected for Quality Reasons" in out
    code, out, _ = await vna(capsys, config, "rejections", "instances", "--format", "json")
    assert {r["sop_uid"] for r in json.loads(out)} == {ds.SOPInstanceUID for ds in study[:3]}

    code, out, _ = await vna(capsys, config, "rejections", "undo", note.SOPInstanceUID)
    assert code == 0 and "3 instances visible again" in out
    code, _, err = await vna(capsys, config, "rejections", "undo", note.SOPInstanceUID)
    assert code == 1 and "undone already" in err and "Traceback" not in err
    code, _, err = await vna(capsys, config, "rejections", "undo", "1.2.3")
    assert code == 1 and "no rejection note 1.2.3" in err
    path = f"{dicomweb}/studies/{study[0].StudyInstanceUID}/instances"
    assert await qido_uids(path) == {ds.SOPInstanceUID for ds in study} | {note.SOPInstanceUID}
    # Sent again, an undone note changes nothing.
    assert await stow(dicomweb, [note]) == 200
    assert len(await qido_uids(path)) == 5


async def test_an_instance_filed_while_its_note_is_being_recorded_is_withdrawn(
    archive: Archive,
) -> None:
    """The note and the instance on two associations at once: the instance's filing waits for
    the note's transaction and is filed withdrawn (migration 0160's advisory locks)."""
    import asyncio

    from tests.integration.lifecycle_support import ingest
    from vna.catalog import rejections as catalogue
    from vna.dicom.iocm import rejection_note as recognise
    from vna.dicom.parse import dicom_json

    study = ct_study(series=1, slices=3)
    await ingest(archive, study[:2])
    parsed = recognise(dicom_json(rejection_note(study, study[2:])))
    assert parsed is not None
    async with archive.db.transaction() as conn:
        recorded = await catalogue.record_note(conn, parsed, "test")
        assert recorded is not None and recorded.not_held == 1
        arriving = asyncio.create_task(ingest(archive, study[2:]))
        await asyncio.sleep(1.0)
        assert not arriving.done()  # waits for the note's transaction
    await arriving
    listed = await rejections.list_rejected(archive.db, study[0].StudyInstanceUID)
    assert [r["sop_uid"] for r in listed] == [study[2].SOPInstanceUID]


async def test_retention_commands_show_and_delete_rejected_instances(
    archive: Archive, dicomweb: str, tmp_path: Path, capsys: Any
) -> None:
    from tests.security_support import config_file, vna

    study = ct_study(series=1, slices=4)
    note = rejection_note(study, study[:2], code="113039")
    assert await stow(dicomweb, [*study, note]) == 200
    config = config_file(archive.settings, tmp_path / "vna.toml")

    code, out, _ = await vna(capsys, config, "retention", "review", "--format", "json")
    assert code == 0
    review = json.loads(out)
    assert {(r["sop_uid"], r["meaning"], r["state"]) for r in review["rejected_instances"]} == {
        (ds.SOPInstanceUID, "Data Retention Policy Expired", "due") for ds in study[:2]
    }
    code, out, _ = await vna(capsys, config, "retention", "show", str(review["review"]))
    assert "113039^DCM Data Retention Policy Expired" in out and study[0].SOPInstanceUID in out

    review_id = str(review["review"])
    page = tmp_path / "review.html"
    code, _, _ = await vna(
        capsys, config, "retention", "show", review_id, "--format", "html", "--output", str(page)
    )
    assert code == 0
    html_text = page.read_text(encoding="utf-8")
    assert "Rejected instances (IOCM rejection notes)" in html_text
    assert study[1].SOPInstanceUID in html_text and "Data Retention Policy Expired" in html_text
    code, out, _ = await vna(capsys, config, "retention", "approve", review_id, "--dry-run")
    assert code == 0 and "and 2 rejected instances" in out
    assert len(await rejections.list_rejected(archive.db)) == 2  # a dry run deletes nothing
    code, out, _ = await vna(
        capsys, config, "retention", "approve", review_id, "--as", "Jane Roe", "--yes"
    )
    assert code == 0 and "deleted 2 rejected instances" in out
    assert await rejections.list_rejected(archive.db) == []
    path = f"{dicomweb}/studies/{study[0].StudyInstanceUID}/instances"
    assert await qido_uids(path) == {ds.SOPInstanceUID for ds in study[2:]} | {note.SOPInstanceUID}
