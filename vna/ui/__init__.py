"""The operator web console (``/ui/``): server-rendered pages over the same engine the API
and the command line use.  An adapter beside :mod:`vna.gateway`: it may call the engine
(``vna.admin``, ``vna.security``), the services and the lifecycle engine, and reuses the
gateway's authenticator and error table; nothing imports it but the server.

Security, once for every page (:mod:`vna.ui.app`): sign-in with an API token (or through the
OpenID Connect provider of ``[oidc]``, :mod:`vna.ui.oidc`), a server-side
session (``console_sessions``) in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) that
expires (``[ui] session_minutes``, ``idle_minutes``); the token is resolved again on every
request, so the visitor sees exactly what the token sees through the API (an OIDC user, what
a token of the role and sources their groups map to would see); every POST must
carry the session's CSRF token (403 otherwise); every response has a strict
Content-Security-Policy (no inline script or style), ``X-Frame-Options: DENY`` and
``Cache-Control: no-store``.

How to add a page
-----------------

1. A view in the area's module of ``vna/ui/pages/`` (a new module goes in
   ``pages.MODULES``)::

       @page(admin=True)                       # admin=False: any reader
       async def holds(request, visitor):
           archive = archive_of(request)
           async with archive.db.acquire() as conn:
               rows = await some_engine_function(conn, ...)   # never SQL here
           await audit_view(request, visitor, what="holds", study_uids=[...])  # patient data
           return render(request, "holds.html", title="Legal holds", rows=rows)

       def add_routes(router):
           router.add_get("/holds", holds, name="holds")   # served at /ui/holds
           router.add_post("/holds/set", set_hold, name="hold-set")

2. A template ``vna/ui/templates/holds.html`` that ``{% extends "base.html" %}`` and fills
   ``{% block content %}``; forms are ``method="post"`` and carry
   ``{{ m.csrf_input(csrf_field, csrf) }}`` (``{% import "_macros.html" as m %}``); no inline
   ``<script>``/``style=`` (the CSP refuses them: use classes of ``static/console.css``).
   A POST handler does its work through the engine (which audits it) and answers with a
   redirect (``raise web.HTTPSeeOther(url(request, "holds"))``), so reloading repeats nothing.
3. A navigation entry in :data:`vna.ui.core.NAV` (its ``route`` is the route name; admin-only
   entries are hidden from others, and the ``page`` decorator refuses them with 403 anyway).
4. Long lists: :class:`vna.ui.core.Pager` (``Pager.of(request.query, size)``, fetch
   ``pager.fetch`` rows from ``pager.offset``, ``rows, pager = pager.cut(rows)``) and the
   ``pager_links`` / ``pager_buttons`` macros.
5. Tests: a fast one with aiohttp's client in ``tests/integration/test_console_*.py``
   (``tests/console_support.py``: ``console_site`` serves an archive with two hospitals, an
   admin token and a reader of HOSP1 only; ``signed_in`` and ``page_csrf`` sign in and fetch
   a form's CSRF token), and a browser one with the ``console`` fixture of
   ``tests/acceptance/console_browser.py`` (``await console.page(token)`` opens a signed-in
   page; console errors fail the test; ``shot(name)`` saves a screenshot) where a user's
   path crosses pages.  Confirmation dialogs (``data-confirm`` on a form) are accepted.
"""

from __future__ import annotations

from vna.ui.app import register

__all__ = ["register"]
