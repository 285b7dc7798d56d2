"""The console's pages, one module per area; each has ``add_routes(router)``.

A new area adds its module to ``MODULES`` (and its navigation entry to ``vna.ui.core.NAV``).
"""

from __future__ import annotations

from aiohttp import web

from vna.ui.pages import audit, conflicts, dr, operations, patients, retention, studies, tokens

MODULES = (studies, patients, conflicts, retention, operations, dr, tokens, audit)


def add_routes(router: web.UrlDispatcher) -> None:
    for module in MODULES:
        module.add_routes(router)
