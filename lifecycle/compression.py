"""Background zstandard compression of one stored instance.

The object is compressed as it streams from the store, into a temporary file, in the
zstandard seekable form (vna.storage.seekable: independent frames of fixed size and a seek
table, so a frame or bulk value is read without decompressing the whole object); the
result is decompressed again and must reproduce the catalogued SHA-256 of the original before
anything changes, so a retrieve is bit-exact by construction (and the zstandard frame carries
its own checksum for every later read).  The compressed object goes under a key of its own
(``<original key>.szst``); the catalogue row is switched to it in one transaction that also
queues the deletion of the original, which happens after ``lifecycle.delete_grace_seconds`` so
that a retrieve that looked up the old key just before the switch can still read it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from lifecycle.policy.compression import plan, worth_keeping
from lifecycle.queue import enqueue
from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import InvalidInstance, StorageError
from vna.storage import seekable
from vna.storage.base import content_key

log = logging.getLogger(__name__)
SUFFIX = seekable.SEEKABLE_SUFFIX

if TYPE_CHECKING:
    from lifecycle.engine import Engine


class FixityError(InvalidInstance):
    """The stored object does not have the catalogued digest: not retried, left for an
    administrator (a dead job), because rewriting it would bless the corruption."""


@dataclass(frozen=True)
class CompressionResult:
    compressed: bool
    original_size: int = 0
    stored_size: int = 0
    reason: str = ""


class _Compressor:
    """Hashes and compresses chunks into a file; runs in worker threads (zstandard and hashlib
    release the GIL, so compression uses another core while the event loop serves)."""

    def __init__(self, path: Path, level: int, size: int) -> None:
        self.file: BinaryIO = open(path, "wb")
        self.original = hashlib.sha256()
        self.compressed = hashlib.sha256()
        self.stream = seekable.SeekableWriter(level)

    def feed(self, chunk: bytes) -> None:
        self.original.update(chunk)
        self._write(self.stream.feed(chunk))

    def finish(self) -> None:
        self._write(self.stream.finish())
        self.file.flush()
        self.file.close()

    def abort(self) -> None:
        self.file.close()

    def _write(self, data: bytes) -> None:
        if data:
            self.compressed.update(data)
            self.file.write(data)


def _digest_of_decompressed(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def compress_instance(engine: Engine, instance_id: int) -> CompressionResult:
    archive = engine.archive
    settings = engine.settings.compression
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("compression_instance"), instance_id)
    if row is None:
        return CompressionResult(False, reason="instance no longer in the archive")
    decision = plan(row["transfer_syntax"], row["size"], row["compression"], row["tier"], settings)
    if not decision.compress:
        return CompressionResult(False, reason=decision.reason)

    old_key: str = row["object_key"]
    tmp = archive.incoming / f"compress-{uuid.uuid4().hex}.zst"
    compressor = _Compressor(tmp, settings.level, row["size"])
    try:
        try:
            async for chunk in archive.store.iter_chunks(old_key):
                await asyncio.to_thread(compressor.feed, chunk)
            await asyncio.to_thread(compressor.finish)
        except BaseException:
            compressor.abort()
            raise
        if compressor.original.hexdigest() != row["sha256"]:
            raise FixityError(
                f"object {old_key} does not have the catalogued SHA-256 {row['sha256']}"
                " (fixity failure); not compressed"
            )
        compressed_size = tmp.stat().st_size
        if not worth_keeping(row["size"], compressed_size, settings.min_saving_percent):
            saved = 100 - 100 * compressed_size / max(row["size"], 1)
            return CompressionResult(
                False,
                row["size"],
                row["size"],
                f"saves {saved:.1f}%, below compression.min_saving_percent",
            )
        if await asyncio.to_thread(_digest_of_decompressed, tmp) != row["sha256"]:
            raise StorageError(f"compressed form of {old_key} does not decompress to the original")
        new_key = content_key(row["sha256"], suffix=SUFFIX)
        leftover = await archive.store.stat(new_key)
        if leftover is not None and leftover.size != compressed_size:
            # Left by an earlier attempt at another level (same key, other bytes; stores treat
            # an existing key as the same content): replace it unless an instance uses it.
            async with archive.db.acquire() as conn:
                if await conn.fetchval(q("object_key_in_use"), new_key):
                    raise StorageError(f"object {new_key} is in use with other content")
            await archive.store.delete(new_key)
        info = await archive.store.stat(old_key)
        metadata = {
            **dict((info.metadata or {}) if info else {}),
            "vna-compression": "zstd",
            "vna-original-sha256": row["sha256"],
            "vna-original-size": str(row["size"]),
        }
        await archive.store.put_file(
            new_key, tmp, sha256=compressor.compressed.hexdigest(), metadata=metadata, consume=True
        )
    finally:
        tmp.unlink(missing_ok=True)

    stored = await archive.store.stat(new_key)
    if stored is None or stored.size != compressed_size:
        raise StorageError(f"object {new_key} is not the one just written; not switched to it")
    async with archive.db.transaction() as conn:
        switched = await conn.fetchval(
            q("compression_switch"),
            instance_id,
            new_key,
            compressed_size,
            old_key,
        )
        if switched is not None:
            await enqueue(
                conn,
                "delete-object",
                {"object_key": old_key},
                dedup_key=f"delete:{old_key}",
                delay_seconds=engine.settings.lifecycle.delete_grace_seconds,
            )
    if switched is None:
        # The row changed under us (deleted, or compressed by a job run twice): drop ours
        # unless that other run switched to this very object.
        async with archive.db.acquire() as conn:
            in_use = await conn.fetchval(q("object_key_in_use"), new_key)
        if not in_use:
            await archive.store.delete(new_key)
        return CompressionResult(False, reason="instance changed while compressing")
    return CompressionResult(True, row["size"], compressed_size)


async def recompress_object(engine: Engine, old_key: str) -> CompressionResult:
    """Rewrite an object compressed before the seekable form (one zstandard frame, ``.zst``)
    in the seekable form, so that frames and bulk values of it are ranged reads.

    Queued by a retrieve that had to decompress such an object whole (vna.retrieve) and by
    ``vna lifecycle`` for the ones left.  Checked as compression is: the new object must
    decompress to the catalogued SHA-256 before the catalogue switches to it; the old one is
    deleted after the grace period.  Objects in colder tiers are left (a rewrite there costs a
    restore or an early-deletion fee); they are converted if they come back.
    """
    archive = engine.archive
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("recompression_instance"), old_key)
    if row is None or seekable.is_seekable_key(old_key):
        return CompressionResult(False, reason="no instance keeps this single-frame object")
    if row["tier"] != "hot":
        return CompressionResult(False, reason=f"in the {row['tier']} tier")
    level = engine.settings.compression.level or 3
    tmp = archive.incoming / f"recompress-{uuid.uuid4().hex}.szst"
    compressor = _Compressor(tmp, level, row["size"])
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        try:
            async for chunk in archive.store.iter_chunks(old_key):
                out = await asyncio.to_thread(decompressor.decompress, chunk)
                await asyncio.to_thread(compressor.feed, out)
            await asyncio.to_thread(compressor.finish)
        except zstandard.ZstdError as exc:
            compressor.abort()
            raise FixityError(f"object {old_key} does not decompress: {exc}") from exc
        except BaseException:
            compressor.abort()
            raise
        if compressor.original.hexdigest() != row["sha256"]:
            raise FixityError(
                f"object {old_key} does not decompress to the catalogued SHA-256 {row['sha256']}"
                " (fixity failure); not rewritten"
            )
        if await asyncio.to_thread(_digest_of_decompressed, tmp) != row["sha256"]:
            raise StorageError(f"seekable form of {old_key} does not decompress to the original")
        new_key = content_key(row["sha256"], suffix=SUFFIX)
        info = await archive.store.stat(old_key)
        metadata = dict((info.metadata or {}) if info else {})
        if await archive.store.stat(new_key) is None:
            await archive.store.put_file(
                new_key,
                tmp,
                sha256=compressor.compressed.hexdigest(),
                metadata=metadata,
                consume=True,
            )
    finally:
        tmp.unlink(missing_ok=True)
    stored = await archive.store.stat(new_key)
    if stored is None:
        raise StorageError(f"object {new_key} is not the one just written; not switched to it")
    async with archive.db.transaction() as conn:
        switched = await conn.fetch(q("recompression_switch"), old_key, new_key, stored.size)
        for moved in switched:
            # The object an instance keeps changed (same bytes out, another object): who
            # did it and why is on record like every other change to what is stored.
            await audit.record(
                conn,
                actor="lifecycle",
                origin="recompress",
                action="object-reformat",
                patient_id=moved["patient_id"],
                issuer=moved["issuer"],
                study_uid=moved["study_uid"],
                series_uid=moved["series_uid"],
                sop_uid=moved["sop_uid"],
                detail={
                    "from": old_key,
                    "to": new_key,
                    "stored_bytes": stored.size,
                    "reason": "single-frame compressed object rewritten in the seekable form",
                },
            )
        if switched:
            await enqueue(
                conn,
                "delete-object",
                {"object_key": old_key},
                dedup_key=f"delete:{old_key}",
                delay_seconds=engine.settings.lifecycle.delete_grace_seconds,
            )
    if not switched:
        return CompressionResult(False, reason="instance changed while recompressing")
    return CompressionResult(True, row["size"], stored.size)
