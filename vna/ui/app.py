"""The console's sub-application: sessions, CSRF, security headers, error pages, sign-in and
sign-out, and :func:`register`, which mounts it all at ``/ui/`` on the gateway's application.

Sessions live in the catalogue (``console_sessions``, migration 0200), not in a signed
cookie: signing out ends the session everywhere at once, every server process of a
deployment sees it without sharing a key, and the cookie is a random value whose SHA-256 is
all the catalogue keeps.  Each request resolves the session's token again through the API's
:class:`~vna.security.authn.Authenticator`, so a revoked or expired token ends the session, and
what the visitor may see is what that token may see through the API.  A session opened
through single sign-on (:mod:`vna.ui.oidc`) has no token: it keeps the principal the user's
groups mapped to, and ends when OIDC is no longer configured.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from vna.archive import Archive
from vna.catalog import console_sessions
from vna.errors import VnaError
from vna.gateway.auth import AUTH
from vna.gateway.status import http_status
from vna.security.audit import ACCESS_DENIED, AUTHENTICATION_FAILED, AuditTrail
from vna.security.authn import Authenticator
from vna.security.tokens import Principal, digest
from vna.ui import core, oidc
from vna.ui.core import (
    ARCHIVE,
    AUDIT,
    AUTHN,
    CSRF_FIELD,
    ROOT,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Visitor,
    render,
    reset_visitor,
    set_visitor,
    visitor_of,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = Path(__file__).parent / "static"
#: No inline script or style, nothing from another origin, never framed (clickjacking).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def register(app: web.Application, archive: Archive) -> None:
    """Mount the console at ``/ui/`` on the gateway's application and send ``/`` there."""
    from vna.ui import pages  # the page modules; each adds its routes

    console = web.Application(middlewares=[_console])
    console[ARCHIVE] = archive
    # The gateway's authenticator when there is one: one token cache, one revocation.
    console[AUTHN] = app.get(AUTH) or Authenticator(archive.db, archive.settings)
    console[AUDIT] = AuditTrail(archive.db, archive.metrics)
    r = console.router
    r.add_get("/", home, name="home")
    r.add_get("/signin", signin_form, name="signin")
    r.add_post("/signin", signin)
    r.add_post("/signout", signout, name="signout")
    r.add_static("/static", STATIC, name="static")
    pages.add_routes(r)
    oidc.add_routes(console)
    app.add_subapp(ROOT + "/", console)
    app.router.add_get("/", _to_console)
    app.router.add_get(ROOT, _to_console)


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(ROOT + "/")


@web.middleware
async def _console(request: web.Request, handler: Handler) -> web.StreamResponse:
    static = request.path.startswith(ROOT + "/static/")
    token = None
    try:
        if not static:
            token = set_visitor(await _visitor(request))
            if request.method == "POST":
                await _check_csrf(request)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            _secure(exc, static=False)
            raise
        response = _error_page(request, exc.status, exc.reason)
    except VnaError as exc:
        status = http_status(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        response = _error_page(request, status, str(exc))
    finally:
        if token is not None:
            reset_visitor(token)
    _secure(response, static=static)
    return response


def _secure(response: web.StreamResponse, *, static: bool) -> None:
    h = response.headers
    # A view may send a policy of its own, as strict (the stored HTML reports: their one
    # <style> element allowed by its hash, lifecycle.html_pages), never a looser default.
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Frame-Options"] = "DENY"
    h["X-Content-Type-Options"] = "nosniff"
    # Study UIDs are in console paths: never sent on to another site.
    h["Referrer-Policy"] = "no-referrer"
    # Pages may show patient data: never kept by the browser or a proxy.
    h["Cache-Control"] = "private, max-age=3600" if static else "no-store"


def _error_page(request: web.Request, status: int, reason: str) -> web.Response:
    titles = {
        400: "Bad request",
        401: "Not signed in",
        403: "Not allowed",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        503: "Unavailable",
    }
    title = titles.get(status, "Error")
    return render(request, "error.html", status=status, title=title, reason=reason)


# --- sessions -------------------------------------------------------------------------------


def _session_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def _visitor(request: web.Request) -> Visitor | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    archive = request.app[ARCHIVE]
    session_sha256 = _session_digest(cookie)
    async with archive.db.acquire() as conn:
        session = await console_sessions.use_session(
            conn, session_sha256, idle_minutes=archive.settings.ui.idle_minutes
        )
    if session is None:
        return None
    if session.token_sha256 is None:
        # An OIDC user: the principal their groups mapped to at sign-in (migration 0217),
        # while OIDC is still configured.
        if session.role is not None and archive.settings.oidc.enabled:
            mapped = Principal(session.actor, session.role, read_sources=session.read_sources)
            return Visitor(mapped, session_sha256, session.csrf, session.display_name or "")
        async with archive.db.transaction() as conn:
            await console_sessions.close_session(conn, session_sha256, origin=request.remote or "")
        return None
    principal = await request.app[AUTHN].principal_for_digest(session.token_sha256)
    if principal is None:  # the token was revoked or expired since sign-in
        async with archive.db.transaction() as conn:
            await console_sessions.close_session(conn, session_sha256, origin=request.remote or "")
        return None
    return Visitor(principal, session_sha256, session.csrf)


async def _check_csrf(request: web.Request) -> None:
    """Refuse (403) a POST whose form does not carry the session's CSRF token, or on the
    sign-in form, the value of the sign-in cookie."""
    form = await request.post()
    sent = str(form.get(CSRF_FIELD, ""))
    visitor: Visitor | None = visitor_of(request)
    if request.path == ROOT + "/signin":
        expected = request.cookies.get(SIGNIN_COOKIE, "")
    else:
        expected = visitor.csrf if visitor else ""
    if sent and expected and hmac.compare_digest(sent, expected):
        return
    await request.app[AUDIT].security_event(
        visitor.name if visitor else "unknown",
        request.remote or "",
        ACCESS_DENIED,
        {"reason": "console form without a valid CSRF token", "path": request.path},
    )
    raise web.HTTPForbidden(
        reason="The form was not accepted (its security token is missing or out of date)."
        " Reload the page and try again."
    )


def _cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=ROOT + "/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


# --- pages of the framework ---------------------------------------------------------------


async def home(request: web.Request) -> web.StreamResponse:
    visitor: Visitor | None = visitor_of(request)
    if visitor is None:
        raise web.HTTPSeeOther(ROOT + "/signin")
    names = request.app.router.named_resources()
    first = "studies" if visitor.principal.may_read or not visitor.is_admin else "patients"
    if first in names:
        raise web.HTTPSeeOther(core.url(request, first))
    return render(request, "home.html", title="Console")


async def signin_form(request: web.Request) -> web.StreamResponse:
    if visitor_of(request) is not None:
        raise web.HTTPSeeOther(ROOT + "/")
    return await _signin_page(request, status=200, error="")


async def _signin_page(request: web.Request, *, status: int, error: str) -> web.Response:
    value = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    oidc_settings = request.app[ARCHIVE].settings.oidc
    response = render(
        request,
        "signin.html",
        status=status,
        title="Sign in",
        error=error,
        csrf=value,
        ended=request.query.get("ended") == "1",
        # A new archive has no token yet: say how to make the first one.
        no_tokens=not await request.app[AUTHN].enforced(),
        # The single sign-on button, when [oidc] is configured.
        oidc_name=oidc_settings.provider_name if oidc_settings.enabled else "",
    )
    _cookie(response, request, SIGNIN_COOKIE, value, max_age=3600)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    if not token:
        return await _signin_page(request, status=400, error="Paste an API token to sign in.")
    principal = await request.app[AUTHN].principal(token)
    if principal is None:
        await request.app[AUDIT].security_event(
            "unknown",
            request.remote or "",
            AUTHENTICATION_FAILED,
            {
                "reason": "console sign-in with a token unknown, revoked or expired",
                "path": request.path,
                "token_sha256_prefix": digest(token)[:12],
            },
        )
        return await _signin_page(
            request, status=401, error="This token is not valid (unknown, revoked or expired)."
        )
    if not (principal.may_read or principal.role == "admin"):
        return await _signin_page(
            request,
            status=403,
            error=f"Token {principal.name!r} may neither read studies nor administer the archive.",
        )
    archive = request.app[ARCHIVE]
    ui = archive.settings.ui
    session = secrets.token_urlsafe(32)
    async with archive.db.transaction() as conn:
        await console_sessions.open_session(
            conn,
            session_sha256=_session_digest(session),
            token_sha256=digest(token),
            actor=principal.name,
            csrf=secrets.token_urlsafe(32),
            origin=request.remote or "",
            lifetime_minutes=ui.session_minutes,
            idle_minutes=ui.idle_minutes,
        )
    response = web.HTTPSeeOther(ROOT + "/")
    _cookie(response, request, SESSION_COOKIE, session, max_age=ui.session_minutes * 60)
    response.del_cookie(SIGNIN_COOKIE, path=ROOT + "/")
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    visitor: Visitor | None = visitor_of(request)
    if visitor is not None:
        async with request.app[ARCHIVE].db.transaction() as conn:
            await console_sessions.close_session(
                conn, visitor.session_sha256, origin=request.remote or ""
            )
    response = web.HTTPSeeOther(ROOT + "/signin?ended=1")
    response.del_cookie(SESSION_COOKIE, path=ROOT + "/")
    raise response
