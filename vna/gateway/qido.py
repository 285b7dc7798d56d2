"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Thin: parameters are parsed by the pure vna.dicom.qido_params module and the catalogue answers; this
module adds the RetrieveURL of each match.  ``includelinked=true`` (a vendor extension, see
vna.dicom.qido_params) follows patient links.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from vna.catalog.search import search_page
from vna.dicom.qido_params import parse_qido
from vna.gateway.auth import AUDIT, principal_of
from vna.gateway.media import DICOM_JSON, accepts_json, parse_accept
from vna.gateway.request_context import ARCHIVE, base_url, caller_source
from vna.security.audit import QUERY, Access, query_text
from vna.security.query_scope import query_patient_scope


async def search_studies(request: web.Request) -> web.Response:
    return await _search(request, "study")


async def search_series(request: web.Request) -> web.Response:
    return await _search(request, "series")


async def search_instances(request: web.Request) -> web.Response:
    return await _search(request, "instance")


async def _search(request: web.Request, level: str) -> web.Response:
    archive = request.app[ARCHIVE]
    if not accepts_json(parse_accept(request.headers.get("Accept"))):
        raise web.HTTPNotAcceptable(text=f"search results are served as {DICOM_JSON} only\n")
    query = parse_qido(
        level,
        list(request.query.items()),
        study_uid=request.match_info.get("study"),
        series_uid=request.match_info.get("series"),
    )
    principal = principal_of(request)
    async with archive.db.acquire() as conn:
        page = await search_page(
            conn,
            query,
            max_results=archive.settings.query.max_results,
            default_limit=archive.settings.query.default_limit,
            sources=principal.readable_sources,
            offline_tiers=archive.store.offline_tiers,
            # A source token is answered within its patients (its [[sources]] query_scope).
            scope=query_patient_scope(caller_source(request), query),
        )
    # Audited before anything is answered (PS3.15 A.5.3.10 Query), naming every study the
    # answer discloses; no audit row, no answer.
    await request.app[AUDIT].record(
        Access(
            actor=principal.name,
            origin=request.remote or "",
            action=QUERY,
            study_uids=[_first(match, "0020000D") for match in page.results],
            detail={
                "protocol": "qido-rs",
                "level": level,
                "path": request.path,
                "query": query_text(request.query_string),
                "matches": len(page.results),
            },
        )
    )
    root = base_url(request)
    for match in page.results:
        match.setdefault("00081190", {"vr": "UR", "Value": [_retrieve_url(root, level, match)]})
    response = web.Response(body=json.dumps(page.results).encode(), content_type=DICOM_JSON)
    # PS3.18 8.3.4.4: tell the client when results were cut or fuzzy matching not applied.
    if page.more:
        response.headers.add(
            "Warning", '299 vna "There are more results: repeat the query with an offset"'
        )
    if query.fuzzy_matching_requested:
        response.headers.add("Warning", '299 vna "The fuzzymatching parameter is not supported"')
    return response


def _first(match: dict[str, Any], tag: str) -> str:
    return str(match.get(tag, {}).get("Value", [""])[0])


def _retrieve_url(root: str, level: str, match: dict[str, Any]) -> str:
    def uid(tag: str) -> str:
        return str(match.get(tag, {}).get("Value", [""])[0])

    url = f"{root}/studies/{uid('0020000D')}"
    if level in ("series", "instance"):
        url += f"/series/{uid('0020000E')}"
    if level == "instance":
        url += f"/instances/{uid('00080018')}"
    return url
