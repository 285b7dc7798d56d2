"""The running archive: catalogue, object store, ingest and retrieval wired from the settings.

Both gateways (DICOMweb, DIMSE) and the command line open one of these; nothing else builds
the parts by hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vna.catalog import commitments
from vna.catalog.database import Database, EmbeddedPostgres
from vna.catalog.migrate import migrate
from vna.catalog.queries import q
from vna.config import Settings
from vna.ingest.pipeline import Ingester
from vna.metrics import Metrics
from vna.recovery.replicas import refresh_replica_gauges
from vna.recovery.sites import Sites, read_active_store
from vna.rendering import Renderer
from vna.retrieve import Retriever
from vna.storage.base import ObjectStore
from vna.transcoding import Transcoder

log = logging.getLogger(__name__)


@dataclass
class Archive:
    settings: Settings
    db: Database
    store: ObjectStore
    metrics: Metrics
    ingester: Ingester
    retriever: Retriever
    #: This process's scratch directory for uploads being received (on the data volume, so
    #: the filesystem store can rename instead of copy).
    incoming: Path
    #: Rendered images and thumbnails, read through ``retriever`` (vna.rendering).
    renderer: Renderer
    #: Instances and frames in another transfer syntax, read through ``retriever``
    #: (vna.transcoding).
    transcoder: Transcoder
    embedded: EmbeddedPostgres | None = field(default=None, repr=False)
    #: Every configured store (primary and replicas) and which one is active (``store``).
    sites: Sites | None = field(default=None, repr=False)

    @classmethod
    async def open(cls, settings: Settings, *, apply_migrations: bool = True) -> Archive:
        """Start (or attach to) the catalogue, apply migrations, open the object store."""
        embedded: EmbeddedPostgres | None = None
        url = settings.database_url
        if settings.embedded_database:
            embedded = EmbeddedPostgres(settings.data_dir / "pg")
            url = await asyncio.to_thread(embedded.start)
            log.info("embedded PostgreSQL running under %s", embedded.pgdata)
        db: Database | None = None
        try:
            db = await Database.connect(
                url,
                min_size=2,
                max_size=settings.ingest.concurrency + 8,
                statement_cache_size=settings.database_statement_cache_size,
            )
            if apply_migrations:
                async with db.session() as conn:
                    applied = await migrate(conn)
                if applied:
                    log.info("applied migrations: %s", ", ".join(applied))
            # The active store is the primary unless `vna dr failover` made a replica serve.
            async with db.acquire() as conn:
                active = await read_active_store(conn)
            sites = await Sites.open(settings, active)
            store = sites.active_store
        except BaseException:
            if db is not None:
                await db.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            raise
        incoming = _prepare_incoming(settings.incoming_dir)
        metrics = Metrics()
        retriever = Retriever(
            db,
            store,
            restore_days=settings.lifecycle.restore_days,
            access_flush_seconds=settings.lifecycle.access_flush_seconds,
            fallbacks=sites.fallbacks() if settings.dr.read_fallback else (),
            metrics=metrics,
            # A damaged copy found by a read is repaired from a replica by a queued job.
            repair=bool(settings.replicas),
        )
        return cls(
            settings=settings,
            db=db,
            store=store,
            metrics=metrics,
            ingester=Ingester(
                db,
                store,
                settings.ingest,
                metrics,
                scratch_dir=incoming,
                modifying_system=settings.dimse.ae_title,
                unused_object_grace_seconds=settings.lifecycle.delete_grace_seconds,
            ),
            retriever=retriever,
            incoming=incoming,
            renderer=Renderer(retriever, settings.render),
            transcoder=Transcoder(retriever, settings.transcoding),
            embedded=embedded,
            sites=sites,
        )

    async def close(self) -> None:
        try:
            # First: its last batch of access times needs the catalogue.
            await self.retriever.close()
            if self.sites is not None:
                await self.sites.close()  # the active store and the replicas
            else:
                await self.store.close()
            await self.db.close()
        finally:
            self.renderer.close()
            self.transcoder.close()
            self.ingester.close()
            shutil.rmtree(self.incoming, ignore_errors=True)
            if self.embedded is not None:
                await asyncio.to_thread(self.embedded.stop)
                self.embedded = None

    async def refresh_gauges(self) -> None:
        """Catalogue totals for /metrics (one cheap aggregate per scrape)."""
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(q("catalogue_totals"))
            jobs = await conn.fetch(q("lifecycle_queue_depth"))
            pending, failed = await commitments.counts(conn)
            forwarded = await conn.fetch(q("forward_totals"))
            notified = await conn.fetch(q("notification_totals"))
        self.metrics.catalogue_instances.set(row["instances"])
        self.metrics.catalogue_bytes.set(row["bytes"])
        self.metrics.set_lifecycle_jobs((r["kind"], r["state"], r["jobs"]) for r in jobs)
        self.metrics.storage_commitments.labels("pending").set(pending)
        self.metrics.storage_commitments.labels("failed").set(failed)
        self.metrics.set_forwarded(
            (r["destination"], r["state"], r["instances"]) for r in forwarded
        )
        self.metrics.set_notifications((r["target"], r["state"], r["events"]) for r in notified)
        if self.sites is not None and self.sites.targets():
            await refresh_replica_gauges(self.db, self.sites, self.metrics)


def _prepare_incoming(root: Path) -> Path:
    """This process's incoming directory, after removing what dead processes left behind.

    Nothing in an incoming directory was ever acknowledged (the pipeline moves or deletes each
    file before answering), so a crashed process's leftovers are safe to drop.  Each process
    has its own subdirectory because several server processes may share one data directory.
    """
    # Uploads being received are patient data too: the archive's user only, like the store.
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in root.iterdir():
        pid = sub.name.split(".")[0]
        if sub.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(sub, ignore_errors=True)
    # The random part keeps a recycled pid, or two archives in one process, apart.
    mine = root / f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    mine.mkdir(mode=0o700)
    return mine


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
