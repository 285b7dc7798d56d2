"""The races the multi-node tests (tests/acceptance/test_multinode.py) found, made
deterministic in one process: two archives (two nodes) on one catalogue and one store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from lifecycle import retention
from lifecycle.worker import run_once
from tests.factory import ct_study, part10
from tests.integration.lifecycle_support import fetch, opened, with_lifecycle
from vna.config import DEFAULT_SOURCE, RetentionRuleSettings, Settings
from vna.ingest.pipeline import Ingester, Outcome, Sender
from vna.storage.filesystem import FilesystemStore

pytestmark = pytest.mark.asyncio


async def _keys(store: Any) -> set[str]:
    return {key async for key in store.iter_keys("sha256/")}


async def test_an_object_written_for_an_instance_another_node_filed_first_is_deleted(
    archive_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node B receives an instance over C-STORE while node A receives it over STOW-RS (other
    File Meta: another object key).  B writes its object, A files first, B finds a resend: B's
    object is queued for deletion and gone after the grace period, A's stays."""
    settings = with_lifecycle(archive_settings, lifecycle={"delete_grace_seconds": 0})
    ds = ct_study(series=1, slices=1, size=32)[0]
    as_a = part10(ds)
    ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
    as_b = part10(ds)
    assert as_a != as_b
    async with opened(settings) as a, opened(dataclasses.replace(settings)) as b:
        sender = Sender(source=DEFAULT_SOURCE, protocol="import", actor="test")

        async def ingest(archive: Any, data: bytes) -> Outcome:
            path = archive.incoming / f"{uuid.uuid4().hex}.dcm"
            Path(path).write_bytes(data)  # noqa: ASYNC240 - a test
            return (await archive.ingester.ingest_file(path, sender)).outcome

        original = Ingester._file
        calls = 0

        async def a_files_first(self: Ingester, f: Any, sender: Sender) -> Any:
            nonlocal calls
            calls += 1
            if self is b.ingester and calls == 1:  # B's object is written: now A stores
                assert await ingest(a, as_a) is Outcome.STORED
            return await original(self, f, sender)

        monkeypatch.setattr(Ingester, "_file", a_files_first)
        assert await ingest(b, as_b) is Outcome.DUPLICATE
        store = a.store
        assert isinstance(store, FilesystemStore)
        filed = {r["object_key"] for r in await fetch(a, "SELECT object_key FROM instances")}
        assert len(filed) == 1
        # Until the workers ran, the bucket holds both; B's is queued for deletion.
        assert len(await _keys(store)) == 2
        queued = await fetch(
            a, "SELECT payload->>'object_key' AS k FROM jobs WHERE kind = 'delete-object'"
        )
        assert [r["k"] for r in queued] == list(await _keys(store) - filed)
        await run_once(a)
        assert await _keys(store) == filed


async def test_two_approvals_of_one_review_at_once_approve_it_once(
    archive_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two administrators approve the same review at the same moment from two machines: one
    approval is recorded (review and audit trail), each study is deleted once."""
    rule = RetentionRuleSettings(name="short", retain_years=1)
    settings = with_lifecycle(archive_settings, retention_rules=(rule,))
    studies = [ct_study(patient_id=f"AP{i}", series=1, slices=1, size=32) for i in range(3)]
    async with opened(settings) as a, opened(dataclasses.replace(settings)) as b:
        from tests.integration.lifecycle_support import ingest

        for study in studies:
            await ingest(a, study)
        review = await retention.create_review(a.db, (rule,), dt.date.today(), "user:test")
        assert len(review.due) == 3
        import asyncio

        # Both load the review while it is still open, as two processes can.
        loaded = asyncio.Barrier(2)
        load = retention.load_review

        async def load_together(db: Any, review_id: int) -> Any:
            got = await load(db, review_id)
            await loaded.wait()
            return got

        monkeypatch.setattr(retention, "load_review", load_together)
        reports = await asyncio.gather(
            retention.approve(a, (rule,), review.id, "Jane Roe"),
            retention.approve(b, (rule,), review.id, "John Doe"),
        )
        assert sum(len(r.deleted) for r in reports) == 3
        approvals = await fetch(
            a, "SELECT actor FROM audit WHERE action = 'retention-approve' ORDER BY id"
        )
        head = await fetch(a, "SELECT approved_by FROM retention_reviews WHERE id = $1", review.id)
        assert [r["actor"] for r in approvals] == [head[0]["approved_by"]]
        deletes = await fetch(
            a,
            "SELECT study_uid, count(*) AS n FROM audit WHERE action = 'retention-delete'"
            " GROUP BY study_uid",
        )
        assert sorted(r["study_uid"] for r in deletes) == sorted(
            str(s[0].StudyInstanceUID) for s in studies
        )
        assert all(r["n"] == 1 for r in deletes)
