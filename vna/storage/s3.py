"""S3 object store (any S3-compatible endpoint) over aiobotocore.

Uploads carry ChecksumSHA256 so the endpoint verifies the bytes it received against the digest
computed while the instance streamed in; large objects go up in parts of bounded size so memory
stays flat whatever the instance size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiobotocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from vna.errors import NotFound, StorageError
from vna.storage.base import ObjectInfo, ObjectStore, check_sha256, validate_key

#: Objects up to this size go up in one PUT; larger ones in parts of this size.
PART_SIZE = 32 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
        name: str = "primary",
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = f"{prefix}/" if prefix else ""
        self.name = name
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        session = aiobotocore.session.get_session()
        config = BotoConfig(
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=10,
            read_timeout=120,
        )
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        )

    async def close(self) -> None:
        await self._stack.aclose()

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

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
        check_sha256(key, sha256)
        size = path.stat().st_size  # noqa: ASYNC240 - one metadata syscall
        try:
            if size <= PART_SIZE:
                data = await asyncio.to_thread(path.read_bytes)
                await self._put(key, data, sha256, metadata)
            else:
                await self._put_multipart(key, path, sha256, metadata)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 store {self.name}: upload failed: {exc}") from exc
        if consume:
            path.unlink(missing_ok=True)  # noqa: ASYNC240

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        try:
            await self._put(key, data, sha256, metadata)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 store {self.name}: upload failed: {exc}") from exc

    async def _put(
        self, key: str, data: bytes, sha256: str, metadata: Mapping[str, str] | None
    ) -> None:
        # Checked here too, not only by the endpoint: not every S3-compatible endpoint
        # verifies ChecksumSHA256.
        check_sha256(key, sha256)
        check_sha256(key, sha256, await asyncio.to_thread(_sha256_hex, data))
        await self._client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
            Metadata=dict(metadata or {}),
        )

    async def _put_multipart(
        self, key: str, path: Path, sha256: str, metadata: Mapping[str, str] | None
    ) -> None:
        s3_key = self._key(key)
        upload = await self._client.create_multipart_upload(
            Bucket=self.bucket,
            Key=s3_key,
            Metadata=dict(metadata or {}),
            ChecksumAlgorithm="SHA256",
        )
        upload_id = upload["UploadId"]
        parts = []
        whole = hashlib.sha256()
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - reads go through to_thread
                number = 1
                while chunk := await asyncio.to_thread(f.read, PART_SIZE):
                    await asyncio.to_thread(whole.update, chunk)
                    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                    resp = await self._client.upload_part(
                        Bucket=self.bucket,
                        Key=s3_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=digest,
                    )
                    parts.append(
                        {"ETag": resp["ETag"], "PartNumber": number, "ChecksumSHA256": digest}
                    )
                    number += 1
            # The parts' checksums prove each part arrived intact; this proves they are the
            # declared object before it becomes visible.
            check_sha256(key, sha256, whole.hexdigest())
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=s3_key, UploadId=upload_id
                )
            raise

    # --- reads ----------------------------------------------------------------------------

    async def _get(self, key: str, **extra: Any) -> Any:
        try:
            return await self._client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise NotFound(f"object {key} not in store {self.name}") from None
            raise StorageError(f"S3 store {self.name}: read failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 store {self.name}: read failed: {exc}") from exc

    async def get_bytes(self, key: str) -> bytes:
        resp = await self._get(key)
        try:
            async with resp["Body"] as body:
                data: bytes = await body.read()
                return data
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"S3 store {self.name}: read failed: {exc}") from exc

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        resp = await self._get(key)
        async with resp["Body"] as body:
            while True:
                try:
                    chunk = await body.read(chunk_size)
                except (ClientError, BotoCoreError, OSError) as exc:
                    raise StorageError(f"S3 store {self.name}: read failed: {exc}") from exc
                if not chunk:
                    return
                yield chunk

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise StorageError(f"S3 store {self.name}: head failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 store {self.name}: head failed: {exc}") from exc
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            storage_class=resp.get("StorageClass", "STANDARD"),
            metadata=resp.get("Metadata") or None,
        )

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 store {self.name}: delete failed: {exc}") from exc

    async def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 store {self.name}: list failed: {exc}") from exc


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
