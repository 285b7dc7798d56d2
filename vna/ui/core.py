"""What every console page shares: who is signed in, the page decorator that enforces roles,
rendering with the base layout, the CSRF token, the audit of page views, pagination links.

A view is ``async def view(request, visitor) -> web.StreamResponse`` decorated with
:func:`page` (see :mod:`vna.ui` for the whole recipe).  The console middleware
(:mod:`vna.ui.app`) has already resolved the session and refused any POST without the
session's CSRF token before a view runs.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from lifecycle.html_pages import templates
from vna.archive import Archive
from vna.errors import Forbidden
from vna.security.audit import ACCESS_DENIED, QUERY, Access, AuditTrail, query_text
from vna.security.authn import Authenticator
from vna.security.tokens import Principal

#: The console's application keys (a sub-application of the gateway's, mounted at /ui/).
ARCHIVE: web.AppKey[Archive] = web.AppKey("ui_archive", Archive)
AUTHN: web.AppKey[Authenticator] = web.AppKey("ui_authn", Authenticator)
AUDIT: web.AppKey[AuditTrail] = web.AppKey("ui_audit", AuditTrail)
#: The signed-in visitor of the request being handled (None: nobody), set by the console
#: middleware; a context variable because aiohttp runs each request in its own task (as
#: vna.gateway.auth keeps the principal).
_VISITOR: contextvars.ContextVar[Visitor | None] = contextvars.ContextVar(
    "vna_ui_visitor", default=None
)

ROOT = "/ui"
SESSION_COOKIE = "vna_console"
#: A random value the sign-in form must echo (CSRF before any session exists).
SIGNIN_COOKIE = "vna_console_signin"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Visitor:
    """A signed-in console user: the principal their token stands for, as the API sees it,
    or the one their OIDC groups map to (vna.ui.oidc), with the same rules."""

    principal: Principal
    session_sha256: str
    csrf: str
    #: The name shown on pages (an OIDC user's name claim); empty: the principal's name.
    shown_name: str = ""

    @property
    def name(self) -> str:
        """The name the audit trail records (the token's name, ``oidc:<subject>``)."""
        return self.principal.name

    @property
    def display_name(self) -> str:
        return self.shown_name or self.principal.name

    @property
    def is_admin(self) -> bool:
        return self.principal.role == "admin"

    @property
    def readable_sources(self) -> tuple[str, ...] | None:
        return self.principal.readable_sources


@dataclass(frozen=True)
class NavItem:
    label: str
    #: The name of the console route it links to; items whose route is not registered (a page
    #: not built yet) are left out, so the navigation never links to a 404.
    route: str
    admin: bool


#: The navigation, in order.  A new page adds its entry here (see vna.ui).
NAV: tuple[NavItem, ...] = (
    NavItem("Studies", "studies", admin=False),
    NavItem("Patients", "patients", admin=True),
    NavItem("Conflicts", "conflicts", admin=True),
    NavItem("Retention", "retention", admin=True),
    NavItem("Holds", "holds", admin=True),
    NavItem("Operations", "operations", admin=True),
    NavItem("DR", "dr", admin=True),
    NavItem("Tokens", "tokens", admin=True),
    NavItem("Audit", "audit", admin=True),
)


def visitor_of(request: web.Request) -> Visitor | None:
    """The signed-in visitor of ``request``; None when nobody is signed in."""
    return _VISITOR.get()


def set_visitor(visitor: Visitor | None) -> contextvars.Token[Visitor | None]:
    return _VISITOR.set(visitor)


def reset_visitor(token: contextvars.Token[Visitor | None]) -> None:
    _VISITOR.reset(token)


View = Callable[[web.Request, Visitor], Awaitable[web.StreamResponse]]


def page(*, admin: bool = False) -> Callable[[View], Callable[[web.Request], Any]]:
    """Make ``view`` a console page: signed-in visitors only (others go to the sign-in page),
    admins only when ``admin`` (others get 403, audited as the API audits a refusal), readers
    of at least one source otherwise."""

    def wrap(view: View) -> Callable[[web.Request], Any]:
        @functools.wraps(view)
        async def handler(request: web.Request) -> web.StreamResponse:
            visitor = visitor_of(request)
            if visitor is None:
                raise web.HTTPSeeOther(f"{ROOT}/signin")
            allowed = visitor.is_admin if admin else visitor.principal.may_read
            if not allowed:
                need = "administer" if admin else "read"
                # An OIDC user is named by subject (oidc:...), a token by its name.
                kind = "user" if visitor.shown_name else "token"
                reason = f"{kind} {visitor.name!r} (role {visitor.principal.role}) may not {need}"
                await request.app[AUDIT].security_event(
                    visitor.name,
                    request.remote or "",
                    ACCESS_DENIED,
                    {"reason": reason, "method": request.method, "path": request.path},
                )
                raise Forbidden(reason)
            return await view(request, visitor)

        handler.console_admin = admin  # type: ignore[attr-defined]
        return handler

    return wrap


def archive_of(request: web.Request) -> Archive:
    return request.app[ARCHIVE]


@cache
def environment() -> jinja2.Environment:
    return templates("vna.ui")


def nav_for(request: web.Request, visitor: Visitor | None) -> list[dict[str, Any]]:
    if visitor is None:
        return []
    names = request.app.router.named_resources()
    return [
        {
            "label": item.label,
            "url": str(names[item.route].url_for()),
            "current": request.match_info.route.name == item.route
            or request.path.startswith(str(names[item.route].url_for()) + "/"),
        }
        for item in NAV
        if item.route in names and (visitor.is_admin or not item.admin)
    ]


def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    title: str = "",
    **context: Any,
) -> web.Response:
    """A page from ``templates/<template>`` (which extends ``base.html``) with the layout's
    context: the visitor, the navigation, the CSRF token for forms, the page title."""
    visitor: Visitor | None = visitor_of(request)
    # The sign-in page passes its pre-session CSRF value; every other page the session's.
    csrf = context.pop("csrf", "")
    html = (
        environment()
        .get_template(template)
        .render(
            visitor=visitor,
            nav=nav_for(request, visitor),
            csrf=visitor.csrf if visitor else csrf,
            csrf_field=CSRF_FIELD,
            title=title,
            root=ROOT,
            **context,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def url(request: web.Request, route: str, **parts: str) -> str:
    """The path of a named console route (``url(request, "study", study=uid)``)."""
    return str(request.app.router[route].url_for(**parts))


async def audit_view(
    request: web.Request,
    visitor: Visitor,
    *,
    what: str,
    study_uids: Sequence[str] = (),
    patients: Sequence[tuple[str, str]] = (),
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Audit a page that shows patient data, like a QIDO-RS query, before it is sent: no row,
    no page (AuditUnavailable, 503).  ``what`` names the page (``study-search``, ``study``)."""
    await request.app[AUDIT].record(
        Access(
            actor=visitor.name,
            origin=request.remote or "",
            action=QUERY,
            study_uids=list(study_uids),
            patients=list(patients),
            detail={
                "protocol": "console",
                "page": what,
                "path": request.path,
                **({"query": query_text(request.query_string)} if request.query_string else {}),
                **(detail or {}),
            },
        )
    )


# --- pagination -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """One page of a long list: ask the catalogue for ``fetch`` rows from ``offset``; the
    extra row, when it comes back, says there is a next page (no count query)."""

    number: int
    size: int
    has_next: bool = False

    @classmethod
    def of(cls, params: Mapping[str, str], size: int) -> Pager:
        try:
            number = int(params.get("page", "1"))
        except ValueError:
            number = 1
        return cls(max(1, min(number, 1_000_000)), size)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def fetch(self) -> int:
        return self.size + 1

    def cut(self, rows: Sequence[Any]) -> tuple[list[Any], Pager]:
        """The rows to show and this pager knowing whether a next page exists."""
        return list(rows[: self.size]), Pager(self.number, self.size, len(rows) > self.size)

    def links(self, params: Iterable[tuple[str, str]]) -> dict[str, str | None]:
        """Query strings of the previous and next page, keeping the other parameters."""
        kept = [(k, v) for k, v in params if k != "page"]
        prev = urlencode([*kept, ("page", str(self.number - 1))]) if self.number > 1 else None
        nxt = urlencode([*kept, ("page", str(self.number + 1))]) if self.has_next else None
        return {"prev": prev, "next": nxt}
