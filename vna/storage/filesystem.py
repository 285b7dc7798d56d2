"""Filesystem object store: the embedded default.

Durability follows the classic recipe: write to a temporary file on the same filesystem, fsync
it, rename it into place, fsync the directory.  After ``put_*`` returns, a power cut loses
nothing.  Blocking calls run in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from vna.errors import NotFound, StorageError
from vna.storage.base import ObjectInfo, ObjectStore, check_sha256, validate_key

_META_SUFFIX = ".meta.json"


class FilesystemStore(ObjectStore):
    def __init__(self, root: Path, name: str = "primary") -> None:
        self.root = root.resolve()
        self.name = name
        self._tmp = self.root / ".tmp"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create object store at {self.root}: {exc}") from exc

    def path_of(self, key: str) -> Path:
        return self.root / validate_key(key)

    # --- writes ---------------------------------------------------------------------------

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        sha256: str,
        metadata: Mapping[str, str] | None = None,
        consume: bool = False,
    ) -> None:
        target = self.path_of(key)
        check_sha256(key, sha256)
        await asyncio.to_thread(self._put_file, key, target, path, sha256, metadata, consume)

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        target = self.path_of(key)
        check_sha256(key, sha256)
        await asyncio.to_thread(self._put_bytes, key, target, data, sha256, metadata)

    def _put_file(
        self,
        key: str,
        target: Path,
        source: Path,
        sha256: str,
        metadata: Mapping[str, str] | None,
        consume: bool,
    ) -> None:
        try:
            if target.exists():
                # Content-addressed: same key, same bytes.  Nothing to write.
                if metadata:
                    self._write_atomic(_meta_path(target), json.dumps(dict(metadata)).encode())
                if consume:
                    source.unlink(missing_ok=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            if consume and _same_device(source, self._tmp):
                # The upload was received on this filesystem: make it durable where it lies
                # and rename it into place instead of copying the bytes again.
                check_sha256(key, sha256, _sha256_of(source))
                _fsync_file(source)
                if metadata:
                    self._write_atomic(_meta_path(target), json.dumps(dict(metadata)).encode())
                os.replace(source, target)
                _fsync_dir(target.parent)
                return
            tmp = self._tmp / uuid.uuid4().hex
            try:
                digest = hashlib.sha256()
                with open(source, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                check_sha256(key, sha256, digest.hexdigest())
                if metadata:
                    self._write_atomic(_meta_path(target), json.dumps(dict(metadata)).encode())
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
            if metadata:
                self._write_atomic(_meta_path(target), json.dumps(dict(metadata)).encode())
            self._write_atomic(target, data)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: write failed: {exc}") from exc

    def _write_atomic(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    # --- reads ----------------------------------------------------------------------------

    async def get_bytes(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"object {key} not in store {self.name}") from None
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise NotFound(f"object {key} not in store {self.name}") from None
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: read failed: {exc}") from exc
        try:
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

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)

        def _stat() -> ObjectInfo | None:
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            metadata = None
            with contextlib.suppress(FileNotFoundError, ValueError):
                metadata = json.loads(_meta_path(path).read_text())
            return ObjectInfo(key=key, size=st.st_size, metadata=metadata)

        try:
            return await asyncio.to_thread(_stat)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: stat failed: {exc}") from exc

    async def delete(self, key: str) -> None:
        path = self.path_of(key)

        def _delete() -> None:
            path.unlink(missing_ok=True)
            _meta_path(path).unlink(missing_ok=True)
            _fsync_dir(path.parent) if path.parent.exists() else None

        try:
            await asyncio.to_thread(_delete)
        except OSError as exc:
            raise StorageError(f"filesystem store {self.name}: delete failed: {exc}") from exc

    async def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        def _walk() -> list[str]:
            keys = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = os.path.relpath(dirpath, self.root)
                for fn in filenames:
                    if fn.endswith(_META_SUFFIX) or fn.startswith("."):
                        continue
                    key = fn if rel == "." else f"{rel}/{fn}"
                    if key.startswith(prefix):
                        keys.append(key)
            return keys

        for key in await asyncio.to_thread(_walk):
            yield key


def _meta_path(target: Path) -> Path:
    return target.with_name(target.name + _META_SUFFIX)


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
