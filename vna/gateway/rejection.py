"""``POST /dicom-web/studies/{study}[/series/{series}]/reject/{code}^DCM``: IOCM rejection by
an operator (dcm4chee's endpoint, which OHIF calls when rejection is enabled).

Admins only (:mod:`vna.gateway.auth` asks the admin permission of these routes): rejecting
withdraws images from every reader.  The work is :func:`vna.admin.rejections.reject`, which
stores a Key Object Selection rejection note through the ingest pipeline.
"""

from __future__ import annotations

from aiohttp import web

from vna.admin import rejections
from vna.gateway.auth import principal_of
from vna.gateway.request_context import ARCHIVE


async def reject(request: web.Request) -> web.Response:
    result = await rejections.reject(
        request.app[ARCHIVE],
        request.match_info["study"],
        request.match_info.get("series"),
        request.match_info["code"],
        actor=principal_of(request).name,
        origin=request.remote or "",
    )
    return web.json_response(result)
