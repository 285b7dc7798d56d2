"""The archive's object stores: the primary (``storage_url``), the replicas (``[[replicas]]``)
and which of them is active, serving reads and writes (the primary, unless failed over).

Also the two operations disaster recovery is built from: reading an object back to prove what
it holds (``digest_object``), and copying an object from one store to another with proof that
the copy is the catalogued content (``copy_object``).  A corrupt source is never propagated:
its content is checked against the catalogue before anything is written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import asyncpg
import zstandard

from vna.catalog.queries import q
from vna.config import Settings
from vna.errors import ConfigError, InvalidInstance, NotFound, StorageError, VnaError
from vna.recovery.policy import PRIMARY, Outcome, judge_read, read_order, replication_targets
from vna.storage import pixelpack, seekable
from vna.storage.base import ObjectStore
from vna.storage.factory import open_store

log = logging.getLogger(__name__)
#: Bytes kept from the end of a seekable object to check its seek table: 8 bytes a frame of
#: 256 KiB, so enough for 32 GiB of original bytes.
_TAIL = 1024 * 1024
#: Hash and decompress in a worker thread above this many bytes per chunk.
_THREAD_THRESHOLD = 256 * 1024


class CorruptSource(InvalidInstance):
    """A store holds other bytes than the catalogue says: nothing is copied from it.  Not
    retriable (the same bytes fail the same way); another store may hold a good copy."""


class TargetFailed(StorageError):
    """Writing or reading back the copy on the target store failed (retriable)."""


@dataclass(frozen=True)
class Expected:
    """What the catalogue says an object holds."""

    object_key: str
    #: ``none``, ``zstd`` (lifecycle compression; the object is zstandard frames) or an
    #: image codec (the object is a pixel pack, vna.storage.pixelpack).
    compression: str
    #: SHA-256 and size of the instance's bytes as received (decompressed).
    sha256: str
    size: int


@dataclass(frozen=True)
class Digest:
    """What reading an object back found."""

    #: Of the object's bytes as stored (the compressed frame for a compressed object).
    stored_sha256: str
    stored_size: int
    #: Of what it decodes to; None when a compressed object does not decompress.
    content_sha256: str | None
    content_size: int
    error: str = ""

    def judge(self, expected: Expected) -> Outcome:
        return judge_read(
            expected.sha256,
            expected.size,
            found=True,
            decodable=self.content_sha256 is not None,
            sha256=self.content_sha256,
            size=self.content_size,
        )


class ObjectReader:
    """Hashes an object's stored bytes and decoded content as chunks arrive; optionally
    writes the stored bytes to a file.  Runs in worker threads for large chunks."""

    def __init__(self, compression: str, sink: BinaryIO | None = None, *, key: str = "") -> None:
        self.stored = hashlib.sha256()
        self.content = hashlib.sha256()
        self.stored_size = 0
        self.content_size = 0
        self.sink = sink
        self.error = ""
        #: The seekable form (vna.storage.seekable) is many frames and a seek table: its
        #: content digest, not the end of one frame, tells a whole object from a cut one.
        self.frames = seekable.is_seekable_key(key)
        #: The last bytes stored (seekable form): its seek table, checked at the end, since
        #: a decoder passes over that skippable frame and ranged reads depend on it.
        self.tail = b""
        self.decompressor = (
            zstandard.ZstdDecompressor().decompressobj(read_across_frames=self.frames)
            if compression == "zstd"
            else None
        )
        #: A pixel pack (vna.storage.pixelpack, an image codec) is kept whole and rebuilt at
        #: the end: its index is at its end.
        self.pack: bytearray | None = bytearray() if compression in pixelpack.IMAGE_CODECS else None
        self.key = key

    def feed(self, chunk: bytes) -> None:
        self.stored.update(chunk)
        self.stored_size += len(chunk)
        if self.frames:
            self.tail = (self.tail + chunk)[-_TAIL:]
        if self.sink is not None:
            self.sink.write(chunk)
        if self.pack is not None:
            self.pack += chunk
        elif self.decompressor is None:
            self.content.update(chunk)
            self.content_size += len(chunk)
        elif not self.error:
            if self.decompressor.eof and not self.frames:
                self.error = "data after the end of the compressed frame"
                return
            try:
                out = self.decompressor.decompress(chunk)
            except zstandard.ZstdError as exc:
                self.error = f"does not decompress: {exc}"
                return
            self.content.update(out)
            self.content_size += len(out)

    def _check_seek_table(self) -> None:
        try:
            n = seekable.table_size(self.tail[-seekable.FOOTER_SIZE :], "object")
            if n > len(self.tail):
                raise StorageError("seek table larger than kept")
            table = seekable.parse_table(self.tail[-n:], "object")
        except (StorageError, struct.error) as exc:
            self.error = f"damaged seek table: {exc}"
            return
        if table.size != self.content_size or table.compressed[-1] + n != self.stored_size:
            self.error = "seek table does not describe the object"

    def _unpack(self) -> None:
        assert self.pack is not None
        try:
            content = pixelpack.unpack(bytes(self.pack), self.key or "object")
        except StorageError as exc:
            self.error = f"pixel pack does not rebuild: {exc}"
            return
        self.content.update(content)
        self.content_size = len(content)

    def digest(self) -> Digest:
        if self.pack is not None:
            self._unpack()
            self.pack = None
        if self.decompressor is not None and not self.error and self.frames:
            self._check_seek_table()
        if self.decompressor is not None and not self.error and not self.frames:
            if not self.decompressor.eof:
                self.error = "compressed frame is truncated"
            elif self.decompressor.unused_data:
                # Harmless to what a retrieve serves, but not the object that was written.
                self.error = "data after the end of the compressed frame"
        return Digest(
            stored_sha256=self.stored.hexdigest(),
            stored_size=self.stored_size,
            content_sha256=None if self.error else self.content.hexdigest(),
            content_size=self.content_size,
            error=self.error,
        )


async def _read(store: ObjectStore, key: str, reader: ObjectReader) -> Digest:
    async for chunk in store.iter_chunks(key):
        if len(chunk) > _THREAD_THRESHOLD:
            await asyncio.to_thread(reader.feed, chunk)
        else:
            reader.feed(chunk)
    if reader.pack is not None:  # rebuilding a pixel pack decodes every frame: off the loop
        return await asyncio.to_thread(reader.digest)
    return reader.digest()


async def digest_object(store: ObjectStore, key: str, compression: str) -> Digest:
    """Read the object back and hash it (and what it decompresses to).  Raises NotFound when
    absent and StorageError when the store fails."""
    return await _read(store, key, ObjectReader(compression, key=key))


async def copy_object(
    source: ObjectStore, target: ObjectStore, expected: Expected, scratch_dir: Path
) -> Digest:
    """Copy ``expected.object_key`` from ``source`` to ``target`` and prove the copy.

    1. The object streams from the source into a scratch file, hashed as it comes, and what it
       holds is compared with the catalogue (CorruptSource otherwise: nothing is written).
    2. It is put on the target under the same key with its metadata, declaring its SHA-256
       (both stores refuse other bytes; S3 also checks ChecksumSHA256 on arrival).  A copy
       already there is read and kept if it is the same, replaced if it is not.
    3. It is read back from the target and must hash the same.

    Failures of the source raise as the source raised them (NotFound, StorageError,
    OfflineError); failures of the target raise TargetFailed.
    """
    key = expected.object_key
    tmp = scratch_dir / f"copy-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as sink:  # noqa: ASYNC230 - writes go through to_thread
            try:
                got = await _read(source, key, ObjectReader(expected.compression, sink, key=key))
            finally:
                await asyncio.to_thread(sink.flush)
        if got.judge(expected) is not Outcome.VERIFIED:
            raise CorruptSource(
                f"object {key} on store {source.name} is not the catalogued content"
                f" ({got.error or 'other digest or size'}); not copied from it"
            )
        info = await source.stat(key)
        metadata: Mapping[str, str] = dict(info.metadata or {}) if info else {}
        try:
            return await _put_verified(target, expected, tmp, got, metadata)
        except TargetFailed:
            raise
        except (NotFound, StorageError) as exc:
            raise TargetFailed(f"copy of {key} to store {target.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


async def _put_verified(
    target: ObjectStore, expected: Expected, path: Path, got: Digest, metadata: Mapping[str, str]
) -> Digest:
    key = expected.object_key
    if await target.stat(key) is not None:
        # Stores treat an existing key as the same bytes and skip the write: prove it, and
        # replace a copy that is not (a damaged replica).
        present = await digest_object(target, key, expected.compression)
        if present.stored_sha256 == got.stored_sha256:
            return present
        log.warning("object %s on store %s is damaged: replacing it", key, target.name)
        await target.delete(key)
    await target.put_file(key, path, sha256=got.stored_sha256, metadata=metadata, consume=True)
    back = await digest_object(target, key, expected.compression)
    if back.stored_sha256 != got.stored_sha256 or back.stored_size != got.stored_size:
        raise TargetFailed(
            f"object {key} read back from store {target.name} differs from what was copied"
            f" (sha256 {back.stored_sha256}, expected {got.stored_sha256})"
        )
    return back


# --- the set of stores -------------------------------------------------------------------------


class Sites:
    """Every store the configuration names, opened; one of them active.

    Stores other than the active one are opened leniently: a replica (or, while failed over,
    the primary) that cannot be opened is left out with a log line, so that losing a site
    never stops the archive from starting on the others.
    """

    def __init__(
        self,
        settings: Settings,
        active: str,
        stores: dict[str, ObjectStore],
        unavailable: dict[str, str],
    ) -> None:
        self.settings = settings
        self.active = active
        self._stores = stores
        self.unavailable = unavailable

    @classmethod
    async def open(cls, settings: Settings, active: str = PRIMARY) -> Sites:
        urls = store_urls(settings)
        if active not in urls:
            raise ConfigError(
                f"the catalogue names store {active!r} as active (after `vna dr failover`),"
                " but the configuration declares no such replica ([[replicas]])"
            )
        stores = {active: await open_store(urls[active], name=active)}
        unavailable: dict[str, str] = {}
        for name, url in urls.items():
            if name == active:
                continue
            try:
                stores[name] = await open_store(url, name=name)
            except VnaError as exc:
                unavailable[name] = str(exc)
                log.error("store %s cannot be opened: %s", name, exc)
        return cls(settings, active, stores, unavailable)

    @property
    def active_store(self) -> ObjectStore:
        return self._stores[self.active]

    @property
    def replica_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.settings.replicas)

    def url_of(self, name: str) -> str:
        return store_urls(self.settings)[name]

    def get(self, name: str) -> ObjectStore:
        store = self._stores.get(name)
        if store is not None:
            return store
        if name in self.unavailable:
            raise StorageError(f"store {name} is unavailable: {self.unavailable[name]}")
        raise ConfigError(f"no store named {name!r} (primary or a declared [[replicas]] name)")

    def targets(self) -> tuple[str, ...]:
        """Replicas that receive a copy of every object (``replication_targets``)."""
        return replication_targets(self.active, self.replica_names)

    def fallbacks(self) -> list[ObjectStore]:
        """Stores a failed read tries next, in order (``read_order``), those that opened."""
        return [
            self._stores[name]
            for name in read_order(self.active, self.replica_names)
            if name in self._stores
        ]

    async def close(self) -> None:
        for store in self._stores.values():
            try:
                await store.close()
            except Exception as exc:  # closing one must not leave the others open
                log.warning("closing store %s: %s", store.name, exc)


def store_urls(settings: Settings) -> dict[str, str]:
    """Name -> URL of every store: ``primary`` first, then the replicas as declared."""
    return {PRIMARY: settings.effective_storage_url} | {
        r.name: r.storage_url for r in settings.replicas
    }


async def read_active_store(conn: asyncpg.Connection) -> str:
    """The store the catalogue says serves reads and writes (``primary`` unless failed over).

    A catalogue without the DR tables (opened without applying migrations) has the primary.
    """
    try:
        name = await conn.fetchval(q("dr_active_store"))
    except asyncpg.UndefinedTableError:
        return PRIMARY
    return str(name) if name else PRIMARY
