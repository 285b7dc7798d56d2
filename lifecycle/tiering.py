"""Tiering in the catalogue: evaluate the rules over every study, move objects, restore them.

Evaluation reads one aggregate row per study in a single pass, asks the pure policy which tier
the study belongs in, and queues one ``tier-study`` job per study that has objects warmer than
that.  The job moves each object (an S3 class change, or a move between filesystem roots) and
records the new tier per instance.  Whole studies move together, so a study is either readable
at once or restored as a whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifecycle.compression import recode_instance
from lifecycle.engine import Reschedule
from lifecycle.policy.tiering import TieringFacts, needs_move, target_tier, tier_rank
from vna.catalog import changes
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.config import TieringRuleSettings
from vna.errors import NotFound
from vna.tiers import TIERS

if TYPE_CHECKING:
    from lifecycle.engine import Engine

log = logging.getLogger(__name__)
#: Objects of one study moved at once (S3 copies are slow one by one, fast side by side).
MOVE_CONCURRENCY = 8
_ENQUEUE_BATCH = 10_000


@dataclass
class Evaluation:
    studies: int = 0
    #: Studies queued for a move, by target tier.
    queued: dict[str, int] = field(default_factory=dict)


async def evaluate(
    db: Database, rules: Sequence[TieringRuleSettings], today: dt.date
) -> Evaluation:
    """Queue a move for every study with objects warmer than its rules say."""
    result = Evaluation()
    if not rules:
        return result
    pending_ids: list[int] = []
    pending_tiers: list[str] = []
    pending_codecs: list[str] = []

    async def flush() -> None:
        if pending_ids:
            async with db.acquire() as conn:
                await conn.execute(q("tier_enqueue"), pending_ids, pending_tiers, pending_codecs)
            pending_ids.clear()
            pending_tiers.clear()
            pending_codecs.clear()

    async with db.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(q("tiering_facts"), prefetch=5000):
            result.studies += 1
            facts = TieringFacts(
                study_date=row["study_date"],
                received_date=row["received_date"],
                last_access=row["last_access"],
                modalities=frozenset(row["modalities"] or ()),
                source=row["source"],
            )
            decision = target_tier(facts, rules, today)
            if needs_move(row["tiers"], decision.tier):
                pending_ids.append(row["id"])
                pending_tiers.append(decision.tier)
                pending_codecs.append(decision.codec)
                result.queued[decision.tier] = result.queued.get(decision.tier, 0) + 1
                if len(pending_ids) >= _ENQUEUE_BATCH:
                    await flush()
    await flush()
    return result


async def move_study(engine: Engine, study_id: int, tier: str, codec: str = "") -> int:
    """Move the study's objects that are warmer than ``tier`` to it; returns how many moved.

    With ``codec`` (the deciding rule's), each object is first re-encoded in that form
    (lifecycle.compression.recode_instance: checked byte for byte against the catalogued
    digest; an instance the codec cannot carry stays as it is) and the new object is moved.

    Idempotent: instances already there are not selected, and moving an object already in the
    target class is a no-op in the store.
    """
    archive = engine.archive
    warmer = [t for t in TIERS if tier_rank(t) < tier_rank(tier)]
    async with archive.db.acquire() as conn:
        rows = await conn.fetch(q("tier_instances_to_move"), study_id, warmer)
    slots = asyncio.Semaphore(MOVE_CONCURRENCY)
    moved = 0

    async def move(instance_id: int, key: str, current: str) -> None:
        nonlocal moved
        async with slots:
            if codec and current not in archive.store.offline_tiers:
                key = await recode_instance(engine, instance_id, codec) or key
            try:
                await archive.store.set_tier(key, tier)
            except NotFound:
                log.warning("instance %d: object %s is missing; not moved", instance_id, key)
                return
            async with archive.db.transaction() as conn:
                status = await conn.execute(q("tier_record"), instance_id, tier, key)
                if not status.endswith(" 0"):
                    await changes.record_instances(conn, "tier", [instance_id])
            if status.endswith(" 0"):
                # Switched to a new object meanwhile; the next evaluation moves that one.
                log.info("instance %d changed while moving to %s", instance_id, tier)
            else:
                moved += 1

    await asyncio.gather(*(move(r["id"], r["object_key"], r["tier"]) for r in rows))
    return moved


async def restore_object(engine: Engine, key: str) -> None:
    """Make an offline object readable; reschedules itself until the store says it is."""
    archive = engine.archive
    async with archive.db.acquire() as conn:
        tier = await conn.fetchval(q("restore_target"), key)
    if tier is None:
        return  # deleted meanwhile: nothing to restore
    try:
        info = await archive.store.restore(key, engine.settings.lifecycle.restore_days)
    except NotFound:
        log.warning("object %s to restore is missing from the store", key)
        raise
    if info.available:
        days = engine.settings.lifecycle.restore_days
        async with archive.db.acquire() as conn:
            await conn.execute(q("restore_record"), key, days)
        log.info("object %s restored for %d days", key, days)
        return
    # Poll about ten times over the typical restore time, between 30 s and 15 min.
    wait = min(max(archive.store.restore_seconds(tier) / 10, 30), 900)
    raise Reschedule(wait, f"restore of {key} under way")
