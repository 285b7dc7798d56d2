"""``GET /readyz``: whether this server can take traffic now (readiness, for load balancers).

``/healthz`` (liveness) says the process answers; a load balancer that routed by it sent
studies to a server whose bucket was unreachable, and every one got A700.  Readiness checks
what storing needs: the catalogue answers a query, and the active object store takes a small
object (under ``health/``, never an instance key) and gives it back unchanged.  The probe
object is deleted afterwards where the store allows it; the AWS gateway role may not delete
(terraform/iam.tf), and a lifecycle rule expires ``health/`` there instead.  The answer is
200 when both hold and 503 naming what is down otherwise, with each check's outcome in the
body.

The result is remembered for a few seconds: load balancers probe every few seconds per target,
and a probe must not become load on the store.  Concurrent probes share one check.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web

from vna.archive import Archive
from vna.storage.base import PROBE_PREFIX

log = logging.getLogger(__name__)

#: Seconds a readiness answer is reused.
CACHE_SECONDS = 5.0
#: Seconds each check may take before it counts as down (a store that hangs is not ready).
CHECK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Readiness:
    #: Check name ("catalogue", "store") -> "ok" or why it is down.
    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    @property
    def down(self) -> list[str]:
        return [name for name, v in self.checks.items() if v != "ok"]


class ReadinessProbe:
    """Checks one archive, at most once per ``cache_seconds``."""

    def __init__(self, archive: Archive, cache_seconds: float = CACHE_SECONDS) -> None:
        self.archive = archive
        self.cache_seconds = cache_seconds
        self._last: Readiness | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        # One key per process: several workers (and servers) may share the store, and each
        # must read back its own probe, not a neighbour's.  Outside sha256/: never an instance.
        host = "".join(ch if ch.isalnum() else "-" for ch in socket.gethostname().lower())
        self._key = f"{PROBE_PREFIX}readyz-{host or 'host'}-{os.getpid()}"
        self._may_delete = True

    async def check(self) -> Readiness:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._checked_at < self.cache_seconds:
                return self._last
            catalogue, store = await asyncio.gather(
                _bounded(self._check_catalogue()), _bounded(self._check_store())
            )
            result = Readiness({"catalogue": catalogue, "store": store})
            if not result.ready and (self._last is None or self._last.ready):
                log.warning(
                    "not ready: %s",
                    "; ".join(f"{name}: {result.checks[name]}" for name in result.down),
                )
            self._last, self._checked_at = result, time.monotonic()
            return result

    async def _check_catalogue(self) -> None:
        async with self.archive.db.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def _check_store(self) -> None:
        store = self.archive.store
        # Fresh content each time, so that an old copy cannot pass for a working write.
        data = f"vna readiness probe {time.time_ns()}\n".encode()
        digest = hashlib.sha256(data).hexdigest()
        await store.put_bytes(self._key, data, sha256=digest)
        if await store.get_bytes(self._key) != data:
            raise RuntimeError("the probe object came back different")
        if self._may_delete:
            try:
                await store.delete(self._key)
            except Exception as exc:
                # Deleting is not what serving needs (the AWS gateway role may not): stop
                # trying, and leave the one object to the store's expiry rule.
                self._may_delete = False
                log.info("readiness probe object %s left in place: %s", self._key, exc)


async def _bounded(check: Awaitable[None]) -> str:
    """ "ok", or the check's failure in one line."""
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure means not ready; the reason is what matters
        text = " ".join(str(exc).split()) or type(exc).__name__
        return f"{type(exc).__name__}: {text[:300]}"
    return "ok"


PROBE: web.AppKey[ReadinessProbe] = web.AppKey("readiness", ReadinessProbe)


def register(app: web.Application, archive: Archive) -> None:
    """Add ``GET /readyz`` to the application (no token needed: no patient data)."""
    app[PROBE] = ReadinessProbe(archive)
    app.router.add_get("/readyz", readyz)


async def readyz(request: web.Request) -> web.Response:
    """200 ``{"status": "ready", ...}``; 503 ``{"status": "not ready", "down": [...], ...}``."""
    result = await request.app[PROBE].check()
    body: dict[str, object] = {"status": "ready" if result.ready else "not ready"}
    if not result.ready:
        body["down"] = result.down
    body["checks"] = result.checks
    return web.json_response(body, status=200 if result.ready else 503)
