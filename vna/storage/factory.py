"""Open an object store from its URL (``file:///path`` or ``s3://bucket?endpoint_url=...``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from vna.errors import ConfigError
from vna.storage.base import ObjectStore


async def open_store(url: str, name: str = "primary") -> ObjectStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from vna.storage.filesystem import FilesystemStore

        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"storage URL {url!r}: file:// URLs must be local paths")
        return FilesystemStore(Path(unquote(parsed.path)), name=name)
    if parsed.scheme == "s3":
        from vna.storage.s3 import S3Store

        if not parsed.netloc:
            raise ConfigError(f"storage URL {url!r}: no bucket named")
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(params) - {"endpoint_url", "region", "prefix"}
        if unknown:
            raise ConfigError(f"storage URL {url!r}: unknown parameter(s) {sorted(unknown)}")
        store = S3Store(
            bucket=parsed.netloc,
            endpoint_url=params.get("endpoint_url"),
            region=params.get("region"),
            prefix=params.get("prefix", "").strip("/"),
            name=name,
        )
        await store.start()
        return store
    raise ConfigError(f"storage URL {url!r}: scheme must be file:// or s3://")
