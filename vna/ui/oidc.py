"""Console sign-in through the OpenID Connect provider of ``[oidc]``: ``/ui/oidc/start`` sends
the browser to the provider, ``/ui/oidc/callback`` takes it back, checks it and opens a console
session like a token sign-in does (same cookie, CSRF, lifetimes, sign-out).  Without
``[oidc] issuer`` neither route exists (404) and the sign-in page shows no button.

The protocol (discovery, PKCE, token exchange, ID token checks) is
:mod:`vna.security.oidc`'s, the groups-to-role rule :mod:`vna.security.oidc_roles`'s; the
user becomes the same :class:`~vna.security.tokens.Principal` an API token gives, so every
page applies the same rules.  Every sign-in, refusal and sign-out is audited, naming the
subject (actor ``oidc:<sub>``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from vna.catalog import console_sessions
from vna.errors import IdentityProviderUnavailable, SignInRefused
from vna.security.audit import ACCESS_DENIED, AUTHENTICATION_FAILED
from vna.security.oidc import Identity, OidcClient
from vna.security.oidc_roles import claim_values, display_name, grant_for
from vna.ui.core import (
    ARCHIVE,
    AUDIT,
    ROOT,
    SESSION_COOKIE,
    render,
    visitor_of,
)

OIDC: web.AppKey[OidcClient] = web.AppKey("ui_oidc", OidcClient)
#: The browser that started a sign-in (a random value; the catalogue keeps its digest).
START_COOKIE = "vna_console_oidc"
CALLBACK_PATH = "/oidc/callback"
#: Seconds a user has at the provider before the sign-in must be started again.
PENDING_SECONDS = 600


def add_routes(console: web.Application) -> None:
    """The OIDC routes, when ``[oidc] issuer`` is set; none otherwise (404)."""
    settings = console[ARCHIVE].settings.oidc
    if not settings.enabled:
        return
    client = OidcClient(settings)
    console[OIDC] = client

    async def close(_: web.Application) -> None:
        await client.close()

    console.on_cleanup.append(close)
    console.router.add_get("/oidc/start", start, name="oidc-start")
    console.router.add_get(CALLBACK_PATH, callback, name="oidc-callback")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _redirect_url(request: web.Request) -> str:
    configured = request.app[ARCHIVE].settings.oidc.redirect_url
    # Behind a proxy that terminates TLS the request's scheme is http: set redirect_url then.
    return configured or f"{request.scheme}://{request.host}{ROOT}{CALLBACK_PATH}"


async def start(request: web.Request) -> web.StreamResponse:
    if visitor_of(request) is not None:
        raise web.HTTPSeeOther(ROOT + "/")
    redirect_url = _redirect_url(request)
    authorization = await request.app[OIDC].authorization(redirect_url)
    browser = secrets.token_urlsafe(32)
    archive = request.app[ARCHIVE]
    async with archive.db.transaction() as conn:
        await console_sessions.begin_oidc_sign_in(
            conn,
            state_sha256=_digest(authorization.state),
            browser_sha256=_digest(browser),
            nonce=authorization.nonce,
            code_verifier=authorization.code_verifier,
            redirect_url=redirect_url,
            lifetime_seconds=PENDING_SECONDS,
        )
    response = web.HTTPFound(authorization.url)
    # SameSite=Lax, not Strict: the callback is a navigation the provider's site starts, and
    # a Strict cookie would not come with it.  Lax still keeps it off cross-site POSTs and
    # sub-requests; it is good for one sign-in only.
    response.set_cookie(
        START_COOKIE,
        browser,
        max_age=PENDING_SECONDS,
        path=ROOT + "/oidc/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    raise response


async def callback(request: web.Request) -> web.StreamResponse:
    identity: Identity | None = None
    try:
        identity = await _identity(request)
    except SignInRefused as exc:
        # No subject: nothing the provider signed could be trusted.
        await request.app[AUDIT].security_event(
            "unknown",
            request.remote or "",
            AUTHENTICATION_FAILED,
            {"reason": f"console OIDC sign-in refused: {exc}", "method": "oidc"},
        )
        return _refused(request, 401, f"Sign-in refused: {exc}.")
    except IdentityProviderUnavailable as exc:
        await request.app[AUDIT].security_event(
            "unknown",
            request.remote or "",
            AUTHENTICATION_FAILED,
            {"reason": f"console OIDC sign-in failed: {exc}", "method": "oidc"},
        )
        raise  # the console's error page: 503, try again later
    settings = request.app[ARCHIVE].settings.oidc
    actor = f"oidc:{identity.subject}"
    name = display_name(identity.claims, settings.name_claim)
    values = claim_values(identity.claims, settings.roles_claim)
    grant = grant_for(values, settings.groups)
    who = {"subject": identity.subject, "issuer": identity.issuer, "name": name}
    if grant is None:
        await request.app[AUDIT].security_event(
            actor,
            request.remote or "",
            ACCESS_DENIED,
            {
                "reason": f"console OIDC sign-in: no [[oidc.groups]] matches the"
                f" {settings.roles_claim!r} claim",
                "method": "oidc",
                settings.roles_claim: list(values),
                **who,
            },
        )
        return _refused(
            request,
            403,
            f"{name} signed in at {settings.provider_name}, but is in no group this archive"
            " gives a console role to. Ask the archive's administrators to add you to a"
            " group that is granted access.",
        )
    archive = request.app[ARCHIVE]
    ui = archive.settings.ui
    session = secrets.token_urlsafe(32)
    async with archive.db.transaction() as conn:
        await console_sessions.open_oidc_session(
            conn,
            session_sha256=_digest(session),
            actor=actor,
            csrf=secrets.token_urlsafe(32),
            origin=request.remote or "",
            lifetime_minutes=ui.session_minutes,
            idle_minutes=ui.idle_minutes,
            issuer=identity.issuer,
            subject=identity.subject,
            display_name=name,
            role=grant.role,
            read_sources=grant.read_sources,
            detail={
                **who,
                "role": grant.role,
                "groups": list(grant.groups),
                **({"read_sources": list(grant.read_sources)} if grant.read_sources else {}),
            },
        )
    # A page that moves on to the console rather than a redirect: the session cookie is
    # SameSite=Strict, and a browser does not send it on a redirect chain the provider's site
    # started; the next navigation, started from this page (same site), carries it.
    response = render(request, "signed_in.html", title="Signed in", name=name)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=ui.session_minutes * 60,
        path=ROOT + "/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    response.del_cookie(START_COOKIE, path=ROOT + "/oidc/")
    return response


async def _identity(request: web.Request) -> Identity:
    """The identity the callback proves, or SignInRefused with the reason."""
    query = request.query
    state = query.get("state", "")
    pending = None
    if state:
        async with request.app[ARCHIVE].db.transaction() as conn:
            pending = await console_sessions.take_oidc_sign_in(conn, _digest(state))
    if pending is None:
        raise SignInRefused("this sign-in is unknown or was already completed; start again")
    if not pending.live:
        raise SignInRefused("the sign-in took too long; start again")
    browser = request.cookies.get(START_COOKIE, "")
    if not browser or not hmac.compare_digest(_digest(browser), pending.browser_sha256):
        raise SignInRefused("the sign-in was started in another browser; start again")
    if "error" in query:
        described = query.get("error_description", "")
        raise SignInRefused(
            f"the provider did not sign you in ({query['error']}"
            + (f": {described}" if described else "")
            + ")"
        )
    code = query.get("code", "")
    if not code:
        raise SignInRefused("the provider sent no authorization code")
    return await request.app[OIDC].sign_in(
        code=code,
        code_verifier=pending.code_verifier,
        redirect_url=pending.redirect_url,
        nonce=pending.nonce,
    )


def _refused(request: web.Request, status: int, reason: str) -> web.Response:
    response = render(
        request, "signin_refused.html", status=status, title="Sign-in refused", reason=reason
    )
    response.del_cookie(START_COOKIE, path=ROOT + "/oidc/")
    return response
