"""Filesystem object store: the embedded default.

Durability follows the classic recipe: write to a temporary file on the same filesystem, fsync
it, rename it into place, fsync the directory.  After ``put_*`` returns, a power cut loses
nothing.  Blocking calls run in worker threads so the event loop keeps serving.

Tiers are separate roots with the same key layout: ``<root>`` (hot, where writes go),
``<root>-warm`` and ``<root>-cold`` beside it unless configured elsewhere (a cheaper disk, a
network mount).  Reads look in each root, warmest first, so an object is found whichever tier
the catalogue last recorded.  All tiers are online: nothing here needs a restore.

An object's metadata (source, ingest time: what a catalogue rebuild needs) is an extended
attribute of the object file, set before the file's fsync and rename: it becomes durable and
visible with the object in one step, and costs no second file per object (an inode, a write
and an fsync each; half the files of a large archive).  It is compact JSON with short names for
the archive's own keys, small enough for ext4 to keep in the inode instead of a block of its
own.  On a filesystem without user extended attributes (some network and FUSE mounts) it is a
sidecar file ``<object>.meta.json`` beside the object instead, as stores written before this
kept it; both are read, in either encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import BinaryIO

from vna.errors import InvalidRequest, NotFound, StorageError
from vna.storage.base import (
    FileStamp,
    ObjectInfo,
    ObjectStore,
    check_sha256,
    validate_key,
)
from vna.tiers import TIERS

#: Objects hold patient data: readable and writable by the archive's user only, whatever the
#: process's umask (a shared host's other users, a backup agent running as someone else).
FILE_MODE = 0o600
DIR_MODE = 0o700
_META_SUFFIX = ".meta.json"
_META_XATTR = "user.vna.metadata"
#: setxattr's answers meaning "not here" rather than a failing disk: the sidecar is used.
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG, errno.ERANGE}


class FilesystemStore(ObjectStore):
    def __init__(
        self, root: Path, name: str = "primary", tier_roots: Mapping[str, Path] | None = None
    ) -> None:
        self.root = root.resolve()
        self.name = name
        self._tmp = self.root / ".tmp"
        roots = {
            "hot": self.root,
            "warm": self.root.with_name(self.root.name + "-warm"),
            "cold": self.root.with_name(self.root.name + "-cold"),
        }
        for tier, path in (tier_roots or {}).items():
            if tier not in TIERS[1:]:
                raise InvalidRequest(f"filesystem store: no tier {tier!r} (warm or cold)")
            roots[tier] = path.resolve()
        self.tier_roots: dict[str, Path] = roots
        #: Directories this process knows to exist durably (see ``_make_dir``).
        self._durable_dirs: set[Path] = set()
        try:
            self._make_dir(self._tmp)
        except OSError as exc:
            raise StorageError(f"cannot create object store at {self.root}: {exc}") from exc
        #: Whether metadata goes in an extended attribute (else a sidecar file).
        self.xattrs = _probe_xattrs(self._tmp)

    def path_of(self, key: str) -> Path:
        """Where a new object is written (the hot root)."""
        return self.root / validate_key(key)

    def _candidates(self, key: str) -> list[tuple[str, Path]]:
        validate_key(key)
        return [(tier, root / key) for tier, root in self.tier_roots.items()]

    def _locate(self, key: str) -> tuple[str, Path] | None:
        """The tier and path of the object, warmest first; None when absent everywhere."""
        for tier, path in self._candidates(key):
            if path.exists():
                return tier, path
        return None

    # --- writes ---------------------------------------------------------------------------

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
        target = self.path_of(key)
        check_sha256(key, sha256)
        _check_keys(metadata)
        await asyncio.to_thread(
            self._put_file, key, target, path, sha256, metadata, consume, hashed
        )

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        target = self.path_of(key)
        check_sha256(key, sha256)
        _check_keys(metadata)
        await asyncio.to_thread(self._put_bytes, key, target, data, sha256, metadata)

    def _put_file(
        self,
        key: str,
        target: Path,
        source: Path,
        sha256: str,
        metadata: Mapping[str, str] | None,
        consume: bool,
        hashed: FileStamp | None,
    ) -> None:
        try:
            found = self._locate(key)
            if found is not None:
                # Content-addressed: same key, same bytes (in whichever tier).  Nothing to write.
                if metadata:
                    self._replace_metadata(found[1], metadata)
                if consume:
                    source.unlink(missing_ok=True)
                return
            self._make_dir(target.parent)
            if consume and _same_device(source, self._tmp):
                # The upload was received on this filesystem: make it durable where it lies
                # and rename it into place instead of copying the bytes again.
                if hashed is None or not hashed.describes(source):
                    check_sha256(key, sha256, _sha256_of(source))
                sidecar = bool(metadata) and not self._set_metadata(source, metadata)
                # The upload was created by whoever received it, with its own mode.
                os.chmod(source, FILE_MODE)
                _fsync_file(source)  # the data and the attribute
                if sidecar:
                    # The sidecar sits in the object's directory: the one directory fsync
                    # below makes both renames durable.
                    self._write_atomic(_meta_path(target), _encode(metadata), sync_dir=False)
                os.replace(source, target)
                _fsync_dir(target.parent)
                return
            tmp = self._tmp / uuid.uuid4().hex
            try:
                digest = hashlib.sha256()
                with open(source, "rb") as src, _create(tmp) as dst:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    sidecar = bool(metadata) and not self._set_metadata(dst.fileno(), metadata)
                    os.fsync(dst.fileno())
                check_sha256(key, sha256, digest.hexdigest())
                if sidecar:
                    self._write_atomic(_meta_path(target), _encode(metadata), sync_dir=False)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(target.parent)
            if consume:
                source.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: write failed: {exc}") from exc

    def _put_bytes(
        self, key: str, target: Path, data: bytes, sha256: str, metadata: Mapping[str, str] | None
    ) -> None:
        check_sha256(key, sha256, hashlib.sha256(data).hexdigest())
        try:
            found = self._locate(key)
            if found is not None and found[1] != target:
                return  # already stored, in a colder tier: same key, same bytes
            self._write_atomic(target, data, metadata=metadata)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: write failed: {exc}") from exc

    def _write_atomic(
        self,
        target: Path,
        data: bytes,
        *,
        sync_dir: bool = True,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write, fsync, rename into place; ``sync_dir=False`` leaves the directory fsync to
        the caller, who renames more into the same directory first."""
        self._make_dir(target.parent)
        tmp = self._tmp / uuid.uuid4().hex
        sidecar = False
        try:
            with _create(tmp) as f:
                f.write(data)
                f.flush()
                sidecar = bool(metadata) and not self._set_metadata(f.fileno(), metadata)
                os.fsync(f.fileno())
            if sidecar:
                self._write_atomic(_meta_path(target), _encode(metadata), sync_dir=False)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if sync_dir:
            _fsync_dir(target.parent)

    def _make_dir(self, path: Path) -> None:
        """Make sure ``path`` and the store directories above it exist and will survive a
        power cut.

        A new directory's name is an entry in its parent, durable only once the parent is
        fsynced; the fsync of the object's own directory does not cover it.  A journal does it
        on most filesystems, but not on all (ext4 without a journal, some network mounts).
        The first time this process uses a directory it fsyncs the parent, even when another
        thread or process created it, which may not have done so yet; afterwards one set
        lookup.  Above a tier root is the administrator's filesystem, created if missing but
        not ours to sync.
        """
        if path in self._durable_dirs:
            return
        parent = path.parent
        outside = path in self.tier_roots.values() or parent == path
        if outside:
            parent.mkdir(parents=True, exist_ok=True)
        else:
            self._make_dir(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
        # A directory of the administrator's may not be ours to open; the root's entry in it
        # was made when the store was set up.
        with contextlib.suppress(PermissionError) if outside else contextlib.nullcontext():
            _fsync_dir(parent)
        self._durable_dirs.add(path)

    def _set_metadata(self, file: int | Path, metadata: Mapping[str, str] | None) -> bool:
        """Set the metadata attribute on the file (open, or by path); False when it must be a
        sidecar."""
        if not self.xattrs or not metadata:
            return False
        try:
            os.setxattr(file, _META_XATTR, _encode(metadata))
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                return False
            raise
        return True

    def _replace_metadata(self, path: Path, metadata: Mapping[str, str]) -> None:
        """New metadata for a stored object, durably, where its current metadata is kept."""
        if self.xattrs and not _meta_path(path).exists() and self._set_metadata(path, metadata):
            _fsync_file(path)
            return
        self._write_atomic(_meta_path(path), _encode(metadata))

    # --- reads ----------------------------------------------------------------------------

    def _open(self, key: str) -> BinaryIO:
        # Opening (not checking, then opening) each root in turn: an object moved to another
        # tier between the two would otherwise be missed.  A file already open stays readable
        # when a tier move unlinks it (POSIX), so a retrieve never breaks mid-stream.
        for _tier, path in self._candidates(key):
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue
        raise NotFound(f"object {key} not in store {self.name}")

    async def get_bytes(self, key: str) -> bytes:
        def _read() -> bytes:
            with self._open(key) as f:
                return f.read()

        try:
            return await asyncio.to_thread(_read)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        def _open_and_read() -> tuple[BinaryIO, bytes]:
            f = self._open(key)
            try:
                return f, f.read(chunk_size)
            except BaseException:
                f.close()
                raise

        # Opened and the first chunk read in one thread hop: an object smaller than a chunk
        # (most instances) is then read in one hop, not three (measured with
        # bench/compression.py: a thread hop costs about as much CPU as decoding 50 kB).
        try:
            f, first = await asyncio.to_thread(_open_and_read)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc
        try:
            if len(first) < chunk_size:
                if first:
                    yield first
                return
            yield first
            while True:
                try:
                    chunk = await asyncio.to_thread(f.read, chunk_size)
                except OSError as exc:
                    raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise InvalidRequest(f"invalid byte range {start}+{length} of object {key}")

        def _read() -> bytes:
            with self._open(key) as f:
                # pread: one system call, no shared file position.
                return os.pread(f.fileno(), length, start)

        if length == 0:
            return b""
        try:
            return await asyncio.to_thread(_read)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc

    async def stat(self, key: str) -> ObjectInfo | None:
        candidates = self._candidates(key)

        def _stat() -> ObjectInfo | None:
            for tier, path in candidates:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                metadata = _read_metadata(path)
                return ObjectInfo(
                    key=key, size=st.st_size, metadata=metadata, storage_class=tier, tier=tier
                )
            return None

        try:
            return await asyncio.to_thread(_stat)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: stat failed: {exc}") from exc

    async def delete(self, key: str) -> None:
        candidates = self._candidates(key)

        def _delete() -> None:
            for _tier, path in candidates:
                path.unlink(missing_ok=True)
                _meta_path(path).unlink(missing_ok=True)
                _fsync_dir(path.parent) if path.parent.exists() else None

        try:
            await asyncio.to_thread(_delete)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: delete failed: {exc}") from exc

    async def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        def _walk() -> list[str]:
            keys: dict[str, None] = {}  # ordered set: an object caught mid-move is listed once
            for root in self.tier_roots.values():
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    rel = os.path.relpath(dirpath, root)
                    for fn in filenames:
                        if fn.endswith(_META_SUFFIX) or fn.startswith("."):
                            continue
                        key = fn if rel == "." else f"{rel}/{fn}"
                        if key.startswith(prefix):
                            keys[key] = None
            return list(keys)

        for key in await asyncio.to_thread(_walk):
            yield key

    # --- tiers ------------------------------------------------------------------------------

    async def set_tier(self, key: str, tier: str) -> None:
        if tier not in self.tier_roots:
            raise InvalidRequest(f"no tier {tier!r} (one of {', '.join(TIERS)})")
        try:
            await asyncio.to_thread(self._set_tier, key, tier)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: tier move failed: {exc}") from exc

    def _set_tier(self, key: str, tier: str) -> None:
        found = self._locate(key)
        if found is None:
            raise NotFound(f"object {key} not in store {self.name}")
        source = found[1]
        target = self.tier_roots[tier] / key
        if source == target:
            return
        # Durable at the target before it leaves the source: a crash in between leaves two
        # identical copies (reads take the warmer one; the next move removes it), never none.
        self._make_dir(target.parent)
        meta = _meta_path(source)
        if _same_device(source, target.parent):
            if meta.exists():
                os.replace(meta, _meta_path(target))
            os.replace(source, target)
        else:
            tmp_dir = self.tier_roots[tier] / ".tmp"
            self._make_dir(tmp_dir)
            if meta.exists():
                _copy_durably(meta, _meta_path(target), tmp_dir)
            _copy_durably(source, target, tmp_dir)
            meta.unlink(missing_ok=True)
            source.unlink()
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)


def _copy_durably(source: Path, target: Path, tmp_dir: Path) -> None:
    tmp = tmp_dir / uuid.uuid4().hex
    try:
        with open(source, "rb") as src, _create(tmp) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            attribute = _get_xattr(src.fileno())
            if attribute is not None:
                try:
                    os.setxattr(dst.fileno(), _META_XATTR, attribute)
                except OSError as exc:
                    if exc.errno not in _NO_XATTRS:
                        raise
                    # A tier on a filesystem without attributes: a sidecar there, written
                    # (durably) before the object appears.
                    _write_file_durably(attribute, _meta_path(target), tmp_dir)
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_file_durably(data: bytes, target: Path, tmp_dir: Path) -> None:
    tmp = tmp_dir / uuid.uuid4().hex
    try:
        with _create(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _create(path: Path) -> BinaryIO:
    """A new file for writing, created with FILE_MODE (``open(..., "wb")`` would take 0666 less
    the umask: world-readable under the usual 022)."""
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE), "wb")


def _meta_path(target: Path) -> Path:
    return target.with_name(target.name + _META_SUFFIX)


#: Short names of the archive's own metadata keys as stored.  ext4 keeps an extended
#: attribute in the inode only while it is small (about 60 bytes of value in a 256-byte
#: inode); a larger one takes a 4 KiB block of its own for every object, allocated, written
#: and synced with it.  Measured on the 4-client STOW-RS benchmark: about a tenth of the
#: throughput.  With these names and compact JSON the ingest's metadata fits the inode.
_SHORT_KEYS = {"vna-source": "~s", "vna-ingested-at": "~t", "vna-received-sha256": "~r"}
_LONG_KEYS = {short: key for key, short in _SHORT_KEYS.items()}


def _check_keys(metadata: Mapping[str, str] | None) -> None:
    reserved = [k for k in metadata or {} if k.startswith("~")]
    if reserved:
        raise InvalidRequest(f"object metadata key {reserved[0]!r}: no key may start with '~'")


def _encode(metadata: Mapping[str, str] | None) -> bytes:
    _check_keys(metadata)
    compact = {_SHORT_KEYS.get(k, k): v for k, v in (metadata or {}).items()}
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(raw: bytes | str) -> dict[str, str]:
    """Either encoding: ``_encode``'s, or the long keys of stores written before it."""
    loaded = json.loads(raw)
    if not isinstance(loaded, dict):
        raise ValueError("object metadata is not a JSON object")
    return {_LONG_KEYS.get(str(k), str(k)): v for k, v in loaded.items()}


def _get_xattr(fd_or_path: int | Path) -> bytes | None:
    try:
        return os.getxattr(fd_or_path, _META_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, *_NO_XATTRS):
            return None
        raise


def _read_metadata(path: Path) -> dict[str, str] | None:
    """The object's metadata: its attribute, else its sidecar; None when it has neither (or
    they cannot be read as JSON)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        sidecar = _meta_path(path)
        if sidecar.exists():
            # A sidecar is written only where the attribute could not be, or by an older
            # store; replacing metadata keeps using it, so it is the current one.
            return _decode(sidecar.read_bytes())
        attribute = _get_xattr(path)
        if attribute is not None:
            return _decode(attribute)
    return None


def _probe_xattrs(directory: Path) -> bool:
    """Whether files in ``directory`` take user extended attributes."""
    if not hasattr(os, "setxattr"):
        return False  # not Linux
    probe = directory / f"xattr-probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        try:
            os.setxattr(fd, _META_XATTR, b"{}")
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _same_device(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable (the directory entry), not just the file's data.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
