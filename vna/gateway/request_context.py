"""What a DICOMweb handler needs from the application it runs in: the archive, the URL prefix
of the DICOMweb routes, the base URL of this request, and the source a request stores as.

The router (:mod:`vna.gateway.web`) imports the handlers; the handlers import this module,
never the router, so imports run one way.
"""

from __future__ import annotations

from aiohttp import web

from vna.archive import Archive
from vna.config import DEFAULT_SOURCE, SourceSettings
from vna.errors import Forbidden
from vna.gateway import auth

ARCHIVE: web.AppKey[Archive] = web.AppKey("archive", Archive)
#: Where the DICOMweb routes live (PS3.18 8.2: the "service" part of a target URI).
PREFIX = "/dicom-web"


def sender_source(request: web.Request) -> tuple[SourceSettings, str]:
    """The source a request stores as, and the actor name for the audit trail.

    A source token (a declared source's ``token_sha256``, or ``vna tokens create --role
    source``) stores as its source.  An archive without credentials stores as the default
    source.
    """
    settings = request.app[ARCHIVE].settings
    principal = auth.principal_of(request)
    if principal.role == "open":
        return DEFAULT_SOURCE, principal.name
    source = settings.source_named(principal.source or "")
    if source is None and principal.source == DEFAULT_SOURCE.name:
        source = DEFAULT_SOURCE  # stores as received, like an archive without sources
    if source is None:
        raise Forbidden(
            f"token {principal.name!r} stores as source {principal.source!r},"
            " which the configuration does not declare"
        )
    return source, principal.name


def caller_source(request: web.Request) -> SourceSettings | None:
    """The declared source a request comes from (a source token), whose query scope applies
    to what it searches and retrieves (vna.security.query_scope); None for other callers."""
    principal = auth.principal_of(request)
    if principal.role != "source":
        return None
    return request.app[ARCHIVE].settings.source_named(principal.source or "")


def base_url(request: web.Request) -> str:
    """The DICOMweb root as this client reached it (for RetrieveURL and Location values)."""
    return f"{request.scheme}://{request.host}{PREFIX}"
