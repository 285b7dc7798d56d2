"""Federation over real HTTP: source profiles, normalisation, patient identity and conflict
policies (PostgreSQL catalogue, filesystem store, STOW-RS and WADO-RS)."""

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
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid

from tests.factory import ct_study, part10, split_multipart, stow_body
from vna.archive import Archive
from vna.config import AdminSettings, Settings, SourceSettings
from vna.dicom.coercion import CoercionRule

pytestmark = pytest.mark.asyncio

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
TOKENS = {"H1": "token-one", "H2": "token-two", "REPL": "token-repl", "KEEP": "token-keep"}
# Source tokens store; reading back needs a reader or admin token.
ADMIN_TOKEN = "token-admin"
READ = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SOURCES = (
    SourceSettings(
        name="H1",
        issuer_of_patient_id="HOSP1",
        token_sha256=_sha(TOKENS["H1"]),
        coerce=(CoercionRule("prefix", "AccessionNumber", "H1-"),),
    ),
    SourceSettings(name="H2", issuer_of_patient_id="HOSP2", token_sha256=_sha(TOKENS["H2"])),
    SourceSettings(
        name="REPL",
        issuer_of_patient_id="HOSP1",
        token_sha256=_sha(TOKENS["REPL"]),
        on_conflict="replace",
    ),
    SourceSettings(
        name="KEEP",
        issuer_of_patient_id="HOSP1",
        token_sha256=_sha(TOKENS["KEEP"]),
        on_conflict="keep-both",
    ),
)


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings, sources=SOURCES, admin=AdminSettings(_sha(ADMIN_TOKEN))
    )


async def stow(url: str, parts: list[bytes], source: str) -> tuple[int, dict[str, Any]]:
    body, content_type = stow_body(parts)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKENS[source]}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/studies", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def retrieve(url: str, ds: pydicom.Dataset) -> bytes:
    target = (
        f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(target, headers={"Accept": ACCEPT_DICOM, **READ}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        (part,) = split_multipart(await resp.read(), resp.headers["Content-Type"])
        return part


async def metadata(url: str, study_uid: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/studies/{study_uid}/metadata",
            headers={"Accept": "application/dicom+json", **READ},
        ) as resp,
    ):
        assert resp.status == 200
        result: list[dict[str, Any]] = await resp.json(content_type=None)
        return result


def coerced(body: dict[str, Any]) -> list[bool]:
    return ["00081196" in ref for ref in body.get("00081199", {}).get("Value", [])]


async def rows(archive: Archive, sql: str, *args: Any) -> list[Any]:
    async with archive.db.acquire() as conn:
        return list(await conn.fetch(sql, *args))


# --- patient identity ---------------------------------------------------------------------------


async def test_same_patient_id_from_two_sources_is_two_patients(archive, dicomweb):
    first = ct_study(patient_id="12345", patient_name="DOE^JANE", series=1, slices=2)
    second = ct_study(patient_id="12345", patient_name="ROE^RICHARD", series=1, slices=2)
    status, body = await stow(dicomweb, [part10(ds) for ds in first], "H1")
    assert status == 202 and all(coerced(body))  # issuer assigned: a coercion (0xB000)
    status, body = await stow(dicomweb, [part10(ds) for ds in second], "H2")
    assert status == 202 and all(coerced(body))

    patients = await rows(
        archive,
        "SELECT p.patient_id, p.issuer, p.patient_name, array_agg(s.study_uid) AS studies"
        " FROM patients p JOIN studies s ON s.patient_fk = p.id GROUP BY p.id ORDER BY p.issuer",
    )
    assert [(p["patient_id"], p["issuer"], p["patient_name"]) for p in patients] == [
        ("12345", "HOSP1", "DOE^JANE"),
        ("12345", "HOSP2", "ROE^RICHARD"),
    ]
    assert patients[0]["studies"] == [first[0].StudyInstanceUID]
    assert patients[1]["studies"] == [second[0].StudyInstanceUID]

    # The stored objects carry the issuer, the coerced accession number and the originals.
    stored = pydicom.dcmread(io.BytesIO(await retrieve(dicomweb, first[0])))
    assert stored.IssuerOfPatientID == "HOSP1"
    assert stored.AccessionNumber == "H1-ACC001"
    item = stored.OriginalAttributesSequence[0]
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.SourceOfPreviousValues == "H1"
    assert item.ModifiedAttributesSequence[0].AccessionNumber == "ACC001"
    assert item.ModifiedAttributesSequence[0].IssuerOfPatientID == ""
    # Pixel data bytes unchanged.
    assert stored.PixelData == first[0].PixelData
    # WADO-RS metadata (from the catalogue) says the same.
    meta = await metadata(dicomweb, first[0].StudyInstanceUID)
    assert {m["00100021"]["Value"][0] for m in meta} == {"HOSP1"}


async def test_eight_concurrent_senders_of_one_new_patient_make_one_patient(archive, dicomweb):
    studies = [ct_study(patient_id="NEW-1", series=1, slices=1) for _ in range(8)]
    results = await asyncio.gather(*(stow(dicomweb, [part10(s[0])], "H1") for s in studies))
    assert [status for status, _ in results] == [202] * 8
    patients = await rows(archive, "SELECT id FROM patients WHERE patient_id = 'NEW-1'")
    assert len(patients) == 1
    owners = await rows(archive, "SELECT DISTINCT patient_fk FROM studies")
    assert [o["patient_fk"] for o in owners] == [patients[0]["id"]]


# --- normalisation ------------------------------------------------------------------------------


def _charset_instances() -> list[tuple[str, bytes]]:
    """pydicom's character set files that are complete instances (the SQ ones lack UIDs).

    Some are variants of one instance (chrFren, chrFrenMulti) with its UIDs: those get new
    ones, written by pydicom in their own character set.
    """
    out = []
    seen: set[str] = set()
    for name in sorted(Path(p).name for p in get_charset_files("chr*.dcm")):
        data = Path(get_charset_files(name)[0]).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        if "SOPInstanceUID" not in ds:
            continue
        if ds.SOPInstanceUID in seen:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            data = part10(ds)
        seen.add(ds.SOPInstanceUID)
        out.append((name, data))
    return out


async def test_charset_files_come_back_in_utf8_with_the_originals(archive, dicomweb):
    files = _charset_instances()
    assert len(files) >= 14
    for name, data in files:
        status, _ = await stow(dicomweb, [data], "H2")
        assert status in (200, 202), name
        received = pydicom.dcmread(io.BytesIO(data))
        back = pydicom.dcmread(io.BytesIO(await retrieve(dicomweb, received)))
        assert back.SpecificCharacterSet == "ISO_IR 192", name
        assert str(back.PatientName) == str(received.PatientName), name
        for keyword in ("OtherPatientNames", "AdditionalPatientHistory", "OperatorsName"):
            if keyword in received:
                assert str(back[keyword].value) == str(received[keyword].value), (name, keyword)
        original = back.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
        if received.SpecificCharacterSet != "ISO_IR 192":
            assert original.SpecificCharacterSet == received.SpecificCharacterSet, name
            assert str(original.PatientName) == str(received.PatientName), name
        if "PixelData" in received:
            assert back.PixelData == received.PixelData, name
    # The catalogue indexes the decoded names.
    names = {r["patient_name"] for r in await rows(archive, "SELECT patient_name FROM patients")}
    assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in names
    assert "Hong^Gildong=洪^吉洞=홍^길동" in names


async def test_resent_instance_is_never_a_conflict_even_after_normalisation(archive, dicomweb):
    study = ct_study(series=1, slices=2)
    sent = [part10(ds) for ds in study]
    assert (await stow(dicomweb, sent, "H1"))[0] == 202
    stored = [await retrieve(dicomweb, ds) for ds in study]
    assert stored != sent  # normalised: other bytes stored

    # The sender resends what it sent; a replica sends back what the archive stored.
    for parts in (sent, stored):
        status, body = await stow(dicomweb, parts, "H1")
        assert status == 200 and not any(coerced(body)), body
    assert len(await rows(archive, "SELECT id FROM instances")) == 2
    assert await rows(archive, "SELECT id FROM conflicts") == []
    # Under a source whose policy is keep-both or replace, too.
    for source in ("KEEP", "REPL"):
        status, _ = await stow(dicomweb, sent, source)
        assert status == 200
    assert await rows(archive, "SELECT id FROM conflicts") == []
    assert await rows(archive, "SELECT id FROM instance_versions") == []


def _copy_of(name: str, folder: Path) -> tuple[Path, bytes]:
    data = Path(get_charset_files(name)[0]).read_bytes()
    path = folder / name
    path.write_bytes(data)
    return path, data


async def test_profile_free_archive_stores_bit_exact(archive_settings, tmp_path):
    # Without declared sources nothing is normalised (the default source keeps bytes as sent).
    settings = dataclasses.replace(archive_settings, sources=())
    archive = await Archive.open(settings)
    try:
        from vna.config import DEFAULT_SOURCE
        from vna.ingest.pipeline import Outcome, Sender

        path, data = _copy_of("chrFren.dcm", tmp_path)
        result = await archive.ingester.ingest_file(
            path, Sender(DEFAULT_SOURCE, "import", "test"), consume=False
        )
        assert result.outcome is Outcome.STORED and result.warnings == ()
        (instance,) = await archive.retriever.find_by_uids([result.sop_instance_uid])
        assert await archive.retriever.read(instance) == data
    finally:
        await archive.close()


# --- conflicts ----------------------------------------------------------------------------------


def _other_version(ds: pydicom.Dataset) -> bytes:
    changed = pydicom.Dataset(ds)
    changed.file_meta = ds.file_meta
    changed.StudyDescription = "CT CHEST (corrected)"
    return part10(changed)


async def test_reject_policy_refuses_other_content_with_a_reason(archive, dicomweb):
    ds = ct_study(series=1, slices=1)[0]
    assert (await stow(dicomweb, [part10(ds)], "H1"))[0] == 202
    status, body = await stow(dicomweb, [_other_version(ds)], "H1")
    assert status == 409
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]


async def test_replace_policy_makes_the_new_version_current_and_keeps_the_old(archive, dicomweb):
    ds = ct_study(series=1, slices=1)[0]
    assert (await stow(dicomweb, [part10(ds)], "REPL"))[0] == 202
    before = await rows(archive, "SELECT object_key, sha256 FROM instances")
    status, body = await stow(dicomweb, [_other_version(ds)], "REPL")
    assert status == 202 and coerced(body) == [True]  # the issuer, again
    back = pydicom.dcmread(io.BytesIO(await retrieve(dicomweb, ds)))
    assert back.StudyDescription == "CT CHEST (corrected)"
    meta = await metadata(dicomweb, ds.StudyInstanceUID)
    assert meta[0]["00081030"]["Value"] == ["CT CHEST (corrected)"]
    (kept,) = await rows(archive, "SELECT object_key, sha256, reason, actor FROM instance_versions")
    assert (kept["object_key"], kept["sha256"]) == (before[0]["object_key"], before[0]["sha256"])
    assert kept["reason"] == "replace" and kept["actor"] == "token:REPL"
    assert await archive.store.stat(kept["object_key"]) is not None  # the old object is kept
    actions = [
        r["action"]
        for r in await rows(archive, "SELECT action FROM audit ORDER BY id")
        if r["action"] not in ("retrieve", "metadata", "query")  # reads are audited too
    ]
    assert actions == ["store", "replace"]
    # The superseded version resent is no flip-flop: a duplicate.
    assert (await stow(dicomweb, [part10(ds)], "REPL"))[0] == 200
    back = pydicom.dcmread(io.BytesIO(await retrieve(dicomweb, ds)))
    assert back.StudyDescription == "CT CHEST (corrected)"


async def test_keep_both_policy_quarantines_the_new_version(archive, dicomweb):
    ds = ct_study(series=1, slices=1)[0]
    assert (await stow(dicomweb, [part10(ds)], "KEEP"))[0] == 202
    status, body = await stow(dicomweb, [_other_version(ds)], "KEEP")
    assert status == 202 and coerced(body) == [True]
    # The archived version is still the one served.
    back = pydicom.dcmread(io.BytesIO(await retrieve(dicomweb, ds)))
    assert back.StudyDescription == "CT CHEST"
    assert len(await metadata(dicomweb, ds.StudyInstanceUID)) == 1
    (conflict,) = await rows(archive, "SELECT * FROM conflicts")
    assert conflict["state"] == "open" and conflict["source"] == "KEEP"
    assert await archive.store.stat(conflict["object_key"]) is not None
    # Resending the quarantined version opens no second conflict.
    assert (await stow(dicomweb, [_other_version(ds)], "KEEP"))[0] == 200
    assert len(await rows(archive, "SELECT id FROM conflicts")) == 1
    assert len(await rows(archive, "SELECT id FROM instances")) == 1
    audit = await rows(archive, "SELECT action, detail FROM audit WHERE action = 'quarantine'")
    assert audit[0]["detail"]["conflict"] == conflict["id"]


# --- DIMSE: the same pipeline -------------------------------------------------------------------


async def test_c_store_from_a_source_ae_is_coerced_with_status_b000(archive_settings):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from vna.config import DimseSettings
    from vna.gateway.dimse import DimseListener

    settings = dataclasses.replace(
        archive_settings,
        sources=(SourceSettings(name="H1", ae_titles=("H1PACS",), issuer_of_patient_id="HOSP1"),),
        dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
    )
    archive = await Archive.open(settings)
    listener = DimseListener(archive)
    await listener.start()
    study = ct_study(patient_id="D1", series=1, slices=2)

    def send() -> list[int]:
        ae = AE(ae_title="H1PACS")
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="VNA")
        try:
            return [int(assoc.send_c_store(ds).Status) for ds in study]
        finally:
            assoc.release()

    try:
        assert await asyncio.to_thread(send) == [0xB000, 0xB000]
        async with archive.db.acquire() as conn:
            issuers = await conn.fetch("SELECT issuer FROM patients WHERE patient_id = 'D1'")
        assert [r["issuer"] for r in issuers] == ["HOSP1"]
        # A resend over DIMSE: a plain success, nothing new.
        assert await asyncio.to_thread(send) == [0, 0]
    finally:
        await listener.stop(grace_seconds=5)
        await archive.close()
