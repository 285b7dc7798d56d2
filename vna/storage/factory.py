"""Open an object store from its URL (``file:///path`` or ``s3://bucket?endpoint_url=...``).

Tier placement belongs to the store, so it is part of the URL:

* ``file:///srv/objects?warm_root=/mnt/nas/objects&cold_root=/mnt/cold/objects`` (default:
  ``<root>-warm`` and ``<root>-cold`` beside the root);
* ``s3://bucket?warm_class=STANDARD_IA&cold_class=DEEP_ARCHIVE&restore_tier=Bulk`` (default:
  STANDARD_IA, GLACIER and Standard restores).

An S3 URL may also set ``timeout`` (seconds to connect and to wait for each read of an answer,
default 10 and 60): ``s3://bucket?timeout=5``.
"""

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
        params = _params(url, parsed.query, {"warm_root", "cold_root"})
        roots = {}
        for tier in ("warm", "cold"):
            if f"{tier}_root" in params:
                root = Path(params[f"{tier}_root"])
                if not root.is_absolute():
                    raise ConfigError(f"storage URL {url!r}: {tier}_root must be an absolute path")
                roots[tier] = root
        return FilesystemStore(Path(unquote(parsed.path)), name=name, tier_roots=roots)
    if parsed.scheme == "s3":
        from vna.storage.s3 import S3Store

        if not parsed.netloc:
            raise ConfigError(f"storage URL {url!r}: no bucket named")
        from vna.storage.s3 import RESTORE_TIERS, STORAGE_CLASSES

        params = _params(
            url,
            parsed.query,
            {
                "endpoint_url",
                "region",
                "prefix",
                "warm_class",
                "cold_class",
                "restore_tier",
                "timeout",
            },
        )
        classes = {}
        for tier in ("warm", "cold"):
            if f"{tier}_class" in params:
                classes[tier] = params[f"{tier}_class"].upper()
                if classes[tier] not in STORAGE_CLASSES:
                    raise ConfigError(
                        f"storage URL {url!r}: {tier}_class must be one of"
                        f" {', '.join(sorted(STORAGE_CLASSES))}"
                    )
        restore_tier = params.get("restore_tier", "Standard").capitalize()
        if restore_tier not in RESTORE_TIERS:
            raise ConfigError(
                f"storage URL {url!r}: restore_tier must be one of {', '.join(RESTORE_TIERS)}"
            )
        timeout = None
        if "timeout" in params:
            try:
                timeout = float(params["timeout"])
            except ValueError:
                timeout = None
            if timeout is None or not 0 < timeout <= 3600:
                raise ConfigError(
                    f"storage URL {url!r}: timeout must be a number of seconds, above 0"
                    " and at most 3600"
                )
        store = S3Store(
            bucket=parsed.netloc,
            endpoint_url=params.get("endpoint_url"),
            region=params.get("region"),
            prefix=params.get("prefix", "").strip("/"),
            name=name,
            tier_classes=classes,
            restore_tier=restore_tier,
            timeout=timeout,
        )
        await store.start()
        return store
    raise ConfigError(f"storage URL {url!r}: scheme must be file:// or s3://")


def _params(url: str, query: str, known: set[str]) -> dict[str, str]:
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(params) - known
    if unknown:
        raise ConfigError(f"storage URL {url!r}: unknown parameter(s) {sorted(unknown)}")
    return params
