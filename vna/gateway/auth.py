"""Who is asking, and may they: bearer tokens and roles on every DICOMweb and admin request.

One middleware resolves the ``Authorization: Bearer`` token to a principal
(:class:`~vna.security.authn.Authenticator`) and checks the permission the route needs:

=========================  ============  =====================================
route                      permission    roles
=========================  ============  =====================================
``POST /dicom-web/...``    store         source
``POST .../reject/...``    admin         admin (IOCM rejection)
``GET /dicom-web/...``     read          reader, admin (source: read_sources)
``GET /wado`` (WADO-URI)   read          reader, admin (source: read_sources)
``/admin/...``             admin         admin
``/healthz``, ``/metrics`` none          anyone (no patient data)
=========================  ============  =====================================

A missing or invalid token is 401, a valid one without the permission 403; both refusals of a
presented token are audited (authentication-failed, access-denied).  Which studies a reader may
see (``read_sources``) is applied by the handlers: QIDO-RS filters, WADO-RS answers 404.

Until any credential exists the archive is open: loopback clients are served without a
token (``[http] allow_unauthenticated = true`` extends that to everyone except ``/admin``).
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from vna.errors import Forbidden, Unauthorized
from vna.security import tokens
from vna.security.audit import ACCESS_DENIED, AUTHENTICATION_FAILED, AuditTrail
from vna.security.authn import Authenticator
from vna.security.tokens import Principal

AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
AUDIT: web.AppKey[AuditTrail] = web.AppKey("audit", AuditTrail)
# The principal of the request being handled: aiohttp runs each request in its own task, so a
# context variable is per request (and works on every aiohttp version, unlike RequestKey).
_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "vna_principal", default=None
)

STORE, READ, ADMIN = "store", "read", "admin"
_DICOMWEB = "/dicom-web"
_ADMIN = "/admin"
#: WADO-URI (PS3.18 9), outside the DICOMweb prefix where its clients look for it.
_WADO_URI = "/wado"
#: IOCM rejection by an operator (vna.gateway.rejection): it withdraws images from every
#: reader, so it is an administrator's act, not a source's store.
_REJECT = re.compile(r"/dicom-web/studies/[^/]+(/series/[^/]+)?/reject/[^/]+")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def required_permission(request: web.Request) -> str | None:
    path = request.path
    if request.method == "POST" and _REJECT.fullmatch(path):
        return ADMIN
    if path == _DICOMWEB or path.startswith(_DICOMWEB + "/"):
        return STORE if request.method == "POST" else READ
    if path == _WADO_URI:
        return READ
    if path == _ADMIN or path.startswith(_ADMIN + "/"):
        return ADMIN
    return None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    permission = required_permission(request)
    principal = await authorise(request, permission) if permission is not None else None
    reset = _PRINCIPAL.set(principal)
    try:
        return await handler(request)
    finally:
        _PRINCIPAL.reset(reset)


def principal_of(request: web.Request) -> Principal:
    """The principal the middleware resolved for this request."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise Unauthorized("the request was not authenticated")
    return principal


async def authorise(request: web.Request, permission: str) -> Principal:
    """The principal of the request if it has ``permission``; Unauthorized or Forbidden."""
    authn = request.app[AUTH]
    header = request.headers.get("Authorization", "")
    if header:
        principal = await _from_token(request, header)
    elif await authn.enforced():
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    else:
        return _open(request, permission)
    allowed = {
        STORE: principal.may_store,
        READ: principal.may_read,
        ADMIN: principal.may_administer,
    }[permission]
    if not allowed:
        reason = f"token {principal.name!r} (role {principal.role}) may not {permission}"
        await request.app[AUDIT].security_event(
            principal.name,
            request.remote or "",
            ACCESS_DENIED,
            {"reason": reason, "method": request.method, "path": request.path},
        )
        raise Forbidden(reason)
    return principal


async def _from_token(request: web.Request, header: str) -> Principal:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    principal = await request.app[AUTH].principal(token.strip())
    if principal is None:
        await request.app[AUDIT].security_event(
            "unknown",
            request.remote or "",
            AUTHENTICATION_FAILED,
            {
                "reason": "bearer token unknown, revoked or expired",
                "method": request.method,
                "path": request.path,
                # Enough to tell repeated attempts with one token apart, not to use it.
                "token_sha256_prefix": tokens.digest(token)[:12],
            },
        )
        raise Unauthorized("the bearer token is not valid (unknown, revoked or expired)")
    return principal


def _open(request: web.Request, permission: str) -> Principal:
    """An archive without credentials: loopback clients (and, when allowed, everyone but the
    admin endpoints) act without a token."""
    settings = request.app[AUTH].settings
    if is_loopback(request.remote):
        name = f"admin@{request.remote}" if permission == ADMIN else "anonymous"
        return Principal(name, "open")
    if permission != ADMIN and settings.http.allow_unauthenticated:
        return Principal("anonymous", "open")
    raise Forbidden(
        "this archive has no API tokens yet and serves loopback clients only"
        " (create one with `vna tokens create`"
        + (")" if permission == ADMIN else ", or set [http] allow_unauthenticated = true)")
    )


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False
