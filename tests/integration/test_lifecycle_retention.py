"""Retention end to end on a real catalogue and store: retain-until at ingest, look-ahead
reviews, legal holds, two-phase deletion with re-checks, the audit trail, rule changes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from lifecycle import retention
from lifecycle.policy.retention import add_years
from lifecycle.report import render
from lifecycle.worker import run_once
from tests.integration.lifecycle_support import fetch, ingest, instances_of, opened, with_lifecycle
from tests.phantom import dicom_date, smooth_ct_study
from vna.archive import Archive
from vna.config import RetentionRuleSettings, Settings
from vna.errors import InvalidRequest, NotFound

pytestmark = pytest.mark.asyncio

TODAY = dt.date.today()
ADULT_CT = RetentionRuleSettings(
    name="adult-ct", modalities=("CT",), min_age_at_study=18, retain_years=10
)
CHILD = RetentionRuleSettings(
    name="child", max_age_at_study=17, retain_until_age=25, retain_years=10
)
RESEARCH_MR = RetentionRuleSettings(name="research-mr", modalities=("MR",), retain_years=5)
RULES = (ADULT_CT, CHILD, RESEARCH_MR)


def years_ago(years: int, days: int = 0) -> dt.date:
    return TODAY.replace(year=TODAY.year - years) + dt.timedelta(days=days)


def study(patient: str, date: dt.date | None, born: str = "19600101", modality: str = "CT"):
    return smooth_ct_study(
        patient_id=patient,
        series=1,
        slices=2,
        size=32,
        study_date=dicom_date(date) if date else "",
        birth_date=born,
        modality=modality,
    )


@dataclasses.dataclass
class Corpus:
    uids: dict[str, str]


async def load(archive: Archive) -> Corpus:
    """Studies named by what should become of them (today's date drives the dates)."""
    plan = {
        # due now: adult CT, 11 years ago
        "A": study("PA", years_ago(11)),
        # due now, but its patient will be put on hold (with their other study B2, also due)
        "B": study("PB", years_ago(12)),
        "B2": study("PB", years_ago(13)),
        # due in 30 days: listed by a 60-day look-ahead, pending after approval
        "D": study("PD", years_ago(10, days=30)),
        # recent: not due
        "E": study("PE", years_ago(2)),
        # no birth date: the child rule may apply: kept indefinitely
        "F": study("PF", years_ago(30), born=""),
        # child until 25 (born 15 years ago): not due for years
        "C": study("PC", years_ago(11), born=dicom_date(years_ago(15))),
        # MR research, 6 years ago: due under research-mr
        "H": study("PH", years_ago(6), modality="MR"),
    }
    uids = {}
    for name, datasets in plan.items():
        await ingest(archive, datasets)
        uids[name] = str(datasets[0].StudyInstanceUID)
    return Corpus(uids)


async def study_exists(archive: Archive, uid: str) -> bool:
    rows = await fetch(archive, "SELECT 1 FROM studies WHERE study_uid = $1", uid)
    return bool(rows)


async def test_review_hold_approve_audit(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, retention_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        corpus = await load(archive)
        u = corpus.uids
        await run_once(archive)  # the instance-stored jobs compute each study's retain-until

        computed = {
            r["study_uid"]: r
            for r in await fetch(
                archive,
                "SELECT st.study_uid, r.* FROM study_retention r"
                " JOIN studies st ON st.id = r.study_fk",
            )
        }
        assert computed[u["A"]]["retain_until"] == add_years(years_ago(11), 10)
        assert computed[u["A"]]["rule"] == "adult-ct"
        assert computed[u["F"]]["retain_until"] is None
        assert computed[u["C"]]["rule"] == "child"

        as_of = TODAY + dt.timedelta(days=60)
        first = await retention.create_review(archive.db, RULES, as_of, "user:records")
        assert {i["study_uid"] for i in first.due} == {u[k] for k in ("A", "B", "B2", "D", "H")}
        assert first.held == []
        listed = {i["study_uid"]: i for i in first.items}
        assert listed[u["A"]]["instances"] == 2 and listed[u["A"]]["bytes"] > 0
        assert listed[u["H"]]["rule"] == "research-mr"

        # A legal hold on patient PB takes both their studies out of the next review.
        hold = await retention.set_hold(
            archive.db, actor="user:legal", reason="litigation 2026-17", patient_id="PB"
        )
        second = await retention.create_review(archive.db, RULES, as_of, "user:records")
        assert {i["study_uid"] for i in second.due} == {u[k] for k in ("A", "D", "H")}
        assert {i["study_uid"] for i in second.held} == {u["B"], u["B2"]}
        assert all("litigation 2026-17" in i["hold"] for i in second.held)

        # Arrives after the first review, already due: not in it, so not deleted by it.
        late = study("PL", years_ago(20))
        await ingest(archive, late)
        await run_once(archive)
        # The research rule is reworded: its studies are no longer the ones reviewed.
        changed_rules = (
            ADULT_CT,
            CHILD,
            dataclasses.replace(RESEARCH_MR, study_description="*"),
        )
        objects_of_a = [r["object_key"] for r in await instances_of(archive, u["A"])]

        # Approve the first review (listed B and B2 before the hold).
        report = await retention.approve(archive, changed_rules, first.id, "user:records")
        assert report.deleted == [u["A"]]
        assert [uid for uid, _ in report.pending] == [u["D"]]
        skipped = dict(report.skipped)
        assert set(skipped) == {u["B"], u["B2"], u["H"]}
        assert "legal hold" in skipped[u["B"]] and "litigation" in skipped[u["B2"]]
        assert "rule changed" in skipped[u["H"]]

        # Exactly A went: catalogue rows, objects, the patient row (no other study).
        assert not await study_exists(archive, u["A"])
        for key in objects_of_a:
            assert await archive.store.stat(key) is None
        assert not await fetch(archive, "SELECT 1 FROM patients WHERE patient_id = 'PA'")
        for name in ("B", "B2", "C", "D", "E", "F", "H"):
            assert await study_exists(archive, u[name]), name
        assert await study_exists(archive, str(late[0].StudyInstanceUID))

        audit = await fetch(
            archive,
            "SELECT * FROM audit WHERE action LIKE 'retention-%' OR action LIKE 'legal-hold-%'"
            " ORDER BY id",
        )
        deletions = [a for a in audit if a["action"] == "retention-delete"]
        assert [a["study_uid"] for a in deletions] == [u["A"]]
        assert deletions[0]["actor"] == "user:records"
        assert deletions[0]["patient_id"] == "PA"
        assert deletions[0]["detail"]["review"] == first.id
        assert deletions[0]["detail"]["rule"] == "adult-ct"
        assert deletions[0]["detail"]["instances"] == 2
        actions = [a["action"] for a in audit]
        assert actions.count("retention-review") == 2
        assert "retention-approve" in actions and "legal-hold-set" in actions

        # Approving again changes nothing: what was done is done, what was refused stays so.
        again = await retention.approve(archive, changed_rules, first.id, "user:records")
        assert again.deleted == [] and again.skipped == []

        # D falls due on its date; the scheduler's part deletes it then, not before.
        early = await retention.execute_pending(archive, RULES, "lifecycle")
        assert early.deleted == [] and await study_exists(archive, u["D"])
        when = TODAY + dt.timedelta(days=31)
        later = await retention.execute_pending(archive, RULES, "lifecycle", when)
        assert later.deleted == [u["D"]]
        assert not await study_exists(archive, u["D"])
        (on_its_date,) = await fetch(
            archive,
            "SELECT actor, detail FROM audit WHERE action = 'retention-delete' AND study_uid = $1",
            u["D"],
        )
        # Carried out by the scheduler, approved by the person who approved the review.
        assert on_its_date["actor"] == "lifecycle"
        assert on_its_date["detail"]["approved_by"] == "user:records"

        items = {
            i["study_uid"]: i for i in (await retention.load_review(archive.db, first.id)).items
        }
        assert items[u["A"]]["state"] == "deleted" and items[u["D"]]["state"] == "deleted"
        assert items[u["B"]]["state"] == "skipped"

        # Releasing the hold is audited; the patient's studies are due again.
        released = await retention.release_hold(archive.db, hold["id"], "user:legal", "settled")
        assert released["released_by"] == "user:legal"
        with pytest.raises(InvalidRequest):
            await retention.release_hold(archive.db, hold["id"], "user:legal")
        third = await retention.create_review(archive.db, RULES, TODAY, "user:records")
        assert {u["B"], u["B2"]} <= {i["study_uid"] for i in third.due}
        assert (
            await fetch(
                archive, "SELECT count(*) AS n FROM audit WHERE action = 'legal-hold-release'"
            )
        )[0]["n"] == 1

        for fmt in ("table", "json", "csv", "html"):
            assert u["B"] in render(third, fmt)


async def test_hold_on_a_study_and_identity_checks(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, retention_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        one = study("P1", years_ago(12))
        other_issuer = smooth_ct_study(
            patient_id="P1",
            issuer="OTHER",
            series=1,
            slices=1,
            size=32,
            study_date=dicom_date(years_ago(12)),
        )
        await ingest(archive, one)
        await ingest(archive, other_issuer)
        await run_once(archive)
        uid = str(one[0].StudyInstanceUID)

        with pytest.raises(NotFound):
            await retention.set_hold(archive.db, actor="a", reason="r", study_uid="1.2.3.4")
        with pytest.raises(InvalidRequest):  # the same PatientID under two issuers
            await retention.set_hold(archive.db, actor="a", reason="r", patient_id="P1")
        with pytest.raises(InvalidRequest):
            await retention.set_hold(archive.db, actor="a", reason=" ", study_uid=uid)
        await retention.set_hold(archive.db, actor="a", reason="audit request", study_uid=uid)
        await retention.set_hold(
            archive.db, actor="a", reason="complaint", patient_id="P1", issuer="OTHER"
        )
        holds = await retention.list_holds(archive.db)
        assert [(h["scope"], h["studies"]) for h in holds] == [("study", 1), ("patient", 1)]

        review = await retention.create_review(archive.db, RULES, TODAY, "user:records")
        assert review.due == []
        assert len(review.held) == 2


async def test_rules_changed_are_recomputed_for_every_study(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, retention_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        s = study("PX", years_ago(3))
        await ingest(archive, s)
        await run_once(archive)
        (before,) = await fetch(archive, "SELECT * FROM study_retention")
        assert before["rule"] == "adult-ct"

    shorter = (dataclasses.replace(ADULT_CT, retain_years=2), CHILD, RESEARCH_MR)
    async with opened(with_lifecycle(settings, retention_rules=shorter)) as archive:
        summary = await run_once(archive)  # a worker starting under new rules recomputes
        assert summary.ticks[0].retention_recomputed == 1
        (after,) = await fetch(archive, "SELECT * FROM study_retention")
        assert after["retain_until"] == years_ago(1)
        assert after["rule_fingerprint"] != before["rule_fingerprint"]
        review = await retention.create_review(archive.db, shorter, TODAY, "user:records")
        assert [i["study_uid"] for i in review.due] == [str(s[0].StudyInstanceUID)]


async def test_deletion_takes_earlier_versions_with_it(archive_settings: Settings) -> None:
    from vna.config import SourceSettings

    replacing = SourceSettings(name="DEFAULT", on_conflict="replace")
    settings = with_lifecycle(archive_settings, retention_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        s = study("PV", years_ago(12))
        await ingest(archive, s)
        first_keys = {
            r["object_key"] for r in await instances_of(archive, str(s[0].StudyInstanceUID))
        }
        s[0].SeriesDescription = "CORRECTED"  # a resend with other content replaces it
        await ingest(archive, [s[0]], source=replacing)
        versions = await fetch(archive, "SELECT object_key FROM instance_versions")
        assert len(versions) == 1 and versions[0]["object_key"] in first_keys
        await run_once(archive)

        review = await retention.create_review(archive.db, RULES, TODAY, "user:records")
        report = await retention.approve(archive, RULES, review.id, "user:records")
        assert report.deleted == [str(s[0].StudyInstanceUID)]
        assert await fetch(archive, "SELECT * FROM instance_versions") == []
        for key in first_keys:
            assert await archive.store.stat(key) is None
        (audit,) = await fetch(
            archive, "SELECT detail FROM audit WHERE action = 'retention-delete'"
        )
        assert audit["detail"]["earlier_versions"] == 1


async def test_a_patient_hold_covers_linked_identities(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, retention_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        here = smooth_ct_study(
            patient_id="A1",
            issuer="HOSP_A",
            series=1,
            slices=1,
            size=32,
            study_date=dicom_date(years_ago(12)),
        )
        there = smooth_ct_study(
            patient_id="B7",
            issuer="HOSP_B",
            series=1,
            slices=1,
            size=32,
            study_date=dicom_date(years_ago(12)),
        )
        await ingest(archive, here)
        await ingest(archive, there)
        await run_once(archive)
        # The same person at two hospitals (a link as vna.admin.patients.link records it).
        await fetch(
            archive,
            "INSERT INTO patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b, created_by)"
            " VALUES ('A1', 'HOSP_A', 'B7', 'HOSP_B', 'test')",
        )
        before = await retention.create_review(archive.db, RULES, TODAY, "user:records")
        assert len(before.due) == 2
        await retention.set_hold(
            archive.db, actor="user:legal", reason="claim", patient_id="A1", issuer="HOSP_A"
        )
        review = await retention.create_review(archive.db, RULES, TODAY, "user:records")
        assert review.due == []
        assert {i["study_uid"] for i in review.held} == {
            str(here[0].StudyInstanceUID),
            str(there[0].StudyInstanceUID),
        }
        # Approving the review made before the hold deletes neither.
        report = await retention.approve(archive, RULES, before.id, "user:records")
        assert report.deleted == [] and len(report.skipped) == 2
