"""CORS for viewers served from another origin (``[http] cors_origins``; none by default).

A zero-footprint viewer (OHIF) on ``https://viewer.example.org`` calls the archive's
DICOMweb and WADO-URI routes from the browser.  The browser first sends a preflight
``OPTIONS`` (Fetch standard, CORS protocol) without credentials, so it is answered here,
before authentication; the real requests then carry ``Authorization``, which the preflight
allows.  Answers to an allowed origin, errors included (a viewer must be able to read a 401
or a 503 with Retry-After), name it in ``Access-Control-Allow-Origin``; other origins get
no CORS headers, and the browser keeps the answer from the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from vna.gateway.request_context import ARCHIVE, PREFIX

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths a browser may call cross-origin: DICOMweb and WADO-URI, not /admin or /metrics.
_PATHS = (PREFIX + "/", "/wado")
_METHODS = "GET, HEAD, POST, OPTIONS"
#: Request headers a viewer sends (Authorization for tokens, Range for bulk data).
_ALLOWED_HEADERS = ("authorization", "accept", "content-type", "range", "cache-control")
#: Response headers a viewer's script may read.
_EXPOSED = (
    "Content-Type, Content-Length, Content-Range, Content-Location, Accept-Ranges,"
    " Retry-After, Warning, WWW-Authenticate"
)
_MAX_AGE = "600"


def _allowed(request: web.Request) -> str | None:
    """The request's Origin when the configuration allows it on this path."""
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(_PATHS):
        return None
    origins = request.app[ARCHIVE].settings.http.cors_origins
    return origin if "*" in origins or origin in origins else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = _allowed(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if origin is None:
            raise web.HTTPForbidden(text="origin not allowed: see [http] cors_origins\n")
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers = [h.strip().lower() for h in asked.split(",") if h.strip()]
        refused = [h for h in headers if h not in _ALLOWED_HEADERS]
        if refused:
            raise web.HTTPForbidden(text=f"request header(s) not allowed: {', '.join(refused)}\n")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _METHODS,
                "Access-Control-Allow-Headers": ", ".join(_ALLOWED_HEADERS),
                "Access-Control-Max-Age": _MAX_AGE,
                "Vary": "Origin",
            },
        )
    return await handler(request)


async def mark_response(request: web.Request, response: web.StreamResponse) -> None:
    """Name the allowed origin on every answer as it is prepared (aiohttp's
    on_response_prepare): streamed answers and errors alike."""
    origin = _allowed(request)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = _EXPOSED
    response.headers["Vary"] = "Origin"


def register(app: web.Application) -> None:
    """Answer preflights before authentication; mark answers to allowed origins."""
    app.middlewares.insert(0, cors)
    app.on_response_prepare.append(mark_response)
