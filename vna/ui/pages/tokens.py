"""API tokens: the list, create (the secret shown once, on the answer to the form, never
again), revoke: ``vna tokens`` in the browser, through the same functions
(``vna.security.tokens``), audited in the name of the signed-in token."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from vna.config import DEFAULT_SOURCE
from vna.errors import InvalidRequest
from vna.security import tokens
from vna.ui.core import AUTHN, Visitor, archive_of, page, render, url


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/tokens", tokens_page, name="tokens")
    router.add_post("/tokens", token_create, name="token-create")
    router.add_post("/tokens/revoke", token_revoke, name="token-revoke")


def _sources(request: web.Request) -> list[str]:
    return [s.name for s in archive_of(request).settings.sources] + [DEFAULT_SOURCE.name]


async def _page(
    request: web.Request,
    *,
    created: tokens.NewToken | None = None,
    notice: str = "",
    status: int = 200,
) -> web.Response:
    include_revoked = request.query.get("all") == "1"
    async with archive_of(request).db.acquire() as conn:
        rows = await tokens.list_tokens(conn, include_revoked=include_revoked)
    return render(
        request,
        "tokens.html",
        status=status,
        title="API tokens",
        rows=rows,
        include_revoked=include_revoked,
        roles=tokens.ROLES,
        sources=_sources(request),
        created=created,
        notice=notice,
    )


@page(admin=True)
async def tokens_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    revoked = request.query.get("revoked") == "1"
    return await _page(request, notice="Token revoked." if revoked else "")


@page(admin=True)
async def token_create(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Create the token and show its secret in this answer only (the page is not cached:
    Cache-Control no-store); a reload re-posts and is refused, the name being taken."""
    form = await request.post()
    name = str(form.get("name", "")).strip()
    role = str(form.get("role", ""))
    source = str(form.get("source", "")).strip() or None
    restricted = form.get("restrict") == "1"
    read_sources = [str(v) for v in form.getall("read_sources", [])] if restricted else None
    if restricted and not read_sources:
        raise InvalidRequest("tick the sources the token may read (or do not restrict it)")
    tokens.check_token_request(name, role, source, read_sources, _sources(request))
    days_text = str(form.get("expires_days", "")).strip()
    expires = None
    if days_text:
        if not days_text.isdigit() or int(days_text) <= 0:
            raise InvalidRequest("expiry must be a positive number of days")
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=int(days_text))
    async with archive_of(request).db.transaction() as conn:
        new = await tokens.create_token(
            conn,
            name=name,
            role=role,
            actor=visitor.name,
            source=source,
            read_sources=read_sources,
            expires_at=expires,
            origin=request.remote or "",
        )
    return await _page(request, created=new)


@page(admin=True)
async def token_revoke(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    form = await request.post()
    name = str(form.get("name", "")).strip()
    async with archive_of(request).db.transaction() as conn:
        await tokens.revoke_token(conn, name, actor=visitor.name, origin=request.remote or "")
    # At once in this process (the API's and the console's token cache is this one); other
    # processes within http.token_cache_seconds.
    request.app[AUTHN].forget()
    raise web.HTTPSeeOther(url(request, "tokens") + "?revoked=1")
