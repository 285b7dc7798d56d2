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

With ``[compression] codec`` set to an image codec (``jpeg-ls``, ``jpeg2000``, ``htj2k``), an
instance in a native little-endian syntax is stored as a pixel pack instead
(vna.storage.pixelpack: the header and trailer zstd-compressed as received, each frame coded
losslessly); the original is rebuilt from the pack and must have the catalogued SHA-256
before the catalogue switches to it.  An instance the codec cannot carry byte for byte (bits
above Bits Stored, float pixel data, 32-bit samples...) is compressed with zstd instead, and
the reason recorded (``compression_fallbacks``, shown by ``vna lifecycle status``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pydicom
import pydicom.errors
import zstandard

from lifecycle.policy.compression import UNCOMPRESSED_TRANSFER_SYNTAXES, plan, worth_keeping
from lifecycle.queue import enqueue
from vna.catalog import audit
from vna.catalog.queries import q
from vna.dicom.frames import object_layout
from vna.dicom.pixel_codecs import CodecError, CodecUnavailable, NotRepresentable, PixelInfo
from vna.errors import InvalidInstance, StorageError
from vna.storage import pixelpack, seekable
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
    #: The form written: ``zstd`` or an image codec (vna.storage.pixelpack).
    codec: str = ""


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
    if settings.codec in pixelpack.IMAGE_CODECS:
        result = await _compress_image(engine, instance_id, row, settings.codec)
        if result is not None:
            return result
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
    return await _switch(engine, instance_id, row, new_key, compressed_size, "zstd")


async def _switch(
    engine: Engine, instance_id: int, row: Any, new_key: str, stored_size: int, compression: str
) -> CompressionResult:
    """Point the catalogue at the compressed object and queue the original's deletion."""
    archive = engine.archive
    old_key: str = row["object_key"]
    switched = await _switched_object(
        engine,
        old_key,
        "compression_switch",
        instance_id,
        new_key,
        stored_size,
        old_key,
        compression,
    )
    if switched is None:
        # The row changed under us (deleted, or compressed by a job run twice): drop ours
        # unless that other run switched to this very object.
        async with archive.db.acquire() as conn:
            in_use = await conn.fetchval(q("object_key_in_use"), new_key)
        if not in_use:
            await archive.store.delete(new_key)
        return CompressionResult(False, reason="instance changed while compressing")
    return CompressionResult(True, row["size"], stored_size, codec=compression)


_NO_PIXELS = "no Pixel Data"
#: Objects an image codec takes: a pack is built in memory (the object, its pack and the
#: rebuilt original at once), so larger ones (whole-slide or tomosynthesis series in one
#: object) stay in zstd, which streams.
MAX_IMAGE_OBJECT = 1 << 30
_TOO_LARGE = "larger than 1 GiB (image codecs work in memory)"
#: Native little-endian transfer syntaxes: the ones whose Pixel Data a pixel pack carries.
_PACKABLE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def build_pack(data: bytes, transfer_syntax: str, codec: str, level: int) -> bytes:
    """The pixel pack of a whole Part 10 object (CPU work, for a worker thread); raises
    NotRepresentable (with the reason) when the image codec cannot carry it."""
    if transfer_syntax not in _PACKABLE_SYNTAXES:
        raise NotRepresentable(f"transfer syntax {transfer_syntax} is not native little endian")
    layout = object_layout(data, transfer_syntax)
    pixels = layout.pixels if layout is not None else None
    if pixels is None:
        raise NotRepresentable(_NO_PIXELS)
    if pixels.encapsulated or pixels.tag != 0x7FE00010:
        raise NotRepresentable("no native Pixel Data (float or double pixel data, or encapsulated)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        info = PixelInfo(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.SamplesPerPixel),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.BitsStored),
            pixel_representation=int(ds.PixelRepresentation),
            photometric_interpretation=str(ds.PhotometricInterpretation),
            planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
        )
    except (AttributeError, TypeError, ValueError, pydicom.errors.InvalidDicomError) as exc:
        raise NotRepresentable(f"image pixel attributes missing or invalid: {exc}") from exc
    if pixels.frame_bits != info.frame_size * 8:
        raise NotRepresentable("frame size of the layout and the image attributes differ")
    return pixelpack.pack(
        data,
        pixels.value_offset,
        pixels.value_length,
        pixels.number_of_frames,
        info,
        pixelpack.CODEC_SYNTAXES[codec],
        level or 3,
    )


def _pack_checked(data: bytes, sha256: str, transfer_syntax: str, codec: str, level: int) -> bytes:
    """Build the pack and rebuild the original from it: the pack only if the rebuilt bytes
    have the catalogued SHA-256 (NotRepresentable otherwise)."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FixityError(
            f"object does not have the catalogued SHA-256 {sha256} (fixity failure); not compressed"
        )
    blob = build_pack(data, transfer_syntax, codec, level)
    if hashlib.sha256(pixelpack.unpack(blob)).hexdigest() != sha256:
        raise NotRepresentable("the original does not rebuild byte for byte from the pack")
    # Some images (ultrasound with large flat areas, screenshots) shrink more with zstd than
    # with an image codec: keep the smaller form (measured in bench/compression.py).
    writer = seekable.SeekableWriter(level or 3)
    if len(writer.feed(data)) + len(writer.finish()) <= len(blob):
        raise NotRepresentable("zstd is smaller for this image")
    return blob


async def _compress_image(
    engine: Engine, instance_id: int, row: Any, codec: str
) -> CompressionResult | None:
    """Compress with the image codec; None (after counting why) when the instance must be
    compressed with zstd instead."""
    archive = engine.archive
    settings = engine.settings.compression
    old_key: str = row["object_key"]
    if row["transfer_syntax"] not in _PACKABLE_SYNTAXES:
        await _record_fallback(
            engine, instance_id, codec, "transfer syntax is not native little endian"
        )
        return None
    if row["size"] > MAX_IMAGE_OBJECT:
        await _record_fallback(engine, instance_id, codec, _TOO_LARGE)
        return None
    data = b"".join([chunk async for chunk in archive.store.iter_chunks(old_key)])
    try:
        blob = await asyncio.to_thread(
            _pack_checked, data, row["sha256"], row["transfer_syntax"], codec, settings.level
        )
    except CodecUnavailable as exc:
        await _record_fallback(engine, instance_id, codec, f"codec unavailable: {exc}")
        return None
    except (NotRepresentable, CodecError, StorageError) as exc:
        if str(exc) != _NO_PIXELS:  # not an image (SR, PDF...): nothing for the codec to do
            await _record_fallback(engine, instance_id, codec, _reason(exc))
        return None
    del data
    if not worth_keeping(row["size"], len(blob), settings.min_saving_percent):
        await _record_fallback(engine, instance_id, codec, "saves too little with the image codec")
        return None
    new_key = content_key(row["sha256"], suffix=pixelpack.SUFFIX)
    info = await archive.store.stat(old_key)
    metadata = {
        **dict((info.metadata or {}) if info else {}),
        "vna-compression": codec,
        "vna-original-sha256": row["sha256"],
        "vna-original-size": str(row["size"]),
    }
    leftover = await archive.store.stat(new_key)
    if leftover is not None and leftover.size != len(blob):
        async with archive.db.acquire() as conn:
            if await conn.fetchval(q("object_key_in_use"), new_key):
                raise StorageError(f"object {new_key} is in use with other content")
        await archive.store.delete(new_key)
    tmp = archive.incoming / f"compress-{uuid.uuid4().hex}.vpx"
    try:
        await asyncio.to_thread(tmp.write_bytes, blob)
        await archive.store.put_file(
            new_key, tmp, sha256=hashlib.sha256(blob).hexdigest(), metadata=metadata, consume=True
        )
    finally:
        tmp.unlink(missing_ok=True)
    stored = await archive.store.stat(new_key)
    if stored is None or stored.size != len(blob):
        raise StorageError(f"object {new_key} is not the one just written; not switched to it")
    return await _switch(engine, instance_id, row, new_key, len(blob), codec)


async def recode_instance(engine: Engine, instance_id: int, codec: str) -> str | None:
    """Re-encode an instance's object in ``codec`` (``zstd`` or an image codec) before a tier
    move (a tiering rule's ``codec``); the new object's key, or None when the instance stays
    as it is (already in that form, received compressed, or the image codec cannot carry it
    byte for byte: the reason is recorded as for compression).

    The original is rebuilt from the current object and must have the catalogued SHA-256; the
    new form must rebuild it too before the catalogue switches; the old object is deleted
    after the grace period, as compression does.
    """
    archive = engine.archive
    settings = engine.settings.compression
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("compression_instance"), instance_id)
    if row is None or row["compression"] == codec:
        return None
    if row["compression"] not in ("none", "zstd"):
        return None  # already in an image codec's pack: not re-encoded between codecs
    if row["transfer_syntax"] not in UNCOMPRESSED_TRANSFER_SYNTAXES:
        return None  # received compressed: left alone
    if row["size"] > MAX_IMAGE_OBJECT:
        await _record_fallback(engine, instance_id, codec, _TOO_LARGE, instead="kept")
        return None
    old_key: str = row["object_key"]
    stored = b"".join([chunk async for chunk in archive.store.iter_chunks(old_key)])
    try:
        data = stored if row["compression"] == "none" else await asyncio.to_thread(_unzstd, stored)
    except zstandard.ZstdError as exc:
        raise FixityError(f"object {old_key} does not decompress: {exc}") from exc
    del stored
    level = settings.level or 3
    if codec == "zstd":
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise FixityError(f"object {old_key} does not rebuild the catalogued SHA-256")
        blob = await asyncio.to_thread(_zstd_checked, data, level, row["sha256"])
        suffix = SUFFIX
    else:
        try:
            blob = await asyncio.to_thread(
                _pack_checked, data, row["sha256"], row["transfer_syntax"], codec, level
            )
        except (NotRepresentable, CodecError, StorageError) as exc:
            await _record_fallback(engine, instance_id, codec, _reason(exc), instead="kept")
            return None
        suffix = pixelpack.SUFFIX
    del data
    new_key = content_key(row["sha256"], suffix=suffix)
    info = await archive.store.stat(old_key)
    metadata = {
        **dict((info.metadata or {}) if info else {}),
        "vna-compression": codec,
        "vna-original-sha256": row["sha256"],
        "vna-original-size": str(row["size"]),
    }
    if await archive.store.stat(new_key) is None:
        tmp = archive.incoming / f"recode-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(tmp.write_bytes, blob)
            await archive.store.put_file(
                new_key,
                tmp,
                sha256=hashlib.sha256(blob).hexdigest(),
                metadata=metadata,
                consume=True,
            )
        finally:
            tmp.unlink(missing_ok=True)
    written = await archive.store.stat(new_key)
    if written is None or written.size != len(blob):
        raise StorageError(f"object {new_key} is not the one just written; not switched to it")
    switched = await _switched_object(
        engine,
        old_key,
        "recode_switch",
        instance_id,
        new_key,
        len(blob),
        old_key,
        codec,
        row["compression"],
    )
    if switched is None:
        return None
    log.info("instance %d re-encoded as %s for a tier move: %s", instance_id, codec, new_key)
    return new_key


def _unzstd(stored: bytes) -> bytes:
    """The original of a zstd object, single-frame or seekable (frames read one after another)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored), read_across_frames=True)
    return reader.read()


def _zstd_checked(data: bytes, level: int, sha256: str) -> bytes:
    writer = seekable.SeekableWriter(level)
    blob = writer.feed(data) + writer.finish()
    if hashlib.sha256(_unzstd(blob)).hexdigest() != sha256:
        raise StorageError("the zstd form does not decompress to the original")
    return blob


def _reason(exc: Exception) -> str:
    """A short, countable reason (no instance-specific numbers where avoidable)."""
    text = str(exc)
    if "bits above Bits Stored" in text:
        return "values use bits above Bits Stored (overlay or padding in the high bits)"
    return text[:200]


async def _record_fallback(
    engine: Engine, instance_id: int, codec: str, reason: str, instead: str = "zstd"
) -> None:
    log.info("instance %d not stored with %s: %s; %s instead", instance_id, codec, reason, instead)
    async with engine.archive.db.acquire() as conn:
        await conn.execute(q("record_compression_fallback"), instance_id, codec, reason)


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


async def _switched_object(engine: Engine, old_key: str, query: str, *args: Any) -> Any:
    """Run the switch statement ``query`` (an instance now names its new object) and, when it
    switched, queue the deletion of the object it named, after the grace period, in the same
    transaction: the old object goes only once nothing names it."""
    async with engine.archive.db.transaction() as conn:
        switched = await conn.fetchval(q(query), *args)
        if switched is not None:
            await enqueue(
                conn,
                "delete-object",
                {"object_key": old_key},
                dedup_key=f"delete:{old_key}",
                delay_seconds=engine.settings.lifecycle.delete_grace_seconds,
            )
    return switched
