"""Object storage: one small async interface, two real back ends (filesystem and S3)."""

from vna.storage.base import ObjectInfo, ObjectStore, content_key, validate_key
from vna.storage.factory import open_store

__all__ = ["ObjectInfo", "ObjectStore", "content_key", "open_store", "validate_key"]
