"""What the catalogue knows about the replicas: verified copies (table ``replicas``), each
replica's backlog and lag, and the active store (table ``dr_state``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.metrics import Metrics
from vna.recovery.policy import recovery_point_seconds

if TYPE_CHECKING:
    from vna.recovery.sites import Sites


@dataclass(frozen=True)
class Lag:
    """One replica's state: what is verified on it and what is not yet."""

    store: str
    replicated: int
    replicated_bytes: int
    backlog: int
    backlog_bytes: int
    #: Received time of the oldest instance without a verified copy (None: none).
    oldest_unreplicated: dt.datetime | None
    last_verified: dt.datetime | None
    #: Seconds of data a loss of the active store would lose now (the RPO as it stands).
    rpo_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "replicated_instances": self.replicated,
            "replicated_bytes": self.replicated_bytes,
            "backlog_instances": self.backlog,
            "backlog_bytes": self.backlog_bytes,
            "oldest_unreplicated": _iso(self.oldest_unreplicated),
            "rpo_seconds": round(self.rpo_seconds, 3),
            "last_verified": _iso(self.last_verified),
        }


async def replica_lag(conn: asyncpg.Connection, store: str, now: dt.datetime | None = None) -> Lag:
    row = await conn.fetchrow(q("replica_lag"), store)
    now = now or await conn.fetchval(q("database_now"))
    return Lag(
        store=store,
        replicated=row["replicated"],
        replicated_bytes=row["replicated_bytes"],
        backlog=row["backlog"],
        backlog_bytes=row["backlog_bytes"],
        oldest_unreplicated=row["oldest_unreplicated"],
        last_verified=row["last_verified"],
        rpo_seconds=recovery_point_seconds(row["oldest_unreplicated"], now),
    )


async def record_copy(
    conn: asyncpg.Connection,
    store: str,
    object_key: str,
    sha256: str,
    size: int,
    instance_id: int | None = None,
) -> None:
    """Record a copy of ``object_key`` on ``store`` as verified now."""
    await conn.execute(q("replica_record"), store, object_key, instance_id, sha256, size)


async def lock_object(conn: asyncpg.Connection, store: str, object_key: str) -> None:
    """Serialise, until the transaction ends, the copy and the deletion of one object on one
    store (so a copy recorded a moment after a deletion is never left without its object)."""
    await conn.execute(q("replica_lock"), store, object_key)


async def refresh_replica_gauges(db: Database, sites: Sites, metrics: Metrics) -> None:
    """Backlog and lag of each replication target, for /metrics."""
    async with db.acquire() as conn:
        for name in sites.targets():
            lag = await replica_lag(conn, name)
            metrics.replica_backlog_instances.labels(name).set(lag.backlog)
            metrics.replica_backlog_bytes.labels(name).set(lag.backlog_bytes)
            metrics.replica_lag_seconds.labels(name).set(lag.rpo_seconds)
            metrics.replica_instances.labels(name).set(lag.replicated)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
