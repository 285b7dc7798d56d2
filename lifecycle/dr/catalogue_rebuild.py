"""Rebuild the catalogue from the objects alone (``vna catalogue rebuild --from STORE_URL``).

Every object the archive stores is a Part 10 file (or its zstandard-compressed form, key
suffix ``.zst``, ``.szst`` for the seekable form, or ``.vpx`` for a pixel pack: pixel data
coded with a lossless image codec, rebuilt byte for byte, vna.storage.pixelpack) under its
content address, with the metadata ingest gave it (``vna-source``, ``vna-ingested-at`` and,
where ingest normalised the header, ``vna-received-sha256``: the hash of the data set as
received, otherwise the stored one's). Each object is read, checked against its key (the
SHA-256 of the instance's bytes), parsed (header only) and filed with the same repository
functions the ingest pipeline uses (``vna.ingest.filing``): patient, study, series and
instance rows, and the ``instance-stored`` job, so retention, compression and replication
follow as for a new instance.

Several objects may carry one SOP Instance UID: an original and its compressed form (the
compressed one is filed: the original was awaiting deletion), or versions of the instance
(corrections, replacements: the latest becomes current, the others are filed as earlier
versions, as the archive had them).  ``vna.recovery.policy.choose_version`` decides.  As at
ingest, a patient's, study's and series' own attributes come from the first instance filed
under it; where versions of an instance differ in them, the rebuilt rows may hold another
version's values (the instances' own attributes and bytes are exact).

Objects read from a store other than the active one are copied into it (verified) unless
``copy`` is off; from a declared replica they are also recorded as verified copies there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard
from pydicom.dataset import Dataset

from vna.catalog import audit, rejections
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.dicom.iocm import rejection_note
from vna.dicom.parse import data_set_offset, dicom_json, extract_header, read_dataset
from vna.errors import InvalidRequest, NotFound, VnaError
from vna.ingest import filing
from vna.recovery.policy import Choice, FoundObject, Outcome, choose_version
from vna.recovery.replicas import record_copy
from vna.recovery.sites import Digest, Expected, ObjectReader, Sites
from vna.storage import pixelpack
from vna.storage.base import PROBE_PREFIX, ObjectStore

log = logging.getLogger(__name__)
_KEY = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})(\.zst|\.szst|\.vpx)?$")
#: Studies filed from objects without the archive's metadata (written before it existed, or
#: by a tool) are filed under this source name.
UNKNOWN_SOURCE = "UNKNOWN"
#: Objects indexed at once.
DEFAULT_JOBS = 8
#: (key, reason) pairs kept in the report; the counts are complete.
_LISTED = 1000


@dataclass
class RebuildReport:
    store: str
    objects: int = 0
    instances: int = 0
    #: Earlier versions of instances filed as such.
    versions: int = 0
    #: Objects holding the same instance as one filed (an original beside its compressed form).
    duplicates: int = 0
    #: Instances the catalogue already held (with --force).
    already: int = 0
    copied: int = 0
    bytes: int = 0
    without_metadata: int = 0
    #: (key, reason) of objects that could not be indexed.
    failed: list[tuple[str, str]] = field(default_factory=list)
    failed_count: int = 0
    studies: int = 0
    patients: int = 0

    def fail(self, key: str, reason: str) -> None:
        self.failed_count += 1
        if len(self.failed) < _LISTED:
            self.failed.append((key, reason))


@dataclass(frozen=True)
class _Parsed:
    version: filing.Version
    found: FoundObject
    received_at: dt.datetime | None
    has_metadata: bool


async def rebuild(
    db: Database,
    sites: Sites,
    source: ObjectStore,
    *,
    scratch_dir: Path,
    actor: str,
    force: bool = False,
    copy: bool = True,
    replica_name: str | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Callable[[RebuildReport], None] | None = None,
) -> RebuildReport:
    """Index every object of ``source`` into the catalogue (see the module notes)."""
    async with db.acquire() as conn:
        existing = int(await conn.fetchval(q("instance_count")))
    if existing and not force:
        raise InvalidRequest(
            f"the catalogue already holds {existing:,} instances: a rebuild fills an empty"
            " catalogue (--force adds what the store holds that the catalogue lacks)"
        )
    if jobs < 1:
        raise InvalidRequest("--jobs must be at least 1")
    active = sites.active_store
    copy_to = active if copy and source is not active and source.name != active.name else None
    report = RebuildReport(store=source.name)
    keys: asyncio.Queue[str | None] = asyncio.Queue(maxsize=jobs * 4)

    async def worker() -> None:
        while (key := await keys.get()) is not None:
            try:
                await _index(db, source, copy_to, replica_name, key, scratch_dir, actor, report)
            except VnaError as exc:
                report.fail(key, str(exc))
            except Exception as exc:  # one odd object must not stop the rebuild of the rest
                log.exception("object %s could not be indexed", key)
                report.fail(key, f"{type(exc).__name__}: {exc}")
            report.objects += 1
            if progress is not None and report.objects % 500 == 0:
                progress(report)

    workers = [asyncio.create_task(worker()) for _ in range(jobs)]
    try:
        async for key in source.iter_keys():
            if key.startswith(PROBE_PREFIX):
                continue  # a readiness probe's object, not an instance
            await keys.put(key)
        for _ in workers:
            await keys.put(None)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    async with db.transaction() as conn:
        counts = await conn.fetchrow(q("catalogue_counts"))
        report.studies, report.patients = int(counts["studies"]), int(counts["patients"])
        await audit.record(
            conn,
            actor=actor,
            origin="rebuild",
            action="catalogue-rebuild",
            outcome="success" if not report.failed_count else "failure",
            detail={
                "store": source.name,
                "objects": report.objects,
                "instances": report.instances,
                "versions": report.versions,
                "duplicates": report.duplicates,
                "already": report.already,
                "copied": report.copied,
                "failed": report.failed_count,
                "failed_keys": [k for k, _ in report.failed[:100]],
            },
        )
    if progress is not None:
        progress(report)
    return report


async def _index(
    db: Database,
    source: ObjectStore,
    copy_to: ObjectStore | None,
    replica_name: str | None,
    key: str,
    scratch_dir: Path,
    actor: str,
    report: RebuildReport,
) -> None:
    m = _KEY.match(key)
    if m is None or m.group(3)[:2] != m.group(1) or m.group(3)[2:4] != m.group(2):
        report.fail(key, "not an archive object (no content address)")
        return
    digest_hex, compressed = m.group(3), m.group(4) is not None
    packed = m.group(4) == pixelpack.SUFFIX
    # A pixel pack's codec is in its index, read once it is downloaded; any image codec
    # name makes the reader rebuild it.
    compression = "jpeg-ls" if packed else "zstd" if compressed else "none"
    info = await source.stat(key)
    if info is None:
        return  # deleted while listing
    metadata = dict(info.metadata or {})
    stored = scratch_dir / f"rebuild-{uuid.uuid4().hex}"
    content = stored.with_suffix(".dcm") if compressed else stored
    try:
        try:
            digest = await _download(source, key, compression, stored)
        except NotFound:
            return
        expected = Expected(key, compression, digest_hex, digest.content_size)
        if digest.judge(expected) is not Outcome.VERIFIED:
            report.fail(
                key,
                f"corrupt: {digest.error or 'its content does not have the SHA-256 of its key'}",
            )
            return
        if packed:
            compression = await asyncio.to_thread(_unpack_file, stored, content, key)
        elif compressed:
            await asyncio.to_thread(_decompress_file, stored, content)
        parsed = await asyncio.to_thread(_parse, content, key, digest, metadata)
        if copy_to is not None:
            # Durable in the active store before the catalogue names it (the ingest promise).
            await copy_to.put_file(key, stored, sha256=digest.stored_sha256, metadata=metadata)
            report.copied += 1
        tier = (info.tier or "hot") if copy_to is None else "hot"
        await _file(db, parsed, compression, digest, tier, actor, report)
        if replica_name is not None:
            async with db.acquire() as conn:
                await record_copy(conn, replica_name, key, digest.stored_sha256, digest.stored_size)
        report.bytes += digest.content_size
        report.without_metadata += not parsed.has_metadata
    finally:
        stored.unlink(missing_ok=True)
        content.unlink(missing_ok=True)


async def _download(store: ObjectStore, key: str, compression: str, path: Path) -> Digest:
    with open(path, "wb") as sink:  # noqa: ASYNC230 - writes go through to_thread
        reader = ObjectReader(compression, sink, key=key)
        async for chunk in store.iter_chunks(key):
            await asyncio.to_thread(reader.feed, chunk)
    return reader.digest()


def _unpack_file(source: Path, target: Path, key: str) -> str:
    """Rebuild the original of a pixel pack into ``target``; the pack's codec."""
    blob = source.read_bytes()
    target.write_bytes(pixelpack.unpack(blob, key))
    return pixelpack.read_index(blob, key).codec


def _decompress_file(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)


def _parse(path: Path, key: str, digest: Digest, metadata: dict[str, str]) -> _Parsed:
    """Blocking: the header, its DICOM JSON and the data set's hash, as ingest computes them."""
    ds = read_dataset(path)
    header = extract_header(ds)
    data_set = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(data_set_offset(f))
        while chunk := f.read(1 << 20):
            data_set.update(chunk)
    data_set_sha256 = data_set.hexdigest()
    ingested = _parse_time(metadata.get("vna-ingested-at", ""))
    modified = _last_modification(ds)
    times = [t for t in (ingested, modified) if t is not None]
    version_time = max(times) if times else None
    assert digest.content_sha256 is not None
    version = filing.Version(
        header=header,
        issuer=header.issuer_of_patient_id,
        source=metadata.get("vna-source") or UNKNOWN_SOURCE,
        sha256=digest.content_sha256,
        received_sha256=metadata.get("vna-received-sha256") or data_set_sha256,
        data_set_sha256=data_set_sha256,
        size=digest.content_size,
        object_key=key,
        metadata=dicom_json(ds),
    )
    return _Parsed(
        version=version,
        found=FoundObject(
            key,
            digest.content_sha256,
            key.endswith((".zst", ".szst", pixelpack.SUFFIX)),
            version_time,
        ),
        received_at=version_time,
        has_metadata="vna-ingested-at" in metadata,
    )


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _last_modification(ds: Dataset) -> dt.datetime | None:
    """The latest Attribute Modification DateTime (0400,0562) of the Original Attributes
    Sequence (0400,0561): when the archive (or an earlier system) last changed the instance
    (PS3.3 C.12.1.1.9)."""
    latest: dt.datetime | None = None
    for item in ds.get("OriginalAttributesSequence", None) or []:
        value = str(item.get("AttributeModificationDateTime", "") or "")
        with contextlib.suppress(ValueError):
            when = _dicom_datetime(value)
            if when is not None and (latest is None or when > latest):
                latest = when
    return latest


def _dicom_datetime(value: str) -> dt.datetime | None:
    """A DT value (PS3.5 6.2: YYYYMMDDHHMMSS.FFFFFF&ZZXX, trailing parts optional)."""
    m = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?", value.strip())
    if m is None:
        return None
    day = dt.datetime.strptime(m.group(1), "%Y%m%d")
    when = day.replace(
        hour=int(m.group(2) or 0),
        minute=int(m.group(3) or 0),
        second=int(m.group(4) or 0),
        microsecond=int((m.group(5) or "0").ljust(6, "0")),
    )
    zone = m.group(6)
    if zone:
        sign = 1 if zone[0] == "+" else -1
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        return when.replace(tzinfo=dt.timezone(sign * offset))
    return when.replace(tzinfo=dt.UTC)


async def _file(
    db: Database,
    parsed: _Parsed,
    compression: str,
    digest: Digest,
    tier: str,
    actor: str,
    report: RebuildReport,
) -> None:
    v = parsed.version
    sop_uid = v.header.sop_instance_uid
    async with db.transaction() as conn:
        for _ in range(2):
            row = await conn.fetchrow(q("rebuild_lock_instance"), sop_uid)
            if row is None:
                series_fk = await filing.file_hierarchy(conn, v)
                instance_id = await filing.insert_instance(conn, v, series_fk)
                if instance_id is None:
                    continue  # filed a moment ago by another worker: decide again
                await _set_object(conn, instance_id, parsed, compression, digest, tier)
                await filing.enqueue_stored(conn, instance_id, v)
                # An IOCM rejection note withdraws its instances again, whichever is filed
                # first (the arrival trigger of migration 0160 covers those filed after it).
                note = rejection_note(v.metadata)
                if note is not None:
                    await rejections.record_note(conn, note, actor)
                report.instances += 1
                return
            current = FoundObject(
                row["object_key"], row["sha256"], row["compression"] != "none", row["received_at"]
            )
            choice = choose_version(current, parsed.found)
            if choice is Choice.KEEP:
                if row["object_key"] == v.object_key:
                    report.already += 1
                else:
                    report.duplicates += 1
                return
            if choice is Choice.SWITCH_ENCODING:
                await conn.execute(
                    q("rebuild_set_object"),
                    row["id"],
                    None,
                    compression,
                    digest.stored_size,
                    tier,
                    v.object_key,
                )
                report.duplicates += 1
                return
            if choice is Choice.NEWER:
                series_fk = await filing.file_hierarchy(conn, v)
                await filing.replace_instance(
                    conn, row["id"], v, series_fk, reason="rebuild", actor=actor
                )
                await _set_object(conn, row["id"], parsed, compression, digest, tier)
                await filing.enqueue_stored(conn, row["id"], v)
                report.versions += 1
                return
            if await conn.fetchval(q("rebuild_version_known"), sop_uid, v.sha256):
                report.duplicates += 1
                return
            h = v.header
            await conn.fetchval(
                q("rebuild_insert_version"),
                row["id"],
                h.sop_class_uid,
                h.instance_number,
                h.transfer_syntax,
                v.sha256,
                v.received_sha256,
                v.data_set_sha256,
                v.size,
                v.object_key,
                digest.stored_size,
                compression,
                tier,
                v.source,
                parsed.received_at,
                v.metadata,
                actor,
            )
            report.versions += 1
            return


async def _set_object(
    conn: Any, instance_id: int, parsed: _Parsed, compression: str, digest: Digest, tier: str
) -> None:
    await conn.execute(
        q("rebuild_set_object"),
        instance_id,
        parsed.received_at,
        compression,
        digest.stored_size,
        tier,
        parsed.version.object_key,
    )
