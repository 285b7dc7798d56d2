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

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from vna.errors import ConfigError
from vna.storage.base import ObjectStore

#: S3 storage classes a tier may map to, and the speeds of a restore from an offline class.
#: Here rather than in vna.storage.s3 so that checking a URL does not load the S3 driver.
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "GLACIER",
        "DEEP_ARCHIVE",
    }
)
RESTORE_TIERS = ("Expedited", "Standard", "Bulk")
_FILE_PARAMS = {"warm_root", "cold_root"}
_S3_PARAMS = {
    "endpoint_url",
    "region",
    "prefix",
    "warm_class",
    "cold_class",
    "restore_tier",
    "timeout",
}


@dataclass(frozen=True)
class StoreUrl:
    """A checked store URL: what the back end needs to open the store."""

    scheme: str
    #: file://: the root directory, and the roots of other tiers when given.
    root: Path | None = None
    tier_roots: dict[str, Path] = field(default_factory=dict)
    #: s3://
    bucket: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    prefix: str = ""
    tier_classes: dict[str, str] = field(default_factory=dict)
    restore_tier: str = "Standard"
    timeout: float | None = None


def parse_store_url(url: str, key: str = "storage URL") -> StoreUrl:
    """Check a store URL without opening anything; ConfigError naming ``key`` (the setting the
    URL came from, ``'storage_url'``) and the URL for anything a store would refuse."""
    where = f"{key} {url!r}"
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{where}: a file:// URL takes an absolute local path, file:///path"
                f" ({parsed.netloc!r} would be a host name)"
            )
        root = Path(unquote(parsed.path))
        if not root.is_absolute():
            raise ConfigError(f"{where}: a file:// URL takes an absolute local path, file:///path")
        params = _params(where, parsed.query, _FILE_PARAMS)
        roots = {}
        for tier in ("warm", "cold"):
            if f"{tier}_root" in params:
                tier_root = Path(params[f"{tier}_root"])
                if not tier_root.is_absolute():
                    raise ConfigError(f"{where}: {tier}_root must be an absolute path")
                roots[tier] = tier_root
        return StoreUrl("file", root=root, tier_roots=roots)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"{where}: no bucket named (s3://BUCKET?region=...)")
        params = _params(where, parsed.query, _S3_PARAMS)
        classes = {}
        for tier in ("warm", "cold"):
            if f"{tier}_class" in params:
                classes[tier] = params[f"{tier}_class"].upper()
                if classes[tier] not in STORAGE_CLASSES:
                    raise ConfigError(
                        f"{where}: {tier}_class must be one of {', '.join(sorted(STORAGE_CLASSES))}"
                    )
        restore_tier = params.get("restore_tier", "Standard").capitalize()
        if restore_tier not in RESTORE_TIERS:
            raise ConfigError(f"{where}: restore_tier must be one of {', '.join(RESTORE_TIERS)}")
        timeout = None
        if "timeout" in params:
            try:
                timeout = float(params["timeout"])
            except ValueError:
                timeout = None
            if timeout is None or not 0 < timeout <= 3600:
                raise ConfigError(
                    f"{where}: timeout must be a number of seconds, above 0 and at most 3600"
                )
        return StoreUrl(
            "s3",
            bucket=parsed.netloc,
            endpoint_url=params.get("endpoint_url"),
            region=params.get("region"),
            prefix=params.get("prefix", "").strip("/"),
            tier_classes=classes,
            restore_tier=restore_tier,
            timeout=timeout,
        )
    raise ConfigError(f"{where}: scheme must be file:// or s3://")


async def open_store(url: str, name: str = "primary") -> ObjectStore:
    spec = parse_store_url(url)
    if spec.scheme == "file":
        from vna.storage.filesystem import FilesystemStore

        assert spec.root is not None
        return FilesystemStore(spec.root, name=name, tier_roots=spec.tier_roots)
    from vna.storage.s3 import S3Store

    store = S3Store(
        bucket=spec.bucket,
        endpoint_url=spec.endpoint_url,
        region=spec.region,
        prefix=spec.prefix,
        name=name,
        tier_classes=spec.tier_classes,
        restore_tier=spec.restore_tier,
        timeout=spec.timeout,
    )
    await store.start()
    return store


def _params(where: str, query: str, known: set[str]) -> dict[str, str]:
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(params) - known
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) {sorted(unknown)}")
    return params
