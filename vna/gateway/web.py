"""The DICOMweb application (aiohttp): routes, error translation, health and metrics.

Handlers live in stow.py, qido.py and wado.py and take what they share from
request_context.py; this module wires them and owns the one place where archive errors become
HTTP responses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from vna.archive import Archive
from vna.errors import OfflineError, Unauthorized, VnaError
from vna.gateway import (
    admin,
    auth,
    changefeed,
    cors,
    frames,
    qido,
    readiness,
    rejection,
    rendered,
    stow,
    wado,
    wado_uri,
)
from vna.gateway.request_context import ARCHIVE, PREFIX
from vna.gateway.status import http_status
from vna.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from vna.security.audit import AuditTrail
from vna.security.authn import Authenticator

log = logging.getLogger(__name__)

__all__ = ["ARCHIVE", "PREFIX", "create_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(archive: Archive) -> web.Application:
    app = web.Application(
        # Errors first, so that refusals by the authentication are answered like any other.
        middlewares=[_errors_and_metrics, auth.authenticate],
        # Bodies are streamed by the handlers, never read whole; this bounds what aiohttp
        # itself would buffer (form posts, which no route accepts).
        client_max_size=1024**2,
    )
    app[ARCHIVE] = archive
    cors.register(app)  # [http] cors_origins: preflights answered before authentication
    app[auth.AUTH] = Authenticator(archive.db, archive.settings)
    app[auth.AUDIT] = AuditTrail(archive.db, archive.metrics)
    r = app.router
    p = PREFIX
    r.add_get("/healthz", healthz)
    readiness.register(app, archive)  # /readyz: catalogue and store checked (load balancers)
    r.add_get("/metrics", metrics)

    r.add_post(f"{p}/studies", stow.store_instances)
    r.add_post(f"{p}/studies/{{study}}", stow.store_instances)
    r.add_post(f"{p}/studies/{{study}}/reject/{{code}}", rejection.reject)
    r.add_post(f"{p}/studies/{{study}}/series/{{series}}/reject/{{code}}", rejection.reject)

    r.add_get(f"{p}/studies", qido.search_studies)
    r.add_get(f"{p}/series", qido.search_series)
    r.add_get(f"{p}/instances", qido.search_instances)
    r.add_get(f"{p}/studies/{{study}}/series", qido.search_series)
    r.add_get(f"{p}/studies/{{study}}/instances", qido.search_instances)
    r.add_get(f"{p}/studies/{{study}}/series/{{series}}/instances", qido.search_instances)

    r.add_get(f"{p}/studies/{{study}}", wado.retrieve)
    r.add_get(f"{p}/studies/{{study}}/series/{{series}}", wado.retrieve)
    r.add_get(f"{p}/studies/{{study}}/series/{{series}}/instances/{{instance}}", wado.retrieve)
    r.add_get(f"{p}/studies/{{study}}/metadata", wado.metadata)
    r.add_get(f"{p}/studies/{{study}}/series/{{series}}/metadata", wado.metadata)
    r.add_get(
        f"{p}/studies/{{study}}/series/{{series}}/instances/{{instance}}/metadata", wado.metadata
    )
    r.add_get(f"{p}/changefeed", changefeed.read_feed)
    r.add_get(f"{p}/changefeed/latest", changefeed.read_latest)
    instance = f"{p}/studies/{{study}}/series/{{series}}/instances/{{instance}}"
    r.add_get(f"{instance}/frames/{{frames}}", frames.frames)
    r.add_get(f"{instance}/bulk/{{path:.+}}", frames.bulk)
    # Rendered images and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4) at every level.
    for level in (
        f"{p}/studies/{{study}}",
        f"{p}/studies/{{study}}/series/{{series}}",
        instance,
        f"{instance}/frames/{{frames}}",
    ):
        r.add_get(f"{level}/rendered", rendered.rendered)
        r.add_get(f"{level}/thumbnail", rendered.thumbnail)
    wado_uri.register(app)  # GET /wado?requestType=WADO... (PS3.18 9)
    rendered.register_wado_uri()  # its image/jpeg and image/png answers
    admin.register(app)  # /admin: conflicts, patient links, corrections, merges
    return app


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except VnaError as exc:
        status = http_status(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        headers = {}
        if isinstance(exc, OfflineError):
            headers["Retry-After"] = str(exc.retry_after_seconds)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="vna"'
        raise _http_error(status, str(exc), headers) from exc
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[ARCHIVE].metrics.request_seconds.labels(
            request.method, name, str(status)
        ).observe(time.perf_counter() - started)


def _http_error(status: int, reason: str, headers: dict[str, str]) -> web.HTTPException:
    # The reason goes in the body (one line, text) so curl users and client logs see it.
    cls: type[web.HTTPException] = web.HTTPInternalServerError
    for candidate in _ERROR_CLASSES:
        if candidate.status_code == status:
            cls = candidate
            break
    return cls(text=reason + "\n", headers=headers)


_ERROR_CLASSES: tuple[type[web.HTTPException], ...] = (
    web.HTTPBadRequest,
    web.HTTPUnauthorized,
    web.HTTPForbidden,
    web.HTTPNotFound,
    web.HTTPNotAcceptable,
    web.HTTPConflict,
    web.HTTPRequestEntityTooLarge,
    web.HTTPUnsupportedMediaType,
    web.HTTPServiceUnavailable,
    web.HTTPInternalServerError,
)


async def healthz(request: web.Request) -> web.Response:
    """200 when the catalogue answers; 503 with the reason otherwise (load balancers)."""
    archive = request.app[ARCHIVE]
    async with archive.db.acquire() as conn:
        await conn.fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    await archive.refresh_gauges()
    return web.Response(
        body=archive.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )
