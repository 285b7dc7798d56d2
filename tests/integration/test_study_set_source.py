"""Re-attribution (issue 23, item 7): studies received before sources were declared are filed as
source DEFAULT; ``vna studies set-source`` re-files them under a declared source with its issuer
of patient ID, through the correction path (Original Attributes Sequence, audit, undo), and
``vna import`` asks for ``--source`` once sources are declared.

Phase one is an archive without sources receiving over DIMSE from two PACS; phase two is the
same archive with sources declared, driven from the command line as an administrator would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.factory import ct_study, part10
from tests.integration.test_dimse import store
from vna.archive import Archive
from vna.config import DimseSettings, SourceSettings
from vna.gateway.dimse import DimseListener

SOURCES = (
    SourceSettings(name="HOSP1", ae_titles=("HOSP1PACS",), issuer_of_patient_id="HOSP1"),
    SourceSettings(name="HOSP2", ae_titles=("HOSP2PACS",), issuer_of_patient_id="HOSP2"),
)


def config_file(archive: Archive, tmp_path: Path) -> Path:
    lines = [
        f'data_dir = "{archive.settings.data_dir}"',
        f'database_url = "{archive.settings.database_url}"',
    ]
    for src in SOURCES:
        lines += [
            "[[sources]]",
            f'name = "{src.name}"',
            f"ae_titles = {list(src.ae_titles)!r}".replace("'", '"'),
            f'issuer_of_patient_id = "{src.issuer_of_patient_id}"',
        ]
    path = tmp_path / "vna.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def received_before_sources(archive: Archive) -> dict[str, list[pydicom.Dataset]]:
    """Three studies sent over DIMSE while no source was declared: two from HOSP1's PACS (one
    patient), one from another PACS."""
    archive.settings = dataclasses.replace(
        archive.settings, dimse=DimseSettings(port=0, ae_title="VNA")
    )
    listener = DimseListener(archive)
    await listener.start()
    sent = {
        "hosp1": ct_study(patient_id="P7", patient_name="SEVEN^ANNA", series=1, slices=2),
        "hosp1-later": ct_study(patient_id="P7", patient_name="SEVEN^ANNA", series=1, slices=1),
        "other": ct_study(patient_id="P7", patient_name="OTHER^OTTO", series=1, slices=1),
    }
    try:
        for key, calling in (("hosp1", "HOSP1PACS"), ("hosp1-later", "HOSP1PACS")):
            assert await asyncio.to_thread(store, listener.port, sent[key], calling) == [0] * len(
                sent[key]
            )
        assert await asyncio.to_thread(store, listener.port, sent["other"], "OTHERPACS") == [0]
    finally:
        await listener.stop(grace_seconds=5)
    return sent


async def filing(archive: Archive, study_uid: str) -> tuple[str, str, list[str]]:
    """The study's patient identity and its instances' sources, as the catalogue files them."""
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT p.patient_id, p.issuer, st.source FROM studies st"
            " JOIN patients p ON p.id = st.patient_fk WHERE st.study_uid = $1",
            study_uid,
        )
        sources = await conn.fetch(
            "SELECT DISTINCT i.source FROM instances i JOIN series se ON se.id = i.series_fk"
            " JOIN studies st ON st.id = se.study_fk WHERE st.study_uid = $1",
            study_uid,
        )
    return f"{row['patient_id']}^^^{row['issuer']}", row["source"], [r["source"] for r in sources]


async def stored_object(archive: Archive, ds: pydicom.Dataset) -> pydicom.Dataset:
    (found,) = await archive.retriever.find_by_uids([ds.SOPInstanceUID])
    return pydicom.dcmread(io.BytesIO(await archive.retriever.read(found)))


@pytest.fixture
def vna(tmp_path: Path, archive: Archive, capsys: Any) -> Any:
    from vna.cli import main

    config = config_file(archive, tmp_path)

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--config", str(config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_set_source_from_an_ae_title_refiles_audits_and_undoes(
    archive: Archive, received_before_sources: dict[str, list[pydicom.Dataset]], vna: Any
) -> None:
    sent = received_before_sources
    uid = sent["hosp1"][0].StudyInstanceUID
    later = sent["hosp1-later"][0].StudyInstanceUID
    other = sent["other"][0].StudyInstanceUID
    before = {ds.SOPInstanceUID: await stored_object(archive, ds) for ds in sent["hosp1"]}
    assert await filing(archive, uid) == ("P7^^^", "DEFAULT", ["DEFAULT"])

    # A look first: nothing changes.
    code, out, err = await vna(
        "studies", "set-source", "--from-ae", "HOSP1PACS", "--source", "HOSP1", "--dry-run"
    )
    assert code == 0, err
    assert f"would file study {uid} (P7, source DEFAULT) as HOSP1 under P7^^^HOSP1" in out
    assert "would re-file 2 of 2 studies" in out
    assert await filing(archive, uid) == ("P7^^^", "DEFAULT", ["DEFAULT"])

    code, out, err = await vna(
        "studies", "set-source", "--from-ae", "HOSP1PACS", "--source", "HOSP1"
    )
    assert code == 0, err
    assert "re-filed 2 of 2 studies" in out
    changes = [int(line.split()[1].rstrip(":")) for line in out.splitlines() if "change" in line]
    assert len(changes) == 2

    # Filed under HOSP1's identity, as HOSP1, in the catalogue and in the objects.
    for study in (uid, later):
        assert await filing(archive, study) == ("P7^^^HOSP1", "HOSP1", ["HOSP1"])
    obj = await stored_object(archive, sent["hosp1"][0])
    assert obj.IssuerOfPatientID == "HOSP1"
    item = obj.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert obj.PixelData == sent["hosp1"][0].PixelData
    # The other PACS's study of a patient with the same ID is left alone.
    assert await filing(archive, other) == ("P7^^^", "DEFAULT", ["DEFAULT"])
    async with archive.db.acquire() as conn:
        audited = await conn.fetch(
            "SELECT study_uid, detail FROM audit WHERE action = 'study-set-source' ORDER BY id"
        )
    assert [a["study_uid"] for a in audited] == [uid, later]
    assert audited[0]["detail"]["changes"]["source"] == {"from": "DEFAULT", "to": "HOSP1"}

    # Nothing left to re-file from that AE title.
    code, out, _ = await vna("studies", "set-source", "--from-ae", "HOSP1PACS", "--source", "HOSP1")
    assert code == 0 and "no study filed as DEFAULT" in out

    # Undo: the catalogue and the objects as they were, bit for bit.
    code, out, err = await vna("studies", "undo", str(changes[0]))
    assert code == 0, err
    assert await filing(archive, uid) == ("P7^^^", "DEFAULT", ["DEFAULT"])
    for ds in sent["hosp1"]:
        assert await stored_object(archive, ds) == before[ds.SOPInstanceUID]
    async with archive.db.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM audit WHERE action = 'study-set-source-undo' AND study_uid = $1",
            uid,
        )


async def test_set_source_of_one_study_and_of_a_patient(
    archive: Archive, received_before_sources: dict[str, list[pydicom.Dataset]], vna: Any
) -> None:
    sent = received_before_sources
    uid = sent["hosp1"][0].StudyInstanceUID
    code, out, err = await vna("studies", "set-source", uid, "--source", "HOSP1")
    assert code == 0, err
    assert out.startswith("change ") and f"study {uid} filed as HOSP1" in out
    assert await filing(archive, uid) == ("P7^^^HOSP1", "HOSP1", ["HOSP1"])
    # Again: one clear line, nothing changed.
    code, _, err = await vna("studies", "set-source", uid, "--source", "HOSP1")
    assert (
        code == 1
        and err.strip() == f"vna: study {uid} is already filed as source HOSP1 under P7^^^HOSP1"
    )
    # An undeclared source.
    code, _, err = await vna("studies", "set-source", uid, "--source", "HOSP9")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not a declared source" in err

    # Every study of a patient (the remaining two under P7 without issuer) into an existing
    # identity: the later HOSP1 study joins the patient P7^^^HOSP1 already has.
    code, out, err = await vna("studies", "set-source", "--patient", "P7", "--source", "HOSP1")
    assert code == 0, err
    assert "re-filed 2 of 2 studies" in out
    async with archive.db.acquire() as conn:
        studies = await conn.fetchval(
            "SELECT count(*) FROM studies st JOIN patients p ON p.id = st.patient_fk"
            " WHERE p.patient_id = 'P7' AND p.issuer = 'HOSP1'"
        )
    assert studies == 3
    # Demographics of the patient it joined.
    joined = await stored_object(archive, sent["other"][0])
    assert (joined.IssuerOfPatientID, str(joined.PatientName)) == ("HOSP1", "SEVEN^ANNA")


async def test_import_needs_a_source_once_sources_are_declared(
    archive: Archive, tmp_path: Path, vna: Any
) -> None:
    folder = tmp_path / "cd"
    folder.mkdir()
    (ds,) = ct_study(patient_id="P8", series=1, slices=1)
    (folder / "image.dcm").write_bytes(part10(ds))
    code, _, err = await vna("import", str(folder))
    assert code == 1
    assert err.strip().splitlines() == [
        "vna: --source is required once sources are declared (one of: HOSP1, HOSP2)"
    ]
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM instances") == 0
    code, _, err = await vna("import", str(folder), "--source", "HOSP2")
    assert code == 0, err
    assert await filing(archive, ds.StudyInstanceUID) == ("P8^^^HOSP2", "HOSP2", ["HOSP2"])


async def test_a_resend_from_the_declared_source_after_refiling(
    archive: Archive, received_before_sources: dict[str, list[pydicom.Dataset]], vna: Any
) -> None:
    """The PACS sends the study again once it is declared: acknowledged, filed where the
    re-attribution put it, no conflict and no second patient."""
    sent = received_before_sources["hosp1"]
    uid = sent[0].StudyInstanceUID
    code, _, err = await vna("studies", "set-source", uid, "--source", "HOSP1")
    assert code == 0, err
    archive.settings = dataclasses.replace(archive.settings, sources=SOURCES)
    listener = DimseListener(archive)
    await listener.start()
    try:
        statuses = await asyncio.to_thread(store, listener.port, sent, "HOSP1PACS")
    finally:
        await listener.stop(grace_seconds=5)
    assert all(s in (0x0000, 0xB000) for s in statuses), statuses
    assert await filing(archive, uid) == ("P7^^^HOSP1", "HOSP1", ["HOSP1"])
    async with archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM conflicts") == 0
        assert await conn.fetchval("SELECT count(*) FROM instances") == 4
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM patients WHERE patient_id = 'P7' AND issuer = 'HOSP1'"
            )
            == 1
        )
