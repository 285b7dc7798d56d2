"""Failover drills (``vna dr drill``): as if the primary store were lost, without touching it
or any production data, a retriever reading the replica only serves a sample (or all) of the
instances, each checked bit-exact against the catalogued SHA-256.  The RTO is the time from the
start to the first verified read, the RPO the age of the oldest instance the replica does not
hold yet, and every instance the replica should hold but does not serve intact is a defect.

Measuring (:func:`measure_drill`) writes nothing; recording (:func:`record_drill`) keeps the
result for ``vna dr status`` and the audit trail; :mod:`.report` renders it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from lifecycle.dr import replication
from lifecycle.dr.json_form import iso as _iso
from lifecycle.dr.json_form import jsonable
from vna.archive import Archive
from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import DamagedObject, InvalidRequest, NotFound, OfflineError, StorageError
from vna.recovery.policy import (
    Finding,
    Outcome,
    drill_finding,
    drill_passed,
    expected_on_replica,
    judge_read,
    recovery_point_seconds,
)
from vna.recovery.replicas import replica_lag
from vna.retrieve import Retriever, stored_instance
from vna.storage.factory import open_store

log = logging.getLogger(__name__)
#: Instances read at once by a drill.
CONCURRENCY = 8
#: Instances listed by name in a drill report as not yet replicated.
LOST_LISTED = 1000
#: A drill without --full reads this many instances, chosen at random.
DEFAULT_SAMPLE = 100
#: With replication outside the archive (no [[replicas]]: S3 cross-region replication of the
#: bucket), an instance younger than this may legitimately be missing on the copy (S3
#: Replication Time Control replicates 99.99% of objects within 15 minutes).
EXTERNAL_GRACE_SECONDS = 900


@dataclass
class DrillRead:
    """One instance read from the replica."""

    sop_uid: str
    study_uid: str
    series_uid: str
    object_key: str
    received_at: str
    size: int
    outcome: str
    finding: str
    detail: str = ""


@dataclass
class DrillResult:
    store: str
    storage_url: str
    #: ``archive``: copies recorded by the archive's replication; ``external``: a copy kept
    #: by the storage itself (S3 cross-region replication), judged by age.
    tracking: str
    mode: str
    started_at: str
    finished_at: str = ""
    actor: str = ""
    checked: int = 0
    verified: int = 0
    bytes_read: int = 0
    read_seconds: float = 0.0
    #: From the start of the drill to the first instance served bit-exact by the replica.
    rto_seconds: float | None = None
    rpo_seconds: float = 0.0
    oldest_unreplicated: str | None = None
    lost_instances: int = 0
    lost_bytes: int = 0
    #: What a loss of the primary now would lose (oldest first, at most LOST_LISTED).
    lost: list[dict[str, Any]] = field(default_factory=list)
    defects: list[DrillRead] = field(default_factory=list)
    not_yet_replicated: list[DrillRead] = field(default_factory=list)
    catalogue_instances: int = 0
    max_rpo_seconds: float | None = None
    passed: bool = False
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def drill(archive: Archive, **options: Any) -> DrillResult:
    """Run a failover drill against a replica (see the module notes); recorded in the
    catalogue (``dr_drills``) and the audit trail.  Reads only the replica.  ``options`` are
    :func:`measure_drill`'s, which checks them."""
    result = await measure_drill(archive, **options)
    await record_drill(archive, result)
    return result


async def measure_drill(
    archive: Archive,
    *,
    replica: str | None = None,
    full: bool = False,
    sample: int | None = None,
    actor: str,
    max_rpo_seconds: float | None = None,
    external_grace_seconds: float = EXTERNAL_GRACE_SECONDS,
) -> DrillResult:
    """The drill's measurements: reads from the replica, RTO, RPO, defects, the verdict.
    Writes nothing."""
    clock = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    name, url, tracking = _drill_target(archive, replica)
    if sample is not None and sample < 1:
        raise InvalidRequest("--sample must be at least 1")
    if full and sample is not None:
        raise InvalidRequest("give --full or --sample, not both")
    result = DrillResult(
        store=name,
        storage_url=url,
        tracking=tracking,
        mode="full" if full else f"sample of {sample or DEFAULT_SAMPLE}",
        started_at=_iso(started) or "",
        actor=actor,
        max_rpo_seconds=max_rpo_seconds,
    )
    # Opened afresh, as a real failover would: nothing of the running archive's stores.
    store = await open_store(url, name=name)
    retriever = Retriever(archive.db, store, read_only=True)
    try:
        ids = await _drill_ids(archive, full, sample or DEFAULT_SAMPLE)
        slots = asyncio.Semaphore(CONCURRENCY)
        read_started = time.monotonic()

        async def one(instance_id: int) -> None:
            async with slots:
                await _drill_read(
                    archive,
                    retriever,
                    name,
                    tracking,
                    instance_id,
                    result,
                    clock,
                    external_grace_seconds,
                )

        await asyncio.gather(*(one(i) for i in ids))
        result.read_seconds = round(time.monotonic() - read_started, 3)
    finally:
        await retriever.close()
        await store.close()
    async with archive.db.acquire() as conn:
        result.catalogue_instances = int(await conn.fetchval(q("instance_count")))
        await _measure_loss(conn, result, dt.datetime.now(dt.UTC))
    result.defects.sort(key=lambda r: (r.study_uid, r.sop_uid))
    result.passed = drill_passed(len(result.defects), result.rpo_seconds, max_rpo_seconds)
    result.finished_at = _iso(dt.datetime.now(dt.UTC)) or ""
    return result


async def _measure_loss(conn: asyncpg.Connection, result: DrillResult, now: dt.datetime) -> None:
    """What a loss of the primary now would lose: the RPO and the instances."""
    if result.tracking == "archive":
        lag = await replica_lag(conn, result.store, now)
        result.lost_instances = lag.backlog
        result.lost_bytes = lag.backlog_bytes
        result.rpo_seconds = lag.rpo_seconds
        result.oldest_unreplicated = _iso(lag.oldest_unreplicated)
        result.lost = [
            {
                "sop_uid": r["sop_uid"],
                "study_uid": r["study_uid"],
                "series_uid": r["series_uid"],
                "accession_number": r["accession_number"],
                "received_at": _iso(r["received_at"]),
                "bytes": r["stored_size"],
            }
            for r in await conn.fetch(q("replication_lost"), result.store, LOST_LISTED)
        ]
        return
    # Nothing records the storage's own replication: what was read is the measure.
    missing = sorted(result.not_yet_replicated, key=lambda r: r.received_at)
    result.lost_instances = len(missing)
    result.lost_bytes = sum(r.size for r in missing)
    oldest = dt.datetime.fromisoformat(missing[0].received_at) if missing else None
    result.rpo_seconds = recovery_point_seconds(oldest, now)
    result.oldest_unreplicated = _iso(oldest)
    result.lost = [
        {
            "sop_uid": r.sop_uid,
            "study_uid": r.study_uid,
            "series_uid": r.series_uid,
            "accession_number": "",
            "received_at": r.received_at,
            "bytes": r.size,
        }
        for r in missing[:LOST_LISTED]
    ]


async def record_drill(archive: Archive, result: DrillResult) -> int:
    """Keep a measured drill (``dr_drills``, read by ``vna dr status`` and the report) and
    audit it; sets and returns its id."""
    async with archive.db.transaction() as conn:
        drill_id = int(
            await conn.fetchval(
                q("drill_record"),
                result.store,
                dt.datetime.fromisoformat(result.started_at),
                dt.datetime.now(dt.UTC),
                result.actor,
                result.mode,
                result.checked,
                result.verified,
                len(result.defects),
                result.rpo_seconds,
                result.rto_seconds,
                result.lost_instances,
                result.lost_bytes,
                jsonable({**result.as_dict(), "id": None}),
            )
        )
        result.id = drill_id
        await audit.record(
            conn,
            actor=result.actor,
            origin="dr",
            action="dr-drill",
            outcome="success" if result.passed else "failure",
            detail={
                "drill": drill_id,
                "store": result.store,
                "mode": result.mode,
                "checked": result.checked,
                "verified": result.verified,
                "defects": len(result.defects),
                "rpo_seconds": result.rpo_seconds,
                "rto_seconds": result.rto_seconds,
                "lost_instances": result.lost_instances,
            },
        )
    return drill_id


def _drill_target(archive: Archive, replica: str | None) -> tuple[str, str, str]:
    sites = replication.sites_of(archive)
    names = list(sites.replica_names)
    if replica is not None:
        if replica not in names:
            known = ", ".join(names) or "none declared"
            raise InvalidRequest(f"--replica {replica!r} is not a declared replica ({known})")
        if replica == sites.active:
            raise InvalidRequest(f"replica {replica!r} is the active store (failed over to it)")
        return replica, sites.url_of(replica), "archive"
    targets = list(sites.targets())
    if len(targets) == 1:
        return targets[0], sites.url_of(targets[0]), "archive"
    if not names:
        # No replication by the archive: the store it is configured with is the copy under
        # test (the Terraform dr-drill task points storage_url at the DR bucket).
        return "storage_url", archive.settings.effective_storage_url, "external"
    raise InvalidRequest(f"name the replica to drill with --replica ({', '.join(targets)})")


async def _drill_ids(archive: Archive, full: bool, sample: int) -> list[int]:
    async with archive.db.acquire() as conn:
        if not full:
            return [r["id"] for r in await conn.fetch(q("fixity_sample"), sample)]
        ids: list[int] = []
        after = 0
        while rows := await conn.fetch(q("drill_instances_all"), after, 10_000):
            ids.extend(r["id"] for r in rows)
            after = ids[-1]
        return ids


async def _drill_read(
    archive: Archive,
    retriever: Retriever,
    store_name: str,
    tracking: str,
    instance_id: int,
    result: DrillResult,
    clock: float,
    grace: float,
) -> None:
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("drill_instance"), instance_id, store_name)
    if row is None:
        return  # deleted since it was chosen
    instance = stored_instance(row)
    digest = hashlib.sha256()
    size = 0
    detail = ""
    found = readable = decodable = True
    try:
        async for chunk in await retriever.open(instance):
            digest.update(chunk)
            size += len(chunk)
    except NotFound:
        found, detail = False, "not on the replica"
    except DamagedObject as exc:
        # The reader checks what it reads against the catalogue (vna.retrieve).
        if exc.outcome == "missing":
            found, detail = False, "not on the replica"
        else:
            decodable, detail = False, str(exc)
    except OfflineError as exc:
        readable, detail = False, str(exc)
    except StorageError as exc:
        detail = str(exc)
        # A compressed object that fails to decompress is damaged; anything else is the
        # store failing to serve it.
        if instance.compression == "zstd" and "compressed object" in detail:
            decodable = False
        else:
            readable = False
    outcome = judge_read(
        instance.sha256,
        instance.size,
        found=found,
        readable=readable,
        decodable=decodable,
        sha256=digest.hexdigest(),
        size=size,
    )
    if outcome is Outcome.CORRUPT and not detail:
        detail = f"read {size} bytes with sha256 {digest.hexdigest()}"
    now = dt.datetime.now(dt.UTC)
    expected = expected_on_replica(
        row["recorded"], row["received_at"], now, grace if tracking == "external" else None
    )
    finding = drill_finding(outcome, expected)
    result.checked += 1
    result.bytes_read += size
    if finding is Finding.OK:
        result.verified += 1
        if result.rto_seconds is None:
            result.rto_seconds = round(time.monotonic() - clock, 3)
        return
    read = DrillRead(
        sop_uid=instance.sop_uid,
        study_uid=instance.study_uid,
        series_uid=instance.series_uid,
        object_key=instance.object_key,
        received_at=_iso(row["received_at"]) or "",
        size=row["stored_size"],
        outcome=outcome.value,
        finding=finding.value,
        detail=detail,
    )
    if finding is Finding.DEFECT:
        result.defects.append(read)
    else:
        result.not_yet_replicated.append(read)
