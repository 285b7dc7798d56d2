"""The object store interface both back ends implement (and one contract test checks)."""

from __future__ import annotations

import abc
import datetime as dt
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vna.errors import InvalidRequest, NotFound, StorageError

# Keys are content-addressed (`sha256/ab/cd/<hex>`) and carry no PHI: UIDs may embed personal
# data (PS3.5 9.1 lets implementers root UIDs in anything), so they never appear in a key.
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


#: Keys of the readiness probe's small objects (vna.gateway.readiness): never an instance, so a
#: catalogue rebuild passes over them.
PROBE_PREFIX = "health/"


def content_key(sha256_hex: str, suffix: str = "") -> str:
    """The object key for content with this SHA-256; a suffix names a derived encoding."""
    if not _HEX64.match(sha256_hex):
        raise InvalidRequest(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return f"sha256/{sha256_hex[:2]}/{sha256_hex[2:4]}/{sha256_hex}{suffix}"


def validate_key(key: str) -> str:
    """Refuse keys that could escape a root or smuggle path syntax."""
    if len(key) > 512 or not _KEY.match(key) or ".." in key:
        raise InvalidRequest(f"invalid object key: {key!r}")
    return key


@dataclass(frozen=True)
class FileStamp:
    """Which version of a file a digest was taken of: device, inode, size, modification and
    change times, read from the open file before hashing it.

    A caller that has just hashed a file passes its stamp with the digest to ``put_file``;
    while the file is still that version, the store takes the digest instead of reading and
    hashing the file again (for a CT slice that second pass was about 5% of ingest's CPU).  A
    file replaced, rewritten or grown since no longer matches, and is hashed as before.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def describes(self, path: Path) -> bool:
        """Whether the file at ``path`` is still the version stamped."""
        try:
            return FileStamp.of(os.stat(path)) == self
        except OSError:
            return False


def check_sha256(key: str, declared: str, actual: str | None = None) -> None:
    """Refuse a put whose bytes are not the ones declared.

    Under a content-addressed key, wrong bytes would be silent corruption that every later
    read (and the "same key, same bytes" dedup shortcut) trusts.  Call once with only
    ``declared`` to check its form before any work, then with ``actual`` once hashed.
    """
    if not _HEX64.match(declared):
        raise InvalidRequest(f"sha256 for object {key}: not a SHA-256 hex digest: {declared!r}")
    if actual is not None and actual != declared:
        raise StorageError(
            f"object {key}: content has sha256 {actual}, not the declared {declared}; not stored"
        )


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: Back-end storage class (S3) or tier root (filesystem); None when the store has one class.
    storage_class: str | None = None
    metadata: Mapping[str, str] | None = None
    #: The tier the object is in, when the store has tiers.
    tier: str | None = None
    #: False while the object sits in an offline class (S3 GLACIER, DEEP_ARCHIVE) with no
    #: restored copy: reading it fails with OfflineError until a restore completes.
    available: bool = True
    #: A restore was requested and has not completed yet.
    restore_in_progress: bool = False
    #: S3 Object Lock: the end of the object's retention period (WORM until then), and
    #: whether a legal hold is set on it (WORM until released).  Retention deletions check
    #: both: the bucket would refuse the deletion or keep the bytes under a delete marker.
    object_lock_until: dt.datetime | None = None
    object_legal_hold: bool = False


class ObjectStore(abc.ABC):
    """Durable, content-addressed object storage.

    A successful ``put_*`` means the bytes are durable: a crash right after it loses nothing.
    Writes of an existing key with the same content are idempotent.  Bytes whose SHA-256 is
    not the declared ``sha256`` are refused (StorageError) and nothing is stored.
    """

    #: A short name for logs, metrics and the catalogue (``primary``, ``dr-eu``...).
    name: str

    @abc.abstractmethod
    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        sha256: str,
        metadata: Mapping[str, str] | None = None,
        consume: bool = False,
        hashed: FileStamp | None = None,
    ) -> None:
        """Store the file's bytes under key; ``consume`` lets the store take the file over
        (a rename on the same filesystem instead of a copy).  ``hashed``: the version of the
        file the caller computed ``sha256`` of (see FileStamp); without it, or when the file
        has changed since, the store hashes the file and refuses it unless it matches."""

    @abc.abstractmethod
    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str, metadata: Mapping[str, str] | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def get_bytes(self, key: str) -> bytes:
        """The whole object; raises NotFound."""

    @abc.abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream the object; raises NotFound before the first chunk if absent."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and class of the object, or None if absent."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; absent is not an error (deletes are retried)."""

    @abc.abstractmethod
    def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key under prefix, in no particular order."""

    # --- tiers (lifecycle) ---------------------------------------------------------------
    # Not abstract: a store without tiers (a replica target, say) refuses to move objects
    # rather than pretending to.

    async def set_tier(self, key: str, tier: str) -> None:
        """Move the object to ``tier`` (one of TIERS), keeping its bytes and metadata.

        Idempotent.  Raises NotFound when absent and OfflineError when the object must be
        restored before it can be moved out of an offline class.
        """
        raise StorageError(f"store {self.name} has no storage tiers")

    async def restore(self, key: str, days: int) -> ObjectInfo:
        """Ask for a readable copy of an offline object for ``days`` days (idempotent: a
        restore already under way is left alone); returns the object's state afterwards.
        For an object that is not offline, only its state."""
        info = await self.stat(key)
        if info is None:
            raise NotFound(f"object {key} not in store {self.name}")
        return info

    @property
    def offline_tiers(self) -> frozenset[str]:
        """Tiers whose objects must be restored before they can be read."""
        return frozenset()

    def restore_seconds(self, tier: str) -> int:
        """How long a restore out of ``tier`` typically takes (for Retry-After)."""
        return 0

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
