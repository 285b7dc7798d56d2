"""S3 object store (any S3-compatible endpoint) over aiobotocore.

Uploads carry ChecksumSHA256 so the endpoint verifies the bytes it received against the digest
computed while the instance streamed in; large objects go up in parts of bounded size so memory
stays flat whatever the instance size.

Tiers are storage classes: by default hot = STANDARD, warm = STANDARD_IA, cold = GLACIER
(``?warm_class=...&cold_class=...`` in the storage URL).  An object is moved by copying it onto
itself with the new class (the only way S3 changes a class outside bucket lifecycle rules).
GLACIER and DEEP_ARCHIVE are offline: GetObject fails with InvalidObjectState until a
RestoreObject has made a temporary copy, whose state HeadObject reports in its Restore header.
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
from botocore import handlers as botocore_handlers
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from vna.errors import InvalidRequest, NotFound, OfflineError, StorageError
from vna.storage.base import (
    FileStamp,
    ObjectInfo,
    ObjectStore,
    check_sha256,
    validate_key,
)
from vna.storage.factory import RESTORE_TIERS, STORAGE_CLASSES
from vna.tiers import TIERS

#: Objects up to this size go up in one PUT; larger ones in parts of this size.
PART_SIZE = 32 * 1024 * 1024
#: CopyObject copies at most 5 GiB; larger objects are copied in parts (UploadPartCopy).
COPY_LIMIT = 5 * 1024**3
#: Seconds to open a connection and to wait for each read of an answer (a read timeout is
#: inactivity on the socket, not the duration of a whole transfer), and attempts per request
#: (botocore's standard retries, with exponential back-off) before an operation fails.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 3
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
#: Errors of reading or copying an offline object without a restored copy.
_OFFLINE = {"InvalidObjectState", "ObjectNotInActiveTierError"}

#: Classes whose objects must be restored before they can be read.
OFFLINE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
DEFAULT_TIER_CLASSES = {"hot": "STANDARD", "warm": "STANDARD_IA", "cold": "GLACIER"}
#: Typical restore times in seconds, from the S3 documentation (Restoring an archived object:
#: GLACIER expedited 1-5 min, standard 3-5 h, bulk 5-12 h; DEEP_ARCHIVE standard within 12 h,
#: bulk within 48 h), taken at the upper end for Retry-After.
_RESTORE_SECONDS = {
    ("GLACIER", "Expedited"): 5 * 60,
    ("GLACIER", "Standard"): 5 * 3600,
    ("GLACIER", "Bulk"): 12 * 3600,
    ("DEEP_ARCHIVE", "Expedited"): 12 * 3600,  # not offered: AWS runs it as Standard
    ("DEEP_ARCHIVE", "Standard"): 12 * 3600,
    ("DEEP_ARCHIVE", "Bulk"): 48 * 3600,
}


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
        name: str = "primary",
        tier_classes: dict[str, str] | None = None,
        restore_tier: str = "Standard",
        timeout: float | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = f"{prefix}/" if prefix else ""
        self.name = name
        self.tier_classes = {**DEFAULT_TIER_CLASSES, **(tier_classes or {})}
        for tier, storage_class in self.tier_classes.items():
            if tier not in TIERS or storage_class not in STORAGE_CLASSES:
                raise InvalidRequest(f"S3 store: tier {tier!r} -> class {storage_class!r}")
        if restore_tier not in RESTORE_TIERS:
            raise InvalidRequest(f"S3 store: restore tier {restore_tier!r}")
        self.restore_tier = restore_tier
        if timeout is not None and not 0 < timeout <= 3600:
            raise InvalidRequest(f"S3 store: timeout {timeout!r} (seconds, 0 < timeout <= 3600)")
        #: Seconds to connect, and to wait for each read of an answer (``?timeout=`` in the
        #: storage URL); None: CONNECT_TIMEOUT and READ_TIMEOUT.
        self.timeout = timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        session = aiobotocore.session.get_session()
        # A hung endpoint holds an ingest (and the sender waiting for its status) for about
        # MAX_ATTEMPTS x (timeout + back-off) before the instance is refused with a retriable
        # status: minutes at most, never indefinitely.
        config = BotoConfig(
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=64,
            connect_timeout=self.timeout or CONNECT_TIMEOUT,
            read_timeout=self.timeout or READ_TIMEOUT,
        )
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        )
        # botocore sends PUTs with "Expect: 100-continue", and aiohttp starts its read timeout
        # only once the body is sent, which waits for the "100 Continue" with no time limit:
        # an endpoint that takes the request head and never answers would hold the ingest
        # forever.  Without the header the body goes out at once and read_timeout applies.
        self._client.meta.events.unregister("before-call.s3", botocore_handlers.add_expect_header)

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
        hashed: FileStamp | None = None,
    ) -> None:
        check_sha256(key, sha256)
        size = path.stat().st_size  # noqa: ASYNC240 - one metadata syscall
        try:
            if size <= PART_SIZE:
                data = await asyncio.to_thread(path.read_bytes)
                # The bytes read are the ones the caller hashed if the file is still the
                # version it stamped once they are read.
                trusted = hashed is not None and hashed.describes(path)
                await self._put(key, data, sha256, metadata, verified=trusted)
            else:
                await self._put_multipart(key, path, sha256, metadata)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("upload", exc) from exc
        if consume:
            path.unlink(missing_ok=True)  # noqa: ASYNC240

    async def put_bytes(
        self, key: str, data: bytes, *, sha256: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        try:
            await self._put(key, data, sha256, metadata)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("upload", exc) from exc

    async def _put(
        self,
        key: str,
        data: bytes,
        sha256: str,
        metadata: Mapping[str, str] | None,
        *,
        verified: bool = False,
    ) -> None:
        # Checked here too, not only by the endpoint: not every S3-compatible endpoint
        # verifies ChecksumSHA256.
        check_sha256(key, sha256)
        if not verified:
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
        whole = hashlib.sha256()
        async with self._multipart_upload(
            s3_key, Metadata=dict(metadata or {}), ChecksumAlgorithm="SHA256"
        ) as (upload_id, parts):
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

    @contextlib.asynccontextmanager
    async def _multipart_upload(
        self, s3_key: str, **create: Any
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """A multipart upload: the body uploads parts and lists them; it is completed when
        the body returns and aborted when it raises, so no invisible parts stay billed."""
        upload = await self._client.create_multipart_upload(
            Bucket=self.bucket, Key=s3_key, **create
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            yield upload_id, parts
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
        except (ClientError, BotoCoreError) as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise NotFound(f"object {key} not in store {self.name}") from None
            if code in _OFFLINE:
                raise self._offline(key, exc) from None
            raise self._failed("read", exc) from exc

    async def get_bytes(self, key: str) -> bytes:
        resp = await self._get(key)
        try:
            async with resp["Body"] as body:
                data: bytes = await body.read()
                return data
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._failed("read", exc) from exc

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        resp = await self._get(key)
        async with resp["Body"] as body:
            while True:
                try:
                    chunk = await body.read(chunk_size)
                except (ClientError, BotoCoreError, OSError) as exc:
                    raise self._failed("read", exc) from exc
                if not chunk:
                    return
                yield chunk

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise self._failed("head", exc) from exc
        # HeadObject leaves StorageClass out for STANDARD.
        storage_class = resp.get("StorageClass") or "STANDARD"
        restore = resp.get("Restore") or ""
        restored = 'ongoing-request="false"' in restore
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            storage_class=storage_class,
            metadata=resp.get("Metadata") or None,
            tier=self._tier_of(storage_class),
            available=storage_class not in OFFLINE_CLASSES or restored,
            restore_in_progress='ongoing-request="true"' in restore,
            # Present only on a bucket with Object Lock (and to a caller allowed to read it).
            object_lock_until=resp.get("ObjectLockRetainUntilDate"),
            object_legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        )

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("delete", exc) from exc

    async def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :]
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("list", exc) from exc

    # --- tiers ------------------------------------------------------------------------------

    @property
    def offline_tiers(self) -> frozenset[str]:
        return frozenset(t for t, c in self.tier_classes.items() if c in OFFLINE_CLASSES)

    def restore_seconds(self, tier: str) -> int:
        return _RESTORE_SECONDS.get((self.tier_classes.get(tier, ""), self.restore_tier), 0)

    def _tier_of(self, storage_class: str) -> str | None:
        return next((t for t, c in self.tier_classes.items() if c == storage_class), None)

    def _failed(self, what: str, exc: Exception) -> StorageError:
        """The error of a failed request (``what``: read, upload...), naming the store."""
        return StorageError(f"S3 store {self.name}: {what} failed: {exc}")

    def _offline(self, key: str, exc: Exception | None = None) -> OfflineError:
        cold = next(iter(sorted(self.offline_tiers)), "cold")
        return OfflineError(
            f"object {key} is in an offline storage class of store {self.name}"
            " and must be restored first",
            retry_after_seconds=self.restore_seconds(cold) or 3600,
        )

    async def set_tier(self, key: str, tier: str) -> None:
        if tier not in self.tier_classes:
            raise InvalidRequest(f"no tier {tier!r} (one of {', '.join(TIERS)})")
        target = self.tier_classes[tier]
        info = await self.stat(key)
        if info is None:
            raise NotFound(f"object {key} not in store {self.name}")
        if info.storage_class == target:
            return
        s3_key = self._key(key)
        source = {"Bucket": self.bucket, "Key": s3_key}
        try:
            if info.size <= COPY_LIMIT:
                # Copying an object onto itself is allowed when something changes, here the
                # class; metadata is kept (COPY) and the checksum recomputed by S3.
                await self._client.copy_object(
                    Bucket=self.bucket,
                    Key=s3_key,
                    CopySource=source,
                    StorageClass=target,
                    MetadataDirective="COPY",
                    ChecksumAlgorithm="SHA256",
                )
            else:
                await self._copy_multipart(s3_key, source, info, target)
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in _OFFLINE:
                raise self._offline(key, exc) from None
            raise self._failed("class change", exc) from exc

    async def _copy_multipart(
        self, s3_key: str, source: dict[str, str], info: ObjectInfo, storage_class: str
    ) -> None:
        async with self._multipart_upload(
            s3_key, StorageClass=storage_class, Metadata=dict(info.metadata or {})
        ) as (upload_id, parts):
            for number, start in enumerate(range(0, info.size, PART_SIZE * 8), start=1):
                end = min(start + PART_SIZE * 8, info.size) - 1
                resp = await self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=s3_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"ETag": resp["CopyPartResult"]["ETag"], "PartNumber": number})

    async def restore(self, key: str, days: int) -> ObjectInfo:
        info = await self.stat(key)
        if info is None:
            raise NotFound(f"object {key} not in store {self.name}")
        if info.available or info.restore_in_progress:
            return info
        try:
            await self._client.restore_object(
                Bucket=self.bucket,
                Key=self._key(key),
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": self.restore_tier}},
            )
        except (ClientError, BotoCoreError) as exc:
            # Another reader asked first: the restore under way serves both.
            if _error_code(exc) != "RestoreAlreadyInProgress":
                raise self._failed("restore", exc) from exc
        return await self.stat(key) or info


def _error_code(exc: ClientError | BotoCoreError) -> str | None:
    """The S3 error code of a failed request; None when it got no answer (BotoCoreError)."""
    if isinstance(exc, ClientError):
        code: str | None = exc.response.get("Error", {}).get("Code")
        return code
    return None


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
